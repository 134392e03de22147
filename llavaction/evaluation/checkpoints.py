"""One loaded checkpoint for evaluation, the exports and prediction, and the settings its training asked (the
checkpoint format itself is evaluation.checkpoint_format's).

`LoadedCheckpoint` reads a training checkpoint (`.ckpt`) or a model folder (or hub id) once, with its tokenizer, the
prompt settings and frame count it was trained with, and its precision, and builds the answering module and the
DataModule through the same links as train.py. A Lightning checkpoint written by this version carries its
architecture (hyperparameters) and its tokenizer's files, so it evaluates from any working directory and after its run
folder is moved; one written before is rebuilt from its hyperparameters, whose relative paths hold from the folder it
was trained in.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from llavaction.data.options import LoaderOptions, PriorActionOptions
from llavaction.evaluation.checkpoint_format import (
    TOKENIZER_FILES,
    TRAINED_PRECISION,
    CheckpointError,
    is_model_folder,
    is_sharded_training_checkpoint,
    precision_of_folder,
    read_lightning,
)
from llavaction.evaluation.options import EvaluationOptions, QuestionOptions
from llavaction.model.families import DEFAULT_BACKBONE
from llavaction.model.options import ActionSupervision, ComputeOptions
from llavaction.prompts.wording import PromptOptions
from llavaction.utils.checks import as_options
from llavaction.utils.hub import resolve


@dataclass(frozen=True)
class TrainedSettings:
    """What a checkpoint's training asked and ran at; None where the checkpoint does not say."""

    time_instruction: bool | None = None
    frame_times: bool | None = None
    num_frames: int | None = None
    precision: str | None = None


@dataclass(frozen=True)
class QuestionSettings:
    """How the questions are asked, resolved from what was given and what the checkpoint was trained with: frames
    shown, time instruction, per-frame times. Evaluation, prediction, the exports, `prompts render` and validation
    all ask through one of these."""

    num_frames: int
    time_instruction: bool
    frame_times: bool

    @property
    def prompt(self) -> PromptOptions:
        return PromptOptions(time_instruction=self.time_instruction, frame_times=self.frame_times)


class LoadedCheckpoint:
    """A checkpoint read once. `settings` is what its training asked; `module()` is the LightningModule with its
    weights, built on first use from what was read (a Lightning checkpoint is never loaded twice)."""

    def __init__(
        self,
        source: str,
        settings: TrainedSettings,
        init_args: dict,
        state_dict: dict | None,
        tokenizer: str,
        keep: tempfile.TemporaryDirectory | None = None,
    ):
        self.source, self.settings, self.tokenizer = source, settings, tokenizer
        self._init_args, self._state_dict, self._keep = init_args, state_dict, keep
        self._module = None

    @classmethod
    def open(cls, checkpoint: str | Path, tokenizer: str | None = None) -> LoadedCheckpoint:
        """Read a checkpoint's metadata (and a Lightning checkpoint's weights, memory-mapped); `tokenizer` replaces
        the one it carries."""
        checkpoint = str(checkpoint)
        if is_model_folder(checkpoint):
            return cls._open_folder(checkpoint, tokenizer)
        path = Path(checkpoint)
        if is_sharded_training_checkpoint(path):
            raise CheckpointError(
                f"{checkpoint}: a sharded (distributed) training checkpoint; evaluate the run's export "
                "(model.export_dir) or a single-file .ckpt"
            )
        if path.is_dir():
            raise CheckpointError(
                f"{checkpoint}: a folder without config.json: neither a model folder (config.json + safetensors) nor a "
                "training checkpoint"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"{checkpoint}: neither a Lightning checkpoint file, a checkpoint directory with config.json, nor a "
                "model-hub id"
            )
        return cls._open_lightning(path, tokenizer)

    @classmethod
    def _open_folder(cls, checkpoint: str, tokenizer: str | None) -> LoadedCheckpoint:
        from llavaction.model.architecture import checkpoint_config
        from llavaction.model.family import REGISTRY

        directory = resolve(checkpoint)
        config = checkpoint_config(directory)
        family = REGISTRY.of_checkpoint(config, str(directory / "config.json"))
        architecture = family.read_checkpoint(directory, config, checkpoint)
        settings = TrainedSettings(
            time_instruction=bool(config.get("add_time_instruction", False)),
            frame_times=False,
            precision=precision_of_folder(config),
        )
        init = {"backbone": family.name, "checkpoint": str(directory), "architecture": asdict(architecture)}
        return cls(checkpoint, settings, init, None, tokenizer or str(directory))

    @classmethod
    def _open_lightning(cls, path: Path, tokenizer: str | None) -> LoadedCheckpoint:
        state = read_lightning(path)
        init = {k: v for k, v in state["hyper_parameters"].items() if not k.startswith("_")}
        data = state.get("datamodule_hyper_parameters") or {}
        prompt = data.get("prompt")
        prompt = prompt if isinstance(prompt, dict) else vars(prompt) if prompt is not None else {}
        settings = TrainedSettings(
            time_instruction=prompt.get("time_instruction"),
            frame_times=prompt.get("frame_times"),
            num_frames=data.get("num_frames"),
            precision=state.get(TRAINED_PRECISION),
        )
        keep = None
        if tokenizer is None and state.get(TOKENIZER_FILES):
            keep = tempfile.TemporaryDirectory(prefix="llavaction-tokenizer-")
            for name, content in state[TOKENIZER_FILES].items():
                (Path(keep.name) / name).write_bytes(content)
            tokenizer = keep.name
        if init.get("architecture") is not None:  # the weights are all in the state dict
            init["checkpoint"] = None
        tokenizer = tokenizer or init.get("tokenizer") or init.get("checkpoint")
        return cls(str(path), settings, init, state["state_dict"], tokenizer, keep)

    @property
    def model_settings(self):
        """The model as training set it up (llavaction.model.architecture.ModelSettings): a checkpoint written before
        family options existed names its family's settings on their own."""
        from llavaction.model.architecture import ModelSettings
        from llavaction.model.family import REGISTRY

        args = self._init_args
        options = dict(args.get("family_options") or {})
        options |= {k: args[k] for k in REGISTRY.get(self.backbone).options if args.get(k) is not None}
        return ModelSettings(
            backbone=self.backbone,
            preset_name=args.get("preset_name", "tiny"),
            checkpoint=args.get("checkpoint"),
            architecture=args.get("architecture"),
            compute=as_options(ComputeOptions, args.get("compute") or ComputeOptions()),
            action=as_options(ActionSupervision, args.get("action") or ActionSupervision()),
            family_options=options or None,
        )

    @property
    def recorded(self) -> dict:
        """The model arguments its training recorded (a model folder: its family, folder and architecture)."""
        return dict(self._init_args)

    def weights(self) -> dict | None:
        """A Lightning checkpoint's model weights by the model's own parameter names (memory-mapped); None for a
        model folder, whose weights its family loads."""
        if self._state_dict is None:
            return None
        return {k.removeprefix("model."): v for k, v in self._state_dict.items() if k.startswith("model.")}

    @property
    def backbone(self) -> str:
        """The model family the checkpoint holds."""
        architecture = self._init_args.get("architecture") or {}
        return self._init_args.get("backbone") or architecture.get("backbone") or DEFAULT_BACKBONE

    @property
    def precision(self) -> str:
        """The precision its weights were trained (or are stored) at; 32-true when it does not say."""
        return self.settings.precision or "32-true"

    def module(self, evaluation: EvaluationOptions | None = None):
        """The answering module (evaluation.module.MQAModule) with the checkpoint's weights, built on first use;
        from then on it answers by the evaluation options given (None: as it answers already)."""
        from safetensors import SafetensorError
        from transformers.initialization import no_init_weights

        from llavaction.evaluation.module import MQAModule
        from llavaction.model.architecture import resolve_architecture

        if self._init_args.get("reasoning"):  # the GRPO stage's reasoning format: its prompts and its answers' reading
            raise CheckpointError(
                f"{self.source}: trained to reason in <think> </think> before answering (model.reasoning), which this "
                "command does not ask for: validate it with `train.py validate --config <its config> --ckpt_path ...`"
            )
        if self._module is None:
            settings = self.model_settings
            config = resolve_architecture(settings)
            weights = None if self._state_dict is not None else settings.checkpoint
            module = MQAModule(
                settings.family,
                config,
                self.tokenizer,
                evaluation or EvaluationOptions(),
                weights=weights,
                recorded_format=self._init_args.get("video_format"),
            )
            try:
                if self._state_dict is None:
                    module.configure_model()
                else:
                    with no_init_weights():  # every weight comes from the state dict
                        module.configure_model()
                    module.load_state_dict(self._state_dict)
            except SafetensorError as err:  # a weights file cut short (a full disk, an interrupted copy)
                raise CheckpointError(f"{self.source}: its weights cannot be read ({err})") from None
            self._state_dict = None
            self._module = module
        elif evaluation is not None and self._module.evaluation != evaluation:
            self._module.set_evaluation(evaluation)
        return self._module

    def question_settings(self, asked: QuestionOptions, stored_frames: int | None = None) -> QuestionSettings:
        """How to ask the questions: each value given wins, the others follow the checkpoint's training; the frames
        no more than the shards hold (`stored_frames`; all of them where the checkpoint does not say)."""
        return question_settings(self.settings, asked, stored_frames)

    def datamodule(
        self,
        test: list[str],
        settings: QuestionSettings,
        loader: LoaderOptions,
        prior_actions: PriorActionOptions = PriorActionOptions(),
        questions: dict[str, list[dict]] | None = None,
        **links,
    ):
        """The evaluation DataModule, linked to the model as train.py links them (evaluation.module.DATA_LINKS);
        questions: {file: records} asked over the test sets, read and checked against them by the caller; links:
        values replacing the linked ones (a serving engine's tokenizer and format)."""
        from llavaction.data.datamodule import EpicDataModule
        from llavaction.evaluation.module import DATA_LINKS

        module = self.module()
        linked = {name: getattr(module, attribute) for attribute, name in DATA_LINKS}
        data = EpicDataModule(
            test=list(test),
            questions=list(questions or []),
            num_frames=settings.num_frames,
            prompt=settings.prompt,
            prior_actions=prior_actions,
            loader=loader,
            **(linked | links),
        )
        if questions:
            data.ask(questions)
        return data


# frames asked of a checkpoint that does not say how many it was trained on, when no shards say how many they hold:
# the published LLaVA-Video and LLaVAction checkpoints were trained at 64 frames
PUBLISHED_FRAMES = 64


def question_settings(
    trained: TrainedSettings, asked: QuestionOptions, stored_frames: int | None = None
) -> QuestionSettings:
    """Each value given wins; the others follow the training settings (none: off); the frames as trained, or all the
    shards hold where training does not say (PUBLISHED_FRAMES without shards). Shards holding fewer frames than the
    checkpoint trained on are refused unless fewer are asked for on purpose (--num-frames)."""
    num_frames = asked.num_frames
    if num_frames is None:
        num_frames = trained.num_frames or stored_frames or PUBLISHED_FRAMES
        if stored_frames is not None and num_frames > stored_frames:
            raise ValueError(
                f"the checkpoint was trained on {num_frames} frames a clip and the shards hold {stored_frames}: "
                f"extract {num_frames} frames a clip, or ask with fewer on purpose (--num-frames {stored_frames})"
            )
    return QuestionSettings(
        num_frames=num_frames,
        time_instruction=_given(asked.time_instruction, trained.time_instruction),
        frame_times=_given(asked.frame_times, trained.frame_times),
    )


def _given(value: bool | None, trained: bool | None) -> bool:
    return value if value is not None else bool(trained)

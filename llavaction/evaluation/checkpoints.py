"""The checkpoint format, in one place, and one loaded checkpoint for evaluation, the exports and prediction.

A training checkpoint (`.ckpt`, Lightning's) carries, beside Lightning's own entries, the module's hyperparameters
(the typed option groups and the resolved architecture), the tokenizer's files (TOKENIZER_FILES) and the precision it
was trained at (TRAINED_PRECISION); the DataModule's hyperparameters hold the prompt settings and frame count. An
original checkpoint is a LLaVA-Video / LLaVAction directory (config.json + safetensors, llavaction.model.checkpoint) or
a model-hub id; `export_model` writes one from a trained model (or transformers' own layout). `LoadedCheckpoint`
reads any of them once, with its tokenizer, the prompt settings and frame count it was trained with, and its
precision, and builds the answering module and the DataModule through the same links as train.py.

A Lightning checkpoint written by this version carries its architecture (hyperparameters) and its tokenizer's files,
so it evaluates from any working directory and after its run folder is moved; one written before is rebuilt from its
hyperparameters, whose relative paths hold from the folder it was trained in.
"""

from __future__ import annotations

import contextlib
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from llavaction.data.options import LoaderOptions, PriorActionOptions
from llavaction.evaluation.options import EvaluationOptions, QuestionOptions
from llavaction.model.options import ActionSupervision, ComputeOptions
from llavaction.prompts.wording import PromptOptions
from llavaction.utils.checks import as_options
from llavaction.utils.hub import is_hub_id, resolve

Precision = Literal["32-true", "bf16-true", "bf16-mixed", "16-true", "16-mixed", "64-true"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16, "64": torch.float64}
# Entries a training checkpoint carries beside Lightning's: the tokenizer's files ({name: bytes}) and the precision.
TOKENIZER_FILES, TRAINED_PRECISION = "llavaction_tokenizer_files", "llavaction_precision"
ExportLayout = Literal["original", "transformers"]


def tokenizer_files(tokenizer) -> dict[str, bytes]:
    """{file name: content} of a tokenizer as save_pretrained writes it (a checkpoint carries them)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def extra_entries(tokenizer: dict[str, bytes], precision: str | None) -> dict:
    """What a training checkpoint carries beside Lightning's entries and the hyperparameters."""
    return {TOKENIZER_FILES: tokenizer} | ({TRAINED_PRECISION: precision} if precision else {})


def check_export_layout(config, layout: ExportLayout) -> None:
    """Refuse, before any work, an export whose layout would compute other logits than the model."""
    from llavaction.model.config import LlavaVideoConfig
    from llavaction.model.onevision import check_exportable

    if layout == "transformers" and isinstance(config, LlavaVideoConfig):
        check_exportable(config)


EXPORT_COMMAND = "llavaction export"  # the marker of an export folder (utils.files.replaced_folder)


def export_model(model, tokenizer, directory: Path, is_writer: bool, layout: ExportLayout = "original") -> None:
    """A trained model with its tokenizer, gathered from every rank under FSDP2 and written by the writer rank as a
    whole (an earlier export in `directory` stays until the new one is complete; a folder that is not an export is
    refused, never replaced: utils.files.replaced_folder). 'original': LLaVA-Video in the
    lmms-lab layout, a Qwen backbone in transformers' own with its processor config; 'transformers': transformers'
    own class for every backbone (LLaVA-Video: LlavaOnevisionForConditionalGeneration, where it computes the same
    logits). Action heads go in a file beside transformers' layout."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from llavaction.model.checkpoint import save_original
    from llavaction.model.onevision import save_onevision
    from llavaction.model.qwen_vl import QwenVLModel
    from llavaction.utils.files import replaced_folder

    check_export_layout(model.config, layout)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if is_writer:
        with replaced_folder(directory, EXPORT_COMMAND) as folder:
            if isinstance(model, QwenVLModel):
                model.save_pretrained(folder, state=state, tokenizer=tokenizer)
            elif layout == "transformers":
                save_onevision(model, folder, state=state, tokenizer=tokenizer)
            else:
                save_original(model, folder, state=state)
                tokenizer.save_pretrained(folder)


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


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names it."""


def is_original(checkpoint: str | Path) -> bool:
    """An original checkpoint: a directory with config.json, or a model-hub id."""
    path = Path(checkpoint)
    if path.exists():
        return path.is_dir() and (path / "config.json").exists()
    return is_hub_id(str(checkpoint))


def check_checkpoint_file(path: Path) -> None:
    """A Lightning checkpoint file must be a whole zip archive (torch.save's format): a text file or one cut short by
    a full disk is refused naming it, before anything is built."""
    if path.is_file() and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable checkpoint (not a whole torch.save archive: truncated or text?)")


def check_precision(precision: str) -> str:
    """A Lightning precision name accepted here (llavaction.evaluation.checkpoints.PRECISIONS)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)} (Lightning's names)")
    return precision


def precision_of_original(config: dict) -> str:
    """The precision a checkpoint folder's weights are stored at (config.json's torch_dtype, or dtype)."""
    dtype = config.get("torch_dtype", config.get("dtype"))
    return {"bfloat16": "bf16-true", "float16": "16-true"}.get(str(dtype), "32-true")


@contextlib.contextmanager
def precision_context(module: torch.nn.Module, precision: str, device: torch.device):
    """Run a module outside a Trainer at a Lightning precision: '-true' casts the weights, '-mixed' keeps them in
    fp32 under autocast."""
    bits, _, kind = check_precision(precision).partition("-")
    if kind == "true":
        module.to(device, _DTYPES[bits])
        yield
        return
    module.to(device, torch.float32)
    with torch.autocast(device.type, dtype=_DTYPES[bits]):
        yield


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
        if is_original(checkpoint):
            return cls._open_original(checkpoint, tokenizer)
        path = Path(checkpoint)
        if path.is_dir():
            raise CheckpointError(
                f"{checkpoint}: a sharded (distributed) training checkpoint; evaluate the run's export "
                "(model.export_dir, the original layout) or a single-file .ckpt"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"{checkpoint}: neither a Lightning checkpoint file, a checkpoint directory with config.json, nor a "
                "model-hub id"
            )
        check_checkpoint_file(path)
        return cls._open_lightning(path, tokenizer)

    @classmethod
    def _open_original(cls, checkpoint: str, tokenizer: str | None) -> LoadedCheckpoint:
        from llavaction.model.build import backbone_of
        from llavaction.model.checkpoint import check_original, read_config
        from llavaction.model.config import LlavaVideoConfig
        from llavaction.model.qwen_config import QwenVLConfig

        directory = resolve(checkpoint)
        config = read_config(directory, llava=False)
        backbone = backbone_of(config)
        if backbone == "llava_video":
            check_original(config, directory / "config.json")
            architecture = LlavaVideoConfig.from_original(config, source=str(directory / "config.json"))
        else:
            architecture = QwenVLConfig.from_checkpoint(directory, source=checkpoint, config=config)
        settings = TrainedSettings(
            time_instruction=bool(config.get("add_time_instruction", False)),
            frame_times=False,
            precision=precision_of_original(config),
        )
        init = {"backbone": backbone, "checkpoint": str(directory), "architecture": asdict(architecture)}
        return cls(checkpoint, settings, init, None, tokenizer or str(directory))

    @classmethod
    def _open_lightning(cls, path: Path, tokenizer: str | None) -> LoadedCheckpoint:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception as err:  # torch raises RuntimeError, pickle and zip errors alike for a damaged file
            message = str(err).splitlines()[0] if str(err) else ""
            raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {message})") from None
        if not isinstance(state, dict) or "state_dict" not in state or "hyper_parameters" not in state:
            raise CheckpointError(f"{path}: not a llavaction training checkpoint (no state_dict or hyperparameters)")
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
    def backbone(self) -> str:
        """The model family the checkpoint holds."""
        architecture = self._init_args.get("architecture") or {}
        return self._init_args.get("backbone") or architecture.get("backbone") or "llava_video"

    @property
    def precision(self) -> str:
        """The precision its weights were trained (or are stored) at; 32-true when it does not say."""
        return self.settings.precision or "32-true"

    def module(self, evaluation: EvaluationOptions | None = None):
        """The answering module (evaluation.module.MQAModule) with the checkpoint's weights, built on first use;
        from then on it answers by the evaluation options given (None: as it answers already)."""
        from transformers.initialization import no_init_weights

        from llavaction.evaluation.module import MQAModule
        from llavaction.model.build import resolve_architecture

        if self._module is None:
            args = self._init_args
            config = resolve_architecture(
                args.get("preset_name", "tiny"),
                args.get("checkpoint"),
                args.get("architecture"),
                as_options(ComputeOptions, args.get("compute") or ComputeOptions()),
                as_options(ActionSupervision, args.get("action") or ActionSupervision()),
                args.get("spatial_pool_mode"),
                args.get("newline_position"),
                args.get("backbone", "llava_video"),
            )
            weights = None if self._state_dict is not None else args.get("checkpoint")
            module = MQAModule(config, self.tokenizer, evaluation or EvaluationOptions(), weights=weights)
            if self._state_dict is None:
                module.configure_model()
            else:
                with no_init_weights():  # every weight comes from the state dict
                    module.configure_model()
                module.load_state_dict(self._state_dict)
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
    ):
        """The evaluation DataModule, linked to the model as train.py links them (evaluation.module.DATA_LINKS);
        questions: {file: records} asked over the test sets, read and checked against them by the caller."""
        from llavaction.data.datamodule import EpicDataModule
        from llavaction.evaluation.module import DATA_LINKS

        module = self.module()
        data = EpicDataModule(
            test=list(test),
            questions=list(questions or []),
            num_frames=settings.num_frames,
            prompt=settings.prompt,
            prior_actions=prior_actions,
            loader=loader,
            **{name: getattr(module, attribute) for attribute, name in DATA_LINKS},
        )
        if questions:
            data.ask(questions)
        return data


# frames asked of a checkpoint that does not say how many it was trained on, when no shards say how many they hold
DEFAULT_FRAMES = 64  # LLaVA-Video and LLaVAction were trained at 64 frames


def question_settings(
    trained: TrainedSettings, asked: QuestionOptions, stored_frames: int | None = None
) -> QuestionSettings:
    """Each value given wins; the others follow the training settings (none: off); the frames as trained, or all the
    shards hold where training does not say (DEFAULT_FRAMES without shards). Shards holding fewer frames than the
    checkpoint trained on are refused unless fewer are asked for on purpose (--num-frames)."""
    num_frames = asked.num_frames
    if num_frames is None:
        num_frames = trained.num_frames or stored_frames or DEFAULT_FRAMES
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

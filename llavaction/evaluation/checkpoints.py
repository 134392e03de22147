"""One loaded checkpoint for evaluation, the lmms-eval export and prediction: a Lightning .ckpt, an original LLaVA-Video
/ LLaVAction directory, or a model-hub id, read once, with its tokenizer, the prompt settings and frame count it was
trained with, and its precision; it builds the DataModule through the same links as train.py.

A Lightning checkpoint written by this version carries its architecture (hyperparameters) and its tokenizer's files,
so it evaluates from any working directory and after its run folder is moved; one written before is rebuilt from its
hyperparameters, whose relative paths hold from the folder it was trained in.
"""

from __future__ import annotations

import contextlib
import inspect
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from llavaction.args import EvaluationOptions, LoaderOptions, PriorActionOptions
from llavaction.model.hub import is_hub_id, resolve
from llavaction.shards import first_sample, sample_meta

Precision = Literal["32-true", "bf16-true", "bf16-mixed", "16-true", "16-mixed", "64-true"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16, "64": torch.float64}


@dataclass(frozen=True)
class TrainedSettings:
    """What a checkpoint's training asked and ran at; None where the checkpoint does not say."""

    time_instruction: bool | None = None
    frame_times: bool | None = None
    num_frames: int | None = None
    precision: str | None = None


@dataclass(frozen=True)
class QuestionSettings:
    """How the questions are asked: frames shown, time instruction, per-frame times."""

    num_frames: int
    time_instruction: bool
    frame_times: bool


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
    """The precision an original checkpoint's weights are stored at (config.json's torch_dtype)."""
    return {"bfloat16": "bf16-true", "float16": "16-true"}.get(str(config.get("torch_dtype")), "32-true")


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
        from llavaction.model.checkpoint import read_config
        from llavaction.model.config import LlavaVideoConfig

        directory = resolve(checkpoint)
        config = read_config(directory)
        settings = TrainedSettings(
            time_instruction=bool(config.get("add_time_instruction", False)),
            frame_times=False,
            precision=precision_of_original(config),
        )
        architecture = LlavaVideoConfig.from_original(config, source=str(directory / "config.json"))
        init = {"checkpoint": str(directory), "architecture": asdict(architecture)}
        return cls(checkpoint, settings, init, None, tokenizer or str(directory))

    @classmethod
    def _open_lightning(cls, path: Path, tokenizer: str | None) -> LoadedCheckpoint:
        from llavaction.module import TOKENIZER_FILES, TRAINED_PRECISION

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
    def precision(self) -> str:
        """The precision its weights were trained (or are stored) at; 32-true when it does not say."""
        return self.settings.precision or "32-true"

    def module(self, evaluation: EvaluationOptions = EvaluationOptions()):
        """The LightningModule with the checkpoint's weights, built once, with the evaluation options of the first
        call."""
        from transformers.initialization import no_init_weights

        from llavaction.module import LlavaActionModule

        if self._module is None:
            accepted = inspect.signature(LlavaActionModule.__init__).parameters
            args = {k: v for k, v in self._init_args.items() if k in accepted}
            module = LlavaActionModule(**(args | {"tokenizer": self.tokenizer, "evaluation": asdict(evaluation)}))
            if self._state_dict is None:
                module.configure_model()
            else:
                with no_init_weights():  # every weight comes from the state dict
                    module.configure_model()
                module.load_state_dict(self._state_dict)
                self._state_dict = None
            self._module = module
        return self._module

    def question_settings(
        self,
        shards: list[str],
        num_frames: int | None = None,
        time_instruction: bool | None = None,
        frame_times: bool | None = None,
    ) -> QuestionSettings:
        """Each value given wins; the others follow the checkpoint's training, the frames no more than every shard
        set holds (all of them where the checkpoint does not say)."""
        return question_settings(self.settings, shards, num_frames, time_instruction, frame_times)

    def datamodule(
        self,
        test: list[str],
        settings: QuestionSettings,
        loader: LoaderOptions,
        prior_actions: PriorActionOptions = PriorActionOptions(),
    ):
        """The evaluation DataModule, linked to the model as train.py links them (module.DATA_LINKS)."""
        from llavaction.data.datamodule import EpicDataModule
        from llavaction.module import DATA_LINKS
        from llavaction.prompts import PromptOptions

        module = self.module()
        return EpicDataModule(
            test=list(test),
            num_frames=settings.num_frames,
            prompt=PromptOptions(time_instruction=settings.time_instruction, frame_times=settings.frame_times),
            prior_actions=prior_actions,
            loader=loader,
            **{data: getattr(module, attribute) for attribute, data in DATA_LINKS},
        )


def question_settings(
    trained: TrainedSettings,
    shards: list[str],
    num_frames: int | None = None,
    time_instruction: bool | None = None,
    frame_times: bool | None = None,
) -> QuestionSettings:
    """Each value given wins; the others follow the training settings (none: off), the frames no more than every
    shard set holds (all of them where training does not say)."""
    stored = min(sample_meta(first_sample(location))["num_frames"] for location in shards)
    if num_frames is None:
        num_frames = trained.num_frames if trained.num_frames and trained.num_frames <= stored else stored
    return QuestionSettings(
        num_frames=num_frames,
        time_instruction=time_instruction if time_instruction is not None else bool(trained.time_instruction),
        frame_times=frame_times if frame_times is not None else bool(trained.frame_times),
    )

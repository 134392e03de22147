"""`llavaction train` (and `python train.py`): fit, validate, test and predict through LightningCLI, the typed options
of the LightningModule and the DataModule with configs stacked through their `# base:` line (llavaction.utils.configs).

    python train.py fit --config experiments/demo.yaml
    python train.py fit --config experiments/demo.yaml --ckpt_path last      # resume the newest checkpoint
    python train.py fit --config experiments/llavaction_7b.yaml --print_config

SIGTERM, or SIGUSR1 outside a SLURM job that requeues, ends a fit with a checkpoint (`--ckpt_path last` resumes it) and
exit status 128 + the signal's number (143, 138), as a shell reports a process stopped by a signal, so that
`fit && evaluate` does not go on with a half-trained model. A known error (a bad option, missing shards, a bad
evaluation sample) is one line, `error: ...`, exit status 2; LLAVACTION_DEBUG=1 shows its traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import re
import signal
import sys
import warnings
from pathlib import Path

from jsonargparse import Namespace
from jsonargparse.typing import register_type
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from llavaction.data.datamodule import EpicDataModule
from llavaction.data.options import TaskSource
from llavaction.evaluation.checkpoint_format import check_checkpoint_file
from llavaction.evaluation.module import DATA_LINKS
from llavaction.training.checkpointing import LAST, RunCheckpoint, RunFolderLock, checkpoint_folder
from llavaction.training.module import LlavaActionModule
from llavaction.training.resume import apply_resume, plan_resume
from llavaction.utils.configs import expand_config_args, flat
from llavaction.utils.errors import run_cli
from llavaction.utils.options import one_line


def task_source(value) -> TaskSource:
    """A training source from a config's mapping, whole: every field it does not give takes TaskSource's default."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if not isinstance(value, dict):
        raise ValueError(f"a training source is a mapping of TaskSource's fields, got {value!r}")
    return TaskSource(**value)


# A list of training sources given by a later config or on the command line replaces the earlier list item for item:
# parsed as jsonargparse parses dataclasses, an item would keep the fields of the earlier item at its position that
# it does not name (a `questions:` file of the base config asked over the replacing row's frames).
register_type(TaskSource, dataclasses.asdict, task_source)


class OneLineParser(LightningArgumentParser):
    """LightningCLI's parser with a one-line error (`error: ...`, exit status 2) instead of the usage text."""

    def error(self, message: str, ex: Exception | None = None):
        line = one_line(message)
        # the model's own parser (the model is a class or subclass of it) names its keys without `model.` before them
        if "--backbone" in self._option_string_actions:
            line = re.sub(r"(^|\s)--(?!model\.)", r"\1--model.", line)
            line = re.sub(r"^Option '([^']+)' is not accepted", r"Group 'model' does not accept option '\1'", line)
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2)


class LlavaActionCLI(LightningCLI):
    """The model tells the data which tokenizer, how many visual tokens a frame takes and what its stage asks of the
    samples; checkpoints are RunCheckpoint's (experiments configure it), so Lightning adds none of its own. The model
    is LlavaActionModule or a subclass named by `model.class_path` (the GRPO stage,
    llavaction.training.grpo.GRPOModule); a config giving the model's arguments without a class path is
    LlavaActionModule's."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parser_class", OneLineParser)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("trainer_defaults", {"enable_checkpointing": False})
        super().__init__(*args, **kwargs)

    def instantiate_classes(self) -> None:
        """The classes built; a model's own error (a bad option it refuses) raised as itself, not wrapped in
        jsonargparse's message about the model's type (a subclass or None)."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            raise unwrapped(error) from None

    def add_arguments_to_parser(self, parser) -> None:
        for model_attribute, data_argument in DATA_LINKS:
            parser.link_arguments(f"model.{model_attribute}", f"data.{data_argument}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Lightning's default logger (TensorBoard in <default_root_dir>/lightning_logs), without the placeholder
        `hp_metric = -1` it logs for runs that give none (the run's figures are val/*)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        refuse_lightning_checkpoints(config.trainer.callbacks or [])
        if config.trainer.logger in (None, True):
            root = config.trainer.default_root_dir or os.getcwd()
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir=root, name="lightning_logs", default_hp_metric=False),
            )

    def before_fit(self) -> None:
        """Before the fit writes anything: a fit that would train nothing is refused, and a fresh fit into a run
        folder holding an earlier run's checkpoints; `--ckpt_path last` is the run's newest checkpoint (RunCheckpoint's
        last.ckpt); a resume is set up for this run's layout (llavaction.training.resume), or refused."""
        config = self.config_init[self.subcommand]
        trainer, data = self.trainer, self.datamodule
        for name in ("max_epochs", "max_steps"):
            if self.subcommand == "fit" and getattr(trainer, name) == 0:
                raise ValueError(f"trainer.{name} is 0: the fit would train nothing")
        if config.get("ckpt_path") == "last":  # still unresolved: the run has no checkpoint, which this says
            config["ckpt_path"] = str(last_checkpoint(trainer))
        if self.subcommand == "fit" and config.get("ckpt_path"):
            resume = plan_resume(config["ckpt_path"], data, trainer.world_size, trainer.accumulate_grad_batches)
            for note in apply_resume(resume, data, trainer):
                if trainer.is_global_zero:
                    print(f"resume: {note}", file=sys.stderr)
        elif self.subcommand == "fit":
            refuse_earlier_checkpoints(trainer)
        if self.subcommand == "fit":  # one fit at a time in a run folder, held by its first process (exclusive_output)
            trainer.callbacks.append(RunFolderLock(Path(trainer.default_root_dir)))

    before_validate = before_test = before_predict = before_fit

    def _parse_ckpt_path(self) -> None:
        """LightningCLI replaces the model settings with a --ckpt_path checkpoint's, even those set on the command line
        (a private hook: lightning is pinned below 2.7 for it). Kept here: where the run's outputs go and how it
        evaluates; refused in one line: any other setting of this run that the checkpoint's would replace.
        `--ckpt_path last` is resolved here already, so that it is checked alike."""
        subcommand = self.config.get("subcommand")
        if subcommand and self.config[subcommand].get("ckpt_path") == "last":
            found = newest_in_config(self.config[subcommand].trainer)
            if found is not None:  # none: before_fit says so in one line
                check_checkpoint_file(found)
                self.config[subcommand].ckpt_path = str(found)
        before = flat(self.config[subcommand].model.as_dict()) if subcommand else {}
        super()._parse_ckpt_path()
        if not subcommand:
            return
        after = flat(self.config[subcommand].model.as_dict())
        for key in sorted(set(before) | set(after)):
            ours, theirs = before.get(key), after.get(key)
            argument = key.removeprefix("init_args.")  # the model's own argument, its class path aside
            if ours == theirs or (ours is None and not argument.startswith(HONOURED)):
                continue
            if argument.startswith(HONOURED):
                self.config[subcommand][f"model.{key}"] = ours
            elif subcommand != "fit" and argument.startswith(TRAINING_ONLY):
                continue
            else:
                raise ValueError(
                    f"--ckpt_path: model.{argument} is {ours!r} in this run but {theirs!r} in the checkpoint, whose "
                    "model settings a resume continues; drop the setting, or start a new run without --ckpt_path"
                )


UNION_ERROR = "Does not validate against any of the Union subtypes"


def unwrapped(error: BaseException) -> BaseException:
    """The error jsonargparse wrapped while building a class given by a union type (the model: a subclass or None)."""
    cause = error
    while cause is not None and str(cause).startswith(UNION_ERROR):
        cause = cause.__cause__ or cause.__context__
    return cause if cause is not None else error


# model settings of this run that a --ckpt_path checkpoint never replaces: where outputs go and how it evaluates
HONOURED = ("export_dir", "export_layout", "evaluation.")
# no bearing on validate, test or predict (the GRPO stage's rollouts, rewards and objective included)
TRAINING_ONLY = ("optimizer.", "trainable.", "rollout.", "rewards.", "objective.", "log_completions_every_n_steps")


def checkpoint_folders(root: str | Path, dirpaths: list[str | None]) -> list[Path]:
    """Where a run's RunCheckpoints write (their dirpath, else <root>/checkpoints)."""
    return [checkpoint_folder(root, d) for d in dirpaths] or [checkpoint_folder(root)]


def newest_in(folders: list[Path]) -> Path | None:
    """The first of the folders' last.ckpt, None when none has one."""
    return next(((folder / LAST).resolve() for folder in folders if (folder / LAST).exists()), None)


def newest_in_config(trainer) -> Path | None:
    """The run's last.ckpt from its parsed trainer settings (before the trainer exists), None when there is none."""
    dirpaths = [
        (callback.get("init_args") or {}).get("dirpath")
        for callback in trainer.callbacks or []
        if str(callback.get("class_path", "")).endswith("RunCheckpoint")
    ]
    return newest_in(checkpoint_folders(trainer.default_root_dir or os.getcwd(), dirpaths))


def refuse_lightning_checkpoints(callbacks: list) -> None:
    """Lightning's ModelCheckpoint among the configured callbacks: refused in one line naming RunCheckpoint, which
    writes this codebase's checkpoints (whole or not at all, `--ckpt_path last`, resumable on another layout)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    for callback in callbacks:
        path = str(callback.get("class_path", "")) if isinstance(callback, Namespace | dict) else ""
        module, _, name = path.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), name) if module else None
        except (ImportError, AttributeError):
            continue  # the parser names a class it cannot find
        if isinstance(found, type) and issubclass(found, ModelCheckpoint):
            raise ValueError(
                f"trainer.callbacks: {path} is not used here; checkpoints are written by "
                "llavaction.training.checkpointing.RunCheckpoint (every_n_epochs, every_n_train_steps, "
                "train_time_interval, keep), which `--ckpt_path last` resumes"
            )


def refuse_earlier_checkpoints(trainer) -> None:
    """A fit without --ckpt_path into a run whose checkpoint folder holds checkpoints would write over them and point
    last.ckpt at its own: refused, naming the folder and what to do."""
    dirpaths = [c.dirpath for c in trainer.callbacks if isinstance(c, RunCheckpoint)]
    for folder in checkpoint_folders(trainer.default_root_dir, dirpaths):
        held = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
        if held:
            raise ValueError(
                f"{folder} holds an earlier run's checkpoints ({_either_names(held)}): continue it with --ckpt_path "
                "last, or start this run in another trainer.default_root_dir"
            )


def _either_names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def last_checkpoint(trainer) -> Path:
    """The newest checkpoint of the run (`last.ckpt` of its RunCheckpoint folder); none is an error naming it."""
    dirpaths = [c.dirpath for c in trainer.callbacks if isinstance(c, RunCheckpoint)]
    folders = checkpoint_folders(trainer.default_root_dir, dirpaths)
    found = newest_in(folders)
    if found is None:
        raise FileNotFoundError(
            f"--ckpt_path last: no checkpoint in {folders[0]} to resume (drop --ckpt_path to start this run afresh)"
        )
    return found


class ParseOnly(LlavaActionCLI):
    """The training CLI's parsing and validation alone: no model, no data (LightningCLI with run=False)."""

    def instantiate_classes(self) -> None:
        """Nothing is built."""

    def after_instantiate_classes(self) -> None:
        """Nothing was built."""


def config_problem(configs: list[Path], extra: list[str]) -> str | None:
    """Why `train.py fit` would refuse these stacked configs and arguments (a typo'd key, a bad value), or None:
    parsed and validated as a fit parses them, nothing built (an ablation checks every row before the first trains)."""
    args = [part for config in configs for part in ("--config", str(config))] + list(extra)
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages), contextlib.redirect_stdout(io.StringIO()):
            cli(args, cli_class=ParseOnly, run=False)
    except SystemExit:
        lines = [line for line in messages.getvalue().splitlines() if line.strip()]
        return lines[-1].removeprefix("error: ") if lines else "refused by the training CLI"
    return None


def check_ckpt_path(args: list[str]) -> None:
    """A --ckpt_path file that cannot be a checkpoint (text, cut short by a full disk) is refused naming it, before
    LightningCLI reads it."""
    for index, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--ckpt_path=") else None
        if arg == "--ckpt_path" and index + 1 < len(args):
            value = args[index + 1]
        if value and value != "last":
            check_checkpoint_file(Path(value))


def cli(args: list[str] | None = None, cli_class: type[LlavaActionCLI] = LlavaActionCLI, **kwargs) -> LlavaActionCLI:
    """The training CLI over `args` (configs naming a base are stacked after it)."""
    args = expand_config_args(sys.argv[1:] if args is None else list(args))
    check_ckpt_path(args)
    kwargs.setdefault("save_config_kwargs", {"overwrite": True})
    with warnings.catch_warnings():  # the expanded arguments are the command line, passed on purpose
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return cli_class(LlavaActionModule, EpicDataModule, args=args, **kwargs)


def main(args: list[str] | None = None) -> int:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    stopped_by: list[int] = []

    def stop_like_sigterm(signum, frame) -> None:
        """SIGUSR1 outside SLURM (where Lightning takes it for requeueing): stop as on SIGTERM, with a checkpoint."""
        stopped_by.append(signum)
        signal.raise_signal(signal.SIGTERM)

    def run() -> int:
        # set before the trainer starts, so that under SLURM with auto-requeue Lightning's own handler replaces it
        signal.signal(signal.SIGUSR1, stop_like_sigterm)
        try:
            cli(args)
        except SIGTERMException:
            signum = stopped_by[0] if stopped_by else signal.SIGTERM
            print(
                f"stopped by {signal.Signals(signum).name} after writing its checkpoint: not finished "
                "(resume with --ckpt_path last)",
                file=sys.stderr,
            )
            return 128 + signum
        return 0

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())

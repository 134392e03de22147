"""Callbacks named by the experiment configs."""

from __future__ import annotations

import os
import shutil
import string
import time
from pathlib import Path
from weakref import proxy

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from llavaction.constants import IGNORE_INDEX
from llavaction.figures import accuracy_bars, confusion_heatmap, frame_strip, pyplot
from llavaction.flops import peak_bf16_flops, training_flops
from llavaction.jsonl import write_json

RESULTS_FILE = "validation_results.json"


MODE_NAMES = {
    "generate": "the paper's rule (greedy answers)",
    "letter": "letter scoring",
    "likelihood": "likelihood scoring",
}


def format_results(results: dict) -> str:
    """'validation MQA accuracy: 55.5% (chance 20.0%) by the paper's rule (greedy answers) on 110 questions; by
    letter scoring: 30.1%; by likelihood scoring: 60.1%'."""
    modes = results["scoring"]
    others = "".join(f"; by {MODE_NAMES[m]}: {results[f'val/mqa_accuracy_{m}']:.1f}%" for m in modes[1:])
    return (
        f"validation MQA accuracy: {results['val/mqa_accuracy']:.1f}% (chance {results['val/chance']:.1f}%) "
        f"by {MODE_NAMES[modes[0]]} on {int(results['val/questions'])} questions{others}"
    )


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint writing to <trainer.default_root_dir>/checkpoints unless given a dirpath: one folder
    for every run of an experiment (not one per logger version), so `--ckpt_path last` resumes the newest checkpoint
    of earlier runs, including one written on SIGTERM (`save_on_exception`). A checkpoint is written whole or not at
    all: under a hidden temporary name (never taken for a checkpoint: not `.ckpt`), renamed when complete; a failed
    write (a full disk) leaves nothing under the checkpoint's name and its error names it."""

    def _use_run_folder(self, trainer: L.Trainer) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._use_run_folder(trainer)
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and os.path.isdir(self.dirpath):  # a killed run's partial writes
            for partial in Path(self.dirpath).glob(f".*{PARTIAL_SUFFIX}"):
                _remove(partial)

    def _find_last_checkpoints(self, trainer: L.Trainer) -> set[str]:
        self._use_run_folder(trainer)
        return super()._find_last_checkpoints(trainer)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        partial = os.path.join(os.path.dirname(filepath), f".{os.path.basename(filepath)}{PARTIAL_SUFFIX}")
        try:
            trainer.save_checkpoint(partial, self.save_weights_only)
        except OSError as err:
            if trainer.is_global_zero:
                _remove(Path(partial))
            raise OSError(err.errno, f"{filepath}: the checkpoint was not written ({err.strerror or err})") from err
        if trainer.is_global_zero:
            if os.path.isdir(filepath) and not os.path.islink(filepath):  # a sharded checkpoint written again
                shutil.rmtree(filepath)
            os.replace(partial, filepath)
        trainer.strategy.barrier("RunCheckpoint._save_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


PARTIAL_SUFFIX = ".partial"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class StepPerformance(L.Callback):
    """Logs each training step's perf/samples_per_s and perf/tokens_per_s (visual tokens included, padding not) and,
    on a GPU, perf/gpu_max_memory_gib and perf/mfu: model FLOPs (llavaction.flops) over step time x the card's peak
    (cards in llavaction.flops.PEAK_BF16_FLOPS). The step is timed from batch start to end, data loading excluded."""

    def __init__(self):
        self._started, self._cuda, self._peak = 0.0, False, None

    def on_train_start(self, trainer, pl_module) -> None:
        device = trainer.strategy.root_device
        self._cuda = device.type == "cuda"
        self._peak = peak_bf16_flops(torch.cuda.get_device_name(device)) if self._cuda else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._cuda:
            torch.cuda.synchronize()  # so the step's time is its own, not the previous step's queued kernels
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self._started
        frames = batch["frames"].shape[1]
        lengths = batch["attention_mask"].sum(1) + pl_module.config.visual_tokens(frames) - 1  # the placeholder goes
        metrics = {"perf/samples_per_s": len(lengths) / seconds, "perf/tokens_per_s": float(lengths.sum()) / seconds}
        if self._cuda:
            metrics["perf/gpu_max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if self._peak:
            supervised = int((batch["labels"] != IGNORE_INDEX).sum())
            flops = training_flops(
                pl_module.config,
                frames,
                lengths.tolist(),
                supervised,
                vision_trained=pl_module.train_parts.vision_tower,
            )
            metrics["perf/mfu"] = flops / seconds / self._peak
        pl_module.log_dict(metrics, batch_size=len(lengths))


class ReportMQAAccuracy(L.Callback):
    """After each real validation (not the sanity check), print the MQA accuracy against chance and write it to
    `<log_dir>/validation_results.json`."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/mqa_accuracy" not in trainer.callback_metrics:
            return
        log_dir = trainer.log_dir  # a collective call under distributed strategies: every rank asks
        if not trainer.is_global_zero:
            return
        results = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        results |= {
            "scoring": list(pl_module.evaluation.mqa_scoring),
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
        }
        print(format_results(results), flush=True)
        if log_dir:
            write_json(Path(log_dir) / RESULTS_FILE, results)


def verb_name(meta: dict) -> str:
    """A question's verb as the annotations name it (older question files: the first word of its class text)."""
    return meta.get("verb_text") or (meta.get("action_text") or str(meta.get("verb_class"))).split(" ")[0]


class MQAFigures(L.Callback):
    """At the end of each validation, TensorBoard figures from this rank's questions, all by the headline rule (the
    first of model.evaluation.mqa_scoring: under 'generate' the paper's rule on the greedy answer): per-verb question
    accuracy and a verb confusion heatmap over the most frequent verbs (a 'none' column for answers matching no
    option), labelled with verb names, and example questions as frame strips (upscaled to a readable size) with their
    options and the option the rule chose."""

    def __init__(self, top_verbs: int = 20, examples: int = 4):
        self.top_verbs, self.examples = top_verbs, examples
        self._reset()

    def _reset(self) -> None:
        self.true_verbs: list[int] = []
        self.chosen_verbs: list[int] = []
        self.correct: list[bool] = []
        self.rule = ""
        self.names: dict[int, str] = {}
        self.samples: list[dict] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.rule = MODE_NAMES[pl_module.evaluation.mqa_scoring[0]]  # the headline: every figure follows it
        for row, (meta, chosen) in enumerate(zip(batch["meta"], outputs["chosen"].tolist())):
            if batch["is_padding"][row] or meta.get("verb_class") is None or not meta.get("option_actions"):
                continue
            self.true_verbs.append(int(meta["verb_class"]))
            self.names.setdefault(int(meta["verb_class"]), verb_name(meta))
            self.correct.append(chosen == meta.get("answer_index"))
            # an answer matching no option (-1) chose no verb
            self.chosen_verbs.append(int(meta["option_actions"][chosen].split(":")[0]) if chosen >= 0 else -1)
            if len(self.samples) < self.examples:
                self.samples.append({"frames": batch["frames"][row].cpu().numpy(), "meta": meta, "chosen": chosen})

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if trainer.sanity_checking or not self.true_verbs or not hasattr(experiment, "add_figure"):
            return
        for name, figure in (
            ("verb_accuracy", self.verb_accuracy_figure()),
            ("verb_confusion", self.confusion_figure()),
            *((f"example_{i}", self.example_figure(s)) for i, s in enumerate(self.samples)),
        ):
            experiment.add_figure(f"val/{name}", figure, global_step=trainer.global_step, close=True)

    def _top_verbs(self) -> list[int]:
        values, counts = np.unique(self.true_verbs, return_counts=True)
        return [int(v) for v in values[np.argsort(-counts, kind="stable")][: self.top_verbs]]

    def _label(self, verb: int) -> str:
        return self.names.get(verb, str(verb))

    def verb_accuracy_figure(self):
        true, correct = np.array(self.true_verbs), np.array(self.correct)
        verbs = self._top_verbs()
        return accuracy_bars(
            [f"{self._label(v)} ({int((true == v).sum())})" for v in verbs],
            [100.0 * correct[true == v].mean() for v in verbs],
            xlabel="verb (questions), most frequent first",
            ylabel="questions right (%)",
            title=f"by {self.rule}",
        )

    def confusion_figure(self):
        """counts[true verb, chosen verb] over the most frequent verbs; 'other' and 'none' (no option) columns."""
        verbs = self._top_verbs()
        index = {v: i for i, v in enumerate(verbs)}
        counts = np.zeros((len(verbs), len(verbs) + 2))
        for t, c in zip(self.true_verbs, self.chosen_verbs):
            if t in index:
                counts[index[t], index.get(c, len(verbs) + (c < 0))] += 1
        labels = [self._label(v) for v in verbs]
        return confusion_heatmap(counts, labels, [*labels, "other", "none"], kind="verb", title=f"by {self.rule}")

    @staticmethod
    def example_figure(sample: dict, min_height: int = 128):
        plt = pyplot()
        frames, meta = sample["frames"], sample["meta"]
        strip = frame_strip(frames, min_height)
        lines = [
            f"{string.ascii_uppercase[i]}. {text}"
            + (" <- chosen by the headline rule" if i == sample["chosen"] else "")
            + (" (answer)" if i == meta.get("answer_index") else "")
            for i, text in enumerate(meta["options"])
        ]
        if sample["chosen"] < 0:
            lines.append("(the answer matches no option)")
        width = min(16.0, max(6.0, strip.shape[1] / 100))
        figure = plt.figure(figsize=(width, width * strip.shape[0] / strip.shape[1] + 0.25 * len(lines) + 0.6))
        axis = figure.add_axes(
            (
                0,
                1 - strip.shape[0] / strip.shape[1] * width / figure.get_figheight(),
                1,
                strip.shape[0] / strip.shape[1] * width / figure.get_figheight(),
            )
        )
        axis.imshow(strip, interpolation="nearest")
        axis.axis("off")
        figure.text(0.01, 0.02, f"{meta['narration_id']}\n" + "\n".join(lines), fontsize=9, ha="left", va="bottom")
        return figure

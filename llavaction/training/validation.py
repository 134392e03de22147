"""What a validation shows: the MQA accuracy against chance on the console and in `validation_results.json`, and
TensorBoard figures by the headline rule (per-verb accuracy, a verb confusion, example questions as frame strips)."""

from __future__ import annotations

import string
from pathlib import Path

import lightning as L
import numpy as np

from llavaction.benchmark.breakdown import accuracy_table, confusion
from llavaction.benchmark.card import card_summary, read_shard_card
from llavaction.utils.figures import accuracy_bars, confusion_heatmap, frame_strip, pyplot
from llavaction.utils.jsonl import write_json, write_jsonl

RESULTS_FILE = "validation_results.json"
# per question of the last validation: its id, video and whether each figure counts it right (paired comparisons)
QUESTIONS_FILE = "validation_questions.jsonl"

MODE_NAMES = {
    "generate": "the paper's rule (greedy answers)",
    "letter": "letter scoring",
    "likelihood": "likelihood scoring",
}


def format_results(results: dict) -> str:
    """'validation MQA accuracy: 55.5% [49.1, 61.0] (chance 20.0%) by the paper's rule (greedy answers) on 110
    questions; by letter scoring: 30.1% [24.0, 36.2]; by likelihood scoring: 60.1% [53.3, 66.0] (95% intervals,
    bootstrap over 8 videos)' (results written before intervals print without them)."""
    modes = results["scoring"]

    def figure(name: str) -> str:
        low, high = results.get(f"val/{name}_low"), results.get(f"val/{name}_high")
        around = f" [{low:.1f}, {high:.1f}]" if low is not None and high is not None else ""
        return f"{results[f'val/{name}']:.1f}%{around}"

    others = "".join(f"; by {MODE_NAMES[m]}: {figure(f'mqa_accuracy_{m}')}" for m in modes[1:])
    videos = results.get("val/videos")
    bootstrap = f" (95% intervals, bootstrap over {int(videos)} videos)" if videos else ""
    unmatched = results.get("val/no_option_matched")
    unmatched = f"; answers matching no option: {int(unmatched)}" if unmatched is not None else ""
    return (
        f"validation MQA accuracy: {figure('mqa_accuracy')} (chance {results['val/chance']:.1f}%) "
        f"by {MODE_NAMES[modes[0]]} on {int(results['val/questions'])} questions{others}{unmatched}{bootstrap}"
    )


class ReportMQAAccuracy(L.Callback):
    """After each real validation (not the sanity check), print the MQA accuracy against chance and write it to
    `<log_dir>/validation_results.json`, and each question's hits to `<log_dir>/validation_questions.jsonl`."""

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
            "benchmark": validation_cards(trainer),
        }
        print(format_results(results), flush=True)
        if log_dir:
            questions = getattr(pl_module, "validation_questions", [])
            rows = [{"narration_id": n, "video_id": v, "hits": hits} for n, v, hits in questions]
            write_jsonl(Path(log_dir) / QUESTIONS_FILE, rows)
            write_json(Path(log_dir) / RESULTS_FILE, results)


def validation_cards(trainer: L.Trainer) -> dict[str, dict | None]:
    """{validation shard set: the benchmark card it carries (name, version, digest), None without one}."""
    locations = getattr(getattr(trainer, "datamodule", None), "val_sets", None) or []
    return {str(location): card_summary(read_shard_card(location)) for location in locations}


def verb_name(meta: dict) -> str:
    """A question's verb as the annotations name it (older question files: the first word of its class text)."""
    return meta.get("verb_text") or (meta.get("action_text") or str(meta.get("verb_class"))).split(" ")[0]


class MQAFigures(L.Callback):
    """At the end of each validation, TensorBoard figures from this rank's questions, all by the headline rule (the
    first of model.evaluation.mqa_scoring: under 'generate' the paper's rule on the greedy answer), with the tables of
    the analysis report (llavaction.benchmark.breakdown): per-verb question accuracy and a verb confusion over the most
    frequent verbs (a 'none' column for answers matching no option), labelled with verb names, and example questions
    as frame strips (upscaled to a readable size) with their options and the option the rule chose."""

    def __init__(self, top_verbs: int = 20, examples: int = 4):
        self.top_verbs, self.examples = top_verbs, examples
        self._reset()

    def _reset(self) -> None:
        self.rows: list[dict] = []
        self.rule = ""
        self.names: dict[int, str] = {}
        self.samples: list[dict] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.rule = MODE_NAMES[pl_module.evaluation.mqa_scoring[0]]  # the headline: every figure follows it
        for row, (meta, chosen) in enumerate(zip(batch.meta, outputs["chosen"].tolist())):
            if batch.is_padding[row] or meta.get("verb_class") is None or not meta.get("option_actions"):
                continue
            self.names.setdefault(int(meta["verb_class"]), verb_name(meta))
            self.rows.append(
                {
                    "narration_id": meta["narration_id"],
                    "video_id": meta.get("video_id"),  # the figure's intervals resample videos
                    "verb_class": int(meta["verb_class"]),
                    "noun_class": meta.get("noun_class"),
                    "option_actions": meta["option_actions"],
                    "rule_choice_index": chosen if chosen >= 0 else None,  # -1: the answer matches no option
                    "correct": chosen == meta.get("answer_index"),
                }
            )
            if len(self.samples) < self.examples:
                self.samples.append({"frames": batch.frames[row].cpu().numpy(), "meta": meta, "chosen": chosen})

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if trainer.sanity_checking or not self.rows or not hasattr(experiment, "add_figure"):
            return
        for name, figure in (
            ("verb_accuracy", self.verb_accuracy_figure()),
            ("verb_confusion", self.confusion_figure()),
            *((f"example_{i}", self.example_figure(s)) for i, s in enumerate(self.samples)),
        ):
            experiment.add_figure(f"val/{name}", figure, global_step=trainer.global_step, close=True)

    def verb_accuracy_figure(self):
        entries = accuracy_table(self.rows, lambda r: r["verb_class"], self.names)[: self.top_verbs]
        return accuracy_bars(
            [f"{e['name']} ({e['count']})" for e in entries],
            [e["accuracy"] for e in entries],
            intervals=[(e["low"], e["high"]) for e in entries],
            xlabel="verb (questions), most frequent first",
            ylabel="questions right (%)",
            title=f"by {self.rule}",
        )

    def confusion_figure(self):
        """counts[true verb, chosen verb] over the most frequent verbs; 'other' and 'none' (no option) columns."""
        matrix = confusion(self.rows, 0, self.names, self.top_verbs)
        return confusion_heatmap(
            np.array(matrix["counts"]), matrix["rows"], matrix["columns"], kind="verb", title=f"by {self.rule}"
        )

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
        height = strip.shape[0] / strip.shape[1] * width
        figure = plt.figure(figsize=(width, height + 0.25 * len(lines) + 0.6))
        share = height / figure.get_figheight()
        axis = figure.add_axes((0, 1 - share, 1, share))
        axis.imshow(strip, interpolation="nearest")
        axis.axis("off")
        figure.text(0.01, 0.02, f"{meta['narration_id']}\n" + "\n".join(lines), fontsize=9, ha="left", va="bottom")
        return figure

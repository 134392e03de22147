"""What a model gets wrong: an HTML report of an EK-100-MQA evaluation that opens from disk (`llavaction analyze`).

Reads predictions.jsonl of `llavaction evaluate mqa`, the questions' metadata and frames from their shards, and class
names from the annotations (else from the questions). Writes report/index.html (plain HTML and JavaScript, no external
assets), the figures as PNG, frame strips of the gallery, and analysis.json with every table. Every figure follows one
rule, the run's headline rule (the paper's rule on greedy answers, or the best score): the accuracy bars count
`correct`, the confusion matrices and the gallery's "chosen" mark the option that rule chose (`none` when the answer
matches no option); the letter the answer names is shown beside it, labelled as such. Every string from the inputs is
escaped for where it appears in the HTML.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llavaction.benchmark.breakdown import accuracy_table, confusion, sharing_options
from llavaction.benchmark.metrics import interval, percent
from llavaction.benchmark.uncertainty import Comparison, cluster_of, paired_comparison
from llavaction.data.shards import frame_name, iter_samples, location_sizes, sample_meta
from llavaction.evaluation.report_html import item_html, strip_file, write_html
from llavaction.utils.checks import check_count
from llavaction.utils.figures import accuracy_bars, confusion_heatmap, frame_strip, save_png
from llavaction.utils.files import check_apart, replaced_folder
from llavaction.utils.jsonl import read_jsonl, write_json

DURATION_BINS = (0.0, 1.0, 2.0, 4.0, 8.0, float("inf"))
STRIP_FRAMES, STRIP_HEIGHT = 8, 112


# What every prediction record needs for the report.
REQUIRED_FIELDS = ("narration_id", "options", "answer_index", "correct", "verb_class", "noun_class")


def load_predictions(folder: Path) -> list[dict]:
    """predictions.jsonl of an evaluation folder; an empty file, a record missing a field the report needs, or a
    question id given twice is an error naming the file (and line)."""
    path = folder / "predictions.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: not found; run `python -m llavaction.cli.evaluate mqa ... --out {folder}` first"
        )
    records = read_jsonl(path)
    if not records:
        raise ValueError(f"{path}: holds no prediction")
    seen = {}
    for number, record in enumerate(records, start=1):
        missing = [field for field in REQUIRED_FIELDS if field not in record]
        if missing:
            raise ValueError(f"{path}:{number}: a prediction without {', '.join(missing)}")
        if record["narration_id"] in seen:
            raise ValueError(
                f"{path}:{number}: question {record['narration_id']} appears twice (first on line "
                f"{seen[record['narration_id']]}); each question must count once"
            )
        seen[record["narration_id"]] = number
        chosen = record.get("rule_choice_index", record["answer_index"] if record["correct"] else None)
        if record["answer_index"] is not None and bool(record["correct"]) != (chosen == record["answer_index"]):
            raise ValueError(
                f"{path}:{number}: correct is {record['correct']} but rule_choice_index {chosen} against "
                f"answer_index {record['answer_index']} says otherwise: the file was edited or mixes two runs"
            )
    return records


GENERATE_RULE = "the paper's rule on greedy answers"  # results.json's `rule` of a generate-mode evaluation


def scoring_rule(folder: Path, records: list[dict]) -> str | None:
    """The rule that scored an evaluation's `correct`: the one its results.json names (older files: their mode and
    scoring); without results.json, the paper's rule when the records hold generated answers, else None (the best
    score, by a scoring that nothing names)."""
    results = folder / "results.json"
    if results.exists():
        figures = json.loads(results.read_text())
        if figures.get("rule"):
            return figures["rule"]
        if figures.get("mode") == "generate":
            return GENERATE_RULE
        if figures.get("scoring"):
            return f"{figures['scoring']} scores"
    return GENERATE_RULE if any(r.get("generation") is not None for r in records) else None


def check_same_rule(a: tuple[Path, list[dict]], b: tuple[Path, list[dict]]) -> str:
    """Two evaluations compared must be scored by one rule (both name it): the paper's rule on greedy answers and
    letter scoring answer different questions of a model, and a difference between them is no difference between
    models. Returns the rule; otherwise one line naming both."""
    rules = [scoring_rule(folder, records) for folder, records in (a, b)]
    for (folder, _), rule in zip((a, b), rules):
        if rule is None:
            raise ValueError(
                f"{folder}: no results.json names the rule that scored its answers (best scores, by letter or "
                "likelihood?); compare evaluation folders of `llavaction evaluate mqa`"
            )
    if rules[0] != rules[1]:
        raise ValueError(
            f"{a[0]} is scored by {rules[0]}, {b[0]} by {rules[1]}: a difference between two rules is not one between "
            "models; evaluate both with the same --mode (and --scoring)"
        )
    return rules[0]


def paired(predictions: list[dict], other: list[dict], intersection: bool, where: Path) -> tuple[list, dict]:
    """The predictions and the other model's, by id, on the same questions: different question sets are an error
    giving the overlap, unless `intersection` keeps the questions both answered; a question asked otherwise in the
    two (other options or answer: another build of the benchmark) is an error naming how many and one."""
    mine, theirs = {r["narration_id"] for r in predictions}, {r["narration_id"]: r for r in other}
    differing = [
        r["narration_id"]
        for r in predictions
        if r["narration_id"] in theirs
        and (r["options"], r["answer_index"])
        != (theirs[r["narration_id"]]["options"], theirs[r["narration_id"]]["answer_index"])
    ]
    if differing:
        raise ValueError(
            f"{where}: {len(differing)} questions were asked otherwise in the two evaluations (other options or "
            f"answer), e.g. {differing[0]}: they come from different builds of the benchmark and do not compare"
        )
    if mine != set(theirs):
        shared = len(mine & set(theirs))
        if not intersection or not shared:
            raise ValueError(
                f"{where}: the two evaluations answered different questions ({len(mine)} and {len(theirs)}, "
                f"{shared} in both); compare them on the {shared} shared ones with --intersection"
            )
        predictions = [r for r in predictions if r["narration_id"] in theirs]
        theirs = {k: v for k, v in theirs.items() if k in mine}
    return predictions, theirs


def compare_records(a: dict[str, dict] | list[dict], b: list[dict]) -> Comparison:
    """B's accuracy less A's over B's questions (A by id, or a list in any order): clustered interval, paired p."""
    by_id = a if isinstance(a, dict) else {r["narration_id"]: r for r in a}
    return paired_comparison(
        [float(by_id[r["narration_id"]]["correct"]) for r in b],
        [float(r["correct"]) for r in b],
        [cluster_of(r) for r in b],
    )


def class_names(annotations: Path | None, metas: dict[str, dict]) -> tuple[dict[int, str], dict[int, str]]:
    """Verb and noun names: the annotations' class keys (noun texts as the prompts word them), else the questions'."""
    if annotations is not None:
        from llavaction.ek100.annotations import VERB_CLASSES_FILE, noun_class_files, noun_text, read_class_keys

        verbs = dict(enumerate(read_class_keys(annotations / VERB_CLASSES_FILE)))
        nouns = read_class_keys(noun_class_files(annotations)[0])
        return verbs, {i: noun_text(k) for i, k in enumerate(nouns)}
    verbs, nouns = {}, {}
    for meta in metas.values():
        verb, _, noun = (meta.get("action_text") or "").partition(" ")
        verbs.setdefault(meta.get("verb_class"), meta.get("verb_text") or verb)
        nouns.setdefault(meta.get("noun_class"), meta.get("noun_text") or noun)
    return verbs, nouns


def tables(rows: list[dict], verbs: dict, nouns: dict) -> dict:
    verb_tails = {r["verb_class"]: r.get("verb_tail") for r in rows}
    noun_tails = {r["noun_class"]: r.get("noun_tail") for r in rows}

    def duration_bin(row):
        length = row["stop_sec"] - row["start_sec"]
        index = next(i for i in range(len(DURATION_BINS) - 1) if length < DURATION_BINS[i + 1])
        high = DURATION_BINS[index + 1]
        return f"{DURATION_BINS[index]:g}-{high:g} s" if high != float("inf") else f">= {DURATION_BINS[index]:g} s"

    return {
        "count": len(rows),
        "accuracy": percent(rows, "correct") or 0.0,
        "accuracy_interval": interval(rows, "correct"),
        "by_verb": accuracy_table(rows, lambda r: r["verb_class"], verbs, verb_tails),
        "by_noun": accuracy_table(rows, lambda r: r["noun_class"], nouns, noun_tails),
        "by_duration": sorted(
            accuracy_table(rows, duration_bin), key=lambda e: float(e["key"].split("-")[0].lstrip(">= ").split()[0])
        ),
        "by_options_sharing_verb_or_noun": sorted(accuracy_table(rows, sharing_options), key=lambda e: e["key"]),
        "by_participants": accuracy_table(rows, lambda r: "unseen" if r.get("unseen_participant") else "seen"),
        "verb_confusion": confusion(rows, 0, verbs, 15),
        "noun_confusion": confusion(rows, 1, nouns, 15),
    }


def save_figures(analysis: dict, out: Path) -> list[tuple[str, str]]:
    """The tables as PNG figures: [(file name, title)]."""
    figures = []

    def save(figure, name: str, title: str) -> None:
        save_png(figure, out / name)
        figures.append((name, title))

    def bars(name: str, title: str, entries: list[dict], label: str) -> None:
        entries = entries[:40]
        figure = accuracy_bars(
            [f"{e.get('name', e['key'])} ({e['count']})" for e in entries],
            [e["accuracy"] for e in entries],
            xlabel=label,
            title=title,
            colours=["#d95f02" if e.get("tail") else "#1b9e77" for e in entries],
            intervals=[(e["low"], e["high"]) for e in entries],
        )
        save(figure, name, title)

    bars("verbs.png", "Accuracy by verb (most frequent first; tail classes orange)", analysis["by_verb"], "verb (n)")
    bars("nouns.png", "Accuracy by noun (most frequent first; tail classes orange)", analysis["by_noun"], "noun (n)")
    bars("duration.png", "Accuracy by segment duration", analysis["by_duration"], "duration")
    bars(
        "hardness.png",
        "Accuracy by wrong options sharing the answer's verb or noun",
        analysis["by_options_sharing_verb_or_noun"],
        "options sharing verb or noun",
    )
    bars("participants.png", "Seen and unseen participants", analysis["by_participants"], "participants")
    for kind in ("verb", "noun"):
        matrix = analysis[f"{kind}_confusion"]
        figure = confusion_heatmap(
            np.array(matrix["counts"]),
            matrix["rows"],
            matrix["columns"],
            kind=kind,
            title=f"{kind.title()} confusion (row-normalised)",
        )
        save(figure, f"{kind}_confusion.png", f"{kind.title()} confusion of the most frequent {kind}s")
    return figures


def strip_image(sample: dict, path: Path) -> None:
    """Up to STRIP_FRAMES frames side by side, upscaled (nearest neighbour) to at least STRIP_HEIGHT pixels."""
    import simplejpeg

    from llavaction.data.stages import frame_indices

    meta = sample_meta(sample)
    count = min(STRIP_FRAMES, meta["num_frames"])
    frames = [
        simplejpeg.decode_jpeg(sample[frame_name(i)], colorspace="RGB")
        for i in frame_indices(meta["num_frames"], count)
    ]
    row = frame_strip(frames, STRIP_HEIGHT)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(simplejpeg.encode_jpeg(np.ascontiguousarray(row), quality=85, colorspace="RGB"))


def gallery_items(rows: list[dict], other: dict[str, dict] | None, limit: int, seed: int) -> tuple[list, str]:
    """The wrong answers (or, comparing two models, the questions exactly one gets right), a seeded sample when more
    than `limit`; and a sentence saying which."""
    if other is None:
        chosen = [(r, "wrong") for r in rows if not r["correct"]]
        what = "wrong answers"
    else:
        chosen = [
            (r, "only this model right" if r["correct"] else "only the other model right")
            for r in rows
            if r["narration_id"] in other and r["correct"] != other[r["narration_id"]]["correct"]
        ]
        what = "questions one model gets right and the other wrong"
    total = len(chosen)
    if total > limit:
        chosen = sorted(random.Random(seed).sample(chosen, limit), key=lambda item: item[0]["narration_id"])
        return chosen, f"{limit} of the {total} {what} (a seeded sample; --gallery-size shows more)"
    return chosen, f"all {total} {what}"


@dataclass(frozen=True)
class ReportOptions:
    """An HTML report of what an EK-100-MQA evaluation gets wrong.

    Args:
        results: an output folder of `llavaction evaluate mqa` (its predictions.jsonl).
        shards: the questions' shard sets (frames and metadata).
        out: the report folder (index.html, figures, strips, analysis.json).
        annotations: EK-100 annotation folder, for class names (default: the questions' own texts).
        compare: another model's output folder on the same questions.
        intersection: with compare, compare on the questions both answered.
        gallery_size: questions shown at most (a seeded sample above it).
        seed: seed of the gallery's sample.
    """

    POSITIONAL = "results"

    results: Path
    shards: list[str]
    out: Path
    annotations: Path | None = None
    compare: Path | None = None
    intersection: bool = False
    gallery_size: int = 500
    seed: int = 0

    def __post_init__(self):
        check_count("gallery_size", self.gallery_size, minimum=1)


ANALYZE_COMMAND = "llavaction analyze"  # the marker of a report folder (utils.files.replaced_folder)


def analyze(run: ReportOptions) -> dict:
    """Write the report, whole (run.out: new, empty or an earlier report, replaced when the new one is complete; any
    other folder refused); returns analysis.json's tables."""
    inputs = {
        "results": run.results,
        "--shards": run.shards,
        "--annotations": run.annotations,
        "--compare": run.compare,
    }
    check_apart({"--out": run.out}, inputs, folders=True)
    with replaced_folder(run.out, ANALYZE_COMMAND) as out:
        return _analyze(run, out)


def _analyze(run: ReportOptions, out: Path) -> dict:
    folder, shards, annotations = run.results, run.shards, run.annotations
    compare, gallery_size, seed, intersection = run.compare, run.gallery_size, run.seed, run.intersection
    predictions = load_predictions(folder)
    other = None
    if compare:
        theirs = load_predictions(compare)
        check_same_rule((compare, theirs), (folder, predictions))
        predictions, other = paired(predictions, theirs, intersection, compare)
    wanted = {r["narration_id"] for r in predictions}
    sizes = location_sizes(shards)
    metas = {}
    for sample in iter_samples(sizes, sizes):
        if sample["__key__"] in wanted:
            metas[sample["__key__"]] = sample_meta(sample)
    missing = sorted(wanted - set(metas))
    if missing:
        raise ValueError(f"{len(missing)} predicted questions are not in the shards, e.g. {missing[:5]}")
    rows = [r | {k: metas[r["narration_id"]][k] for k in ("start_sec", "stop_sec")} for r in predictions]
    verbs, nouns = class_names(annotations, metas)
    analysis = tables(rows, verbs, nouns)
    results = folder / "results.json"
    analysis["benchmark"] = json.loads(results.read_text()).get("benchmark") if results.exists() else None
    if other is not None:
        analysis["comparison"] = compare_records(other, rows).as_dict() | {"a": str(compare), "b": str(folder)}
    analysis["rule"] = scoring_rule(folder, rows) or "the best-scoring option"
    figures = save_figures(analysis, out)
    chosen, note = gallery_items(rows, other, gallery_size, seed)
    if compare and intersection:
        note += f" (on the {len(rows)} questions both evaluations answered)"
    keep = {row["narration_id"] for row, _ in chosen}
    for sample in iter_samples(sizes, sizes):
        if sample["__key__"] in keep:
            strip_image(sample, out / "strips" / strip_file(sample["__key__"]))
    items = [item_html(row, kind, verbs, nouns, other) for row, kind in chosen]
    analysis["gallery"] = {"note": note, "items": sorted(keep)}
    write_json(out / "analysis.json", analysis)
    write_html(
        out,
        f"EK-100-MQA errors of {folder}",
        analysis,
        figures,
        items,
        note,
        [verbs.get(r["verb_class"], "") for r, _ in chosen],
        [nouns.get(r["noun_class"], "") for r, _ in chosen],
    )
    return analysis

"""The benchmark card, in one place: what pins exactly which EK-100-MQA questions were asked.

`build_mqa` writes a card beside each question file (`val_mqa.jsonl` -> `val_mqa.card.json`): the benchmark's name
and version, the build's tier (where distractors come from), K, whether the ground truth is forced in, the seed, the
digest of every input (the annotation CSVs, the predictions file) and of the question file itself, its counts and
the code version. The same inputs and options give the same card on any machine. `extract_frames` copies it into
the shard set (`card.json`), so training's validation knows what it validated on; evaluation, validation logs, the
analysis report and the lmms-eval export carry its name, version and digest into their outputs. A question file
that no longer matches its card's digest is refused, and so is a card whose claims its file contradicts (a hand-edited
`num_options`, tier or count): what a reader carries into results is checked against the file it describes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llavaction.utils.jsonl import write_json

BENCHMARK = "EK-100-MQA"
VERSION = "1.0"
# the layout of a question file's records (benchmark.questions.QuestionRecord), recorded in each card
QUESTION_RECORD_VERSION = 1
CARD_SUFFIX = ".card.json"
SHARD_CARD = "card.json"
TIERS = ("random", "predictions", "annotations")  # where a build's distractors come from (build_mqa --distractors)


class CardError(ValueError):
    """A question file and its card disagree; the message names both."""


def file_digest(path: Path | str) -> str:
    """'sha256:<hex>' of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def card_path(questions: Path | str) -> Path:
    """Where a question file's card lies: beside it, `<stem>.card.json`."""
    questions = Path(questions)
    return questions.with_name(questions.stem + CARD_SUFFIX)


def build_name(tier: str, num_options: int, benchmark: bool) -> str:
    """'EK-100-MQA/annotations/K5', with '+gt' where the ground truth is forced in (`--benchmark`)."""
    return f"{BENCHMARK}/{tier}/K{num_options}" + ("+gt" if benchmark else "")


def make_card(
    *,
    questions: Path,
    split: str,
    tier: str,
    num_options: int,
    benchmark: bool,
    seed: int,
    representation: str,
    predictions: Path | None,
    inputs: list[Path],
    counts: dict[str, int],
    code: str,
) -> dict:
    """The card of a question file just written (its digest read from disk)."""
    return {
        "benchmark": BENCHMARK,
        "version": VERSION,
        "record_version": QUESTION_RECORD_VERSION,
        "name": build_name(tier, num_options, benchmark),
        "split": split,
        "tier": tier,
        "predictions_file": None if predictions is None else predictions.name,
        "num_options": num_options,
        "ground_truth_forced": benchmark,
        "seed": seed,
        "representation": representation,
        "inputs": {path.name: file_digest(path) for path in sorted(inputs, key=lambda p: p.name)},
        "questions": {"file": questions.name, "digest": file_digest(questions)} | counts,
        "code_version": code,
    }


def read_card(questions: Path | str) -> dict | None:
    """The card of a question file, checked against the file's digest; None when it has none (older builds). A
    mismatch is an error naming both files; a question file that is not there, one line saying how to build it (every
    reader asks for the card first)."""
    if not Path(questions).is_file():
        raise FileNotFoundError(
            f"{questions}: no such question file; build it with: python -m data_prep.build_mqa --annotations DIR "
            f"--split train|validation --out {questions}"
        )
    path = card_path(questions)
    if not path.exists():
        return None
    try:
        card = json.loads(path.read_text())
        expected = card["questions"]["digest"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CardError(f"{path}: not a benchmark card ({err})") from None
    if card.get("record_version", 1) > QUESTION_RECORD_VERSION:
        raise CardError(
            f"{path}: its questions are records of version {card['record_version']}; this code reads version "
            f"{QUESTION_RECORD_VERSION} and older: update llavaction"
        )
    actual, facts = read_facts(questions)
    if actual != expected:
        raise CardError(
            f"{questions}: its digest {actual[:19]}... is not the one its card {path} records ({expected[:19]}...): "
            "the file changed after build_mqa wrote it; rebuild it, or remove the card to use it unpinned"
        )
    claim = contradicted_claim(card, facts)
    if claim:
        raise CardError(
            f"{path}: {claim}: the card was edited or belongs to another build; rebuild the file with build_mqa, or "
            "remove the card to use the file unpinned"
        )
    return card


def read_facts(questions: Path | str) -> tuple[str, dict]:
    """The file's digest and what a card claims about it, read in one pass: questions, options per question (their
    distinct counts), questions without the ground truth among the options."""
    digest, count, widths, missing = hashlib.sha256(), 0, set(), 0
    with open(questions, "rb") as stream:
        for line in stream:
            digest.update(line)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # the file's reader names the line
            count += 1
            options = record.get("options") if isinstance(record, dict) else None
            widths.add(len(options) if isinstance(options, list) else None)
            missing += isinstance(record, dict) and record.get("answer_index") is None
    return f"sha256:{digest.hexdigest()}", {"count": count, "widths": widths, "without_ground_truth": missing}


def contradicted_claim(card: dict, facts: dict) -> str | None:
    """What a card claims that its file (read_facts) or the card itself contradicts, as a phrase; None if nothing."""
    try:
        tier, k, forced, counts = card["tier"], card["num_options"], card["ground_truth_forced"], card["questions"]
        name = build_name(tier, k, forced)
    except (KeyError, TypeError):
        return "it lacks the tier, num_options, ground_truth_forced or the questions' counts a card records"
    if card.get("benchmark") != BENCHMARK or tier not in TIERS:
        return (
            f"it names benchmark {card.get('benchmark')!r} and tier {tier!r}; expected {BENCHMARK} and one of {TIERS}"
        )
    if facts["widths"] != {k}:
        found = ", ".join(str(width) for width in sorted(facts["widths"], key=str))
        return f"it claims num_options {k}, but the file's questions have {found} options"
    if counts.get("count") != facts["count"]:
        return f"it claims {counts.get('count')} questions, but the file holds {facts['count']}"
    if counts.get("without_ground_truth") != facts["without_ground_truth"] or forced and facts["without_ground_truth"]:
        return (
            f"it claims {counts.get('without_ground_truth')} questions without the ground truth among the options "
            f"(ground truth forced: {forced}), but the file has {facts['without_ground_truth']}"
        )
    if card.get("name") != name:
        return f"its name {card.get('name')!r} is not its build's (tier {tier}, {k} options, forced {forced}: {name})"
    if (card.get("predictions_file") is not None) != (tier == "predictions"):
        return f"it names predictions file {card.get('predictions_file')!r} for tier {tier!r}"
    return None


def stale_inputs(card: dict, folder: Path | str) -> list[str]:
    """The inputs a card records (annotation CSVs by name) that lie in `folder` with other bytes: the file was built
    from other annotations. Inputs the folder lacks (a predictions file kept elsewhere) are not compared."""
    folder = Path(folder)
    return [
        name
        for name, digest in sorted((card.get("inputs") or {}).items())
        if (folder / name).is_file() and file_digest(folder / name) != digest
    ]


def copy_card_into(shards: Path | str, card: dict) -> None:
    """Give a local shard set the card of the question file its samples were built from (`card.json`)."""
    write_json(Path(shards) / SHARD_CARD, card)


def read_shard_card(location: Path | str) -> dict | None:
    """The card a local shard set carries (`card.json`, copied by extract_frames), None otherwise."""
    path = Path(str(location)) / SHARD_CARD
    if "://" in str(location) or not path.exists():
        return None
    return json.loads(path.read_text())


def card_summary(card: dict | None) -> dict | None:
    """What outputs carry of a card: name, version and the question file's digest."""
    if card is None:
        return None
    return {
        "name": card["name"],
        "version": card["version"],
        "questions_digest": card["questions"]["digest"],
        "num_options": card["num_options"],
    }

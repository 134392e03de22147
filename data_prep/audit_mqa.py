"""The validity audit of EK-100-MQA question files, as text and JSON (llavaction.benchmark.audit).

python -m data_prep.audit_mqa val_mqa.jsonl --annotations DIR --out val_mqa.audit.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llavaction.benchmark.audit import audit_questions, audit_text
from llavaction.benchmark.card import card_summary, read_card, stale_inputs
from llavaction.ek100.annotations import SPLIT_FILES, EpicAnnotations
from llavaction.ek100.lexicon import ClassLexicon
from llavaction.utils.checks import check_count
from llavaction.utils.files import check_apart
from llavaction.utils.jsonl import read_jsonl, write_json
from llavaction.utils.options import main_of

AUDIT_FIELDS = ("narration_id", "options", "option_actions", "verb_class", "noun_class")


@dataclass(frozen=True)
class AuditOptions:
    """The validity audit of EK-100-MQA question files: distractors of the ground truth's action, identical options,
    synonym options, missing ground truths, distractor hardness and two blind baselines.

    Args:
        questions: the question files (build_mqa's JSON lines).
        annotations: the EPIC-KITCHENS-100 annotation folder (class lists; the training split's action counts).
        out: a JSON file of every file's audit (with more examples than the text).
        examples: examples kept per finding.
    """

    POSITIONAL = "questions"

    questions: list[Path]
    annotations: Path
    out: Path | None = None
    examples: int = 3

    def __post_init__(self):
        if not self.questions:
            raise ValueError("name at least one question file")
        check_count("examples", self.examples, minimum=0)


def read_audited(path: Path) -> list[dict]:
    """A question file's records, each with the fields the audit reads (an error names the file and line)."""
    records = read_jsonl(path)
    for line, record in enumerate(records, start=1):
        missing = [name for name in AUDIT_FIELDS if name not in record]
        if missing or len(record["options"]) != len(record["option_actions"]):
            what = f"lacks {', '.join(missing)}" if missing else "has as many options as option_actions"
            raise ValueError(f"{path}:{line}: not an MQA question: it {what if missing else 'does not have ' + what}")
        answer = record.get("answer_index")
        if answer is not None and (isinstance(answer, bool) or answer not in range(len(record["options"]))):
            raise ValueError(
                f"{path}:{line}: answer_index {answer!r} names no option of its {len(record['options'])} "
                "(null: the ground truth is not among them)"
            )
    if not records:
        raise ValueError(f"{path}: holds no question")
    return records


def run(options: AuditOptions) -> int:
    check_apart({"--out": options.out}, {"questions": options.questions, "--annotations": options.annotations})
    split = "train" if (options.annotations / SPLIT_FILES["train"]).exists() else "validation"
    annotations = EpicAnnotations.load(options.annotations, split)
    lexicon = ClassLexicon.load(options.annotations)
    counted = SPLIT_FILES[split] + ("" if split == "train" else " (no training split here: an optimistic baseline)")
    audits = {}
    for path in options.questions:
        card = read_card(path)
        stale = stale_inputs(card, options.annotations) if card else []
        if stale:
            raise ValueError(
                f"{path}: its card records another {stale[0]} than {options.annotations / stale[0]} (digests differ): "
                "it was built from other annotations; audit it with those, or rebuild it from these"
            )
        card = card_summary(card)
        audit = audit_questions(read_audited(path), lexicon, annotations.action_counts, options.examples)
        audit["blind_baselines"]["most_frequent_action"]["counted_in"] = counted
        audits[str(path)] = {"benchmark": card} | audit
        print(audit_text(path.name + (f" ({card['name']} v{card['version']})" if card else ""), audit))
    if options.out:
        write_json(options.out, audits)
    return 0


main = main_of(AuditOptions, run, "python -m data_prep.audit_mqa", __doc__.split("\n\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())

"""The EK-100-MQA figures of a set of prediction records (benchmark.answers.prediction_record), defined once: the
accuracy by the run's rule with its 95% interval (a bootstrap over videos, benchmark.uncertainty), chance, and under
generation the lenient letter parse, the reference's exact rule, parse failures and answers matching no option; the
breakdowns over head/tail classes and seen/unseen participants. Validation (evaluation.module), `evaluate mqa`
(evaluation.mqa), the lmms-eval export's results and the report all read these figures from here."""

from __future__ import annotations

from llavaction.benchmark.uncertainty import cluster_of, record_interval

# breakdown name -> (the record field, the value a question of it carries)
BREAKDOWN = {
    "verb_head": ("verb_tail", False),
    "verb_tail": ("verb_tail", True),
    "noun_head": ("noun_tail", False),
    "noun_tail": ("noun_tail", True),
    "seen_participants": ("unseen_participant", False),
    "unseen_participants": ("unseen_participant", True),
}


def percent(records: list[dict], key: str) -> float | None:
    """The share of records whose boolean `key` holds, in percent (None without records)."""
    return round(100.0 * sum(bool(r.get(key)) for r in records) / len(records), 4) if records else None


def interval(records: list[dict], key: str) -> dict | None:
    """The 95% interval of `percent(records, key)` (a bootstrap over videos) as plain values."""
    found = record_interval(records, key)
    return None if found is None else found.as_dict()


def mqa_figures(records: list[dict], mode: str) -> dict:
    """Every MQA figure of `records`, answered by `mode` ('generate': the paper's rule on generated answers; any
    other: the best option score)."""
    figures = {
        "mode": mode,
        "accuracy": percent(records, "correct"),
        "accuracy_interval": interval(records, "correct"),
        "count": len(records),
        "chance": round(100.0 * sum(1 / max(1, len(r["options"])) for r in records) / len(records), 4)
        if records
        else None,
        "videos": len({cluster_of(r) for r in records}),
    }
    if mode == "generate":
        failures = sum(r["parse_failed"] for r in records)
        figures |= {
            "letter_accuracy": percent(records, "letter_correct"),
            "letter_accuracy_interval": interval(records, "letter_correct"),
            "reference_exact_accuracy": percent(records, "reference_exact_correct"),
            "reference_exact_accuracy_interval": interval(records, "reference_exact_correct"),
            "parse_failures": failures,
            "parse_failure_rate": round(100.0 * failures / max(1, len(records)), 4),
            "no_option_matched": sum(r.get("rule_choice_index") is None for r in records),
        }
    breakdown = {}
    for name, (key, value) in BREAKDOWN.items():
        part = [r for r in records if r.get(key) is value]
        breakdown[name] = {
            "accuracy": percent(part, "correct"),
            "interval": interval(part, "correct"),
            "count": len(part),
        }
    return figures | {"breakdown": breakdown}

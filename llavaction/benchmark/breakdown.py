"""Breakdowns of prediction records by the headline rule: accuracy per class or group, confusions between the true
class and the class of the option the rule chose, how many options share the answer's verb or noun. The analysis
report and the validation figures share them."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from llavaction.benchmark.answers import choice_index
from llavaction.benchmark.uncertainty import cluster_of, clustered_interval


def chosen_class(record: dict, part: int) -> int | None:
    """The verb (part 0) or noun (1) of the option the headline rule chose; None when it chose none."""
    index = choice_index(record)
    if index is None or not record.get("option_actions"):
        return None
    return int(record["option_actions"][index].split(":")[part])


def accuracy_table(rows: list[dict], key, names: dict | None = None, tails: dict | None = None) -> list[dict]:
    """Accuracy per group (most questions first), each with its 95% interval from a bootstrap over videos."""
    groups = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    table = []
    for value, members in sorted(groups.items(), key=lambda item: (-len(item[1]), str(item[0]))):
        hits = [float(bool(r["correct"])) for r in members]
        interval = clustered_interval(hits, [cluster_of(r) for r in members])
        entry = {
            "key": value,
            "count": len(hits),
            "correct": int(sum(hits)),
            "accuracy": round(100.0 * sum(hits) / len(hits), 2),
            "low": round(interval.low, 2),
            "high": round(interval.high, 2),
        }
        if names is not None:
            entry["name"] = names.get(value, str(value))
        if tails is not None:
            entry["tail"] = bool(tails.get(value))
        table.append(entry)
    return table


def confusion(rows: list[dict], part: int, names: dict, top: int) -> dict:
    """Counts of (true class, class of the option the headline rule chose) over the most frequent true classes;
    'none' when the answer matches no option."""
    field = ("verb_class", "noun_class")[part]
    frequent = [c for c, _ in Counter(r[field] for r in rows).most_common(top)]
    columns = frequent + ["other", "none"]
    matrix = np.zeros((len(frequent), len(columns)), dtype=int)
    for row in rows:
        if row[field] not in frequent:
            continue
        chosen = chosen_class(row, part)
        column = "none" if chosen is None else (chosen if chosen in frequent else "other")
        matrix[frequent.index(row[field]), columns.index(column)] += 1
    return {
        "rows": [names.get(c, str(c)) for c in frequent],
        "columns": [names.get(c, str(c)) if isinstance(c, int) else c for c in columns],
        "counts": matrix.tolist(),
    }


def sharing_options(row: dict) -> int:
    """How many wrong options share the answer's verb or noun (how hard the distractors were)."""
    answer = (row["verb_class"], row["noun_class"])
    actions = [tuple(int(x) for x in a.split(":")) for a in row.get("option_actions") or []]
    return sum(1 for a in actions if a != answer and (a[0] == answer[0] or a[1] == answer[1]))

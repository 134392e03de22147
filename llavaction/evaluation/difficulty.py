"""The difficulty sweep of a checkpoint: each build of a `build_mqa --sweep` (tiers x K over the same segments)
evaluated on its own, over one frame store, and accuracy against K per tier tabulated and drawn with each figure's
95% interval and the chance line (difficulty.json, difficulty.png)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from llavaction.benchmark.card import read_card
from llavaction.evaluation.checkpoints import LoadedCheckpoint
from llavaction.evaluation.mqa import MQAEvaluation, evaluate_mqa, evaluation_inputs
from llavaction.utils.figures import pyplot, save_png
from llavaction.utils.files import check_apart, claim_folder, exclusive_output
from llavaction.utils.jsonl import write_json

TABLE_FILE, FIGURE_FILE = "difficulty.json", "difficulty.png"
SWEEP_SUFFIX = ".sweep.json"  # build_mqa's index of a sweep's builds
DIFFICULTY_COMMAND = "llavaction evaluate difficulty"  # the marker of a sweep's folder


def sweep_build(path: Path) -> tuple[str, int]:
    """(tier, K) of a question file, from its benchmark card (a sweep's files all have one)."""
    card = read_card(path)
    if card is None:
        raise ValueError(
            f"{path}: no benchmark card beside it; the difficulty sweep reads each file's tier and K there"
        )
    return card["tier"] + ("+gt" if card["ground_truth_forced"] else ""), int(card["num_options"])


def sweep_files(paths: list[Path]) -> list[Path]:
    """Question files, a sweep's index (`<out>.sweep.json`, written by build_mqa --sweep) standing for its builds."""
    files = []
    for path in paths:
        if path.name.endswith(SWEEP_SUFFIX):
            files += [path.with_name(build["file"]) for build in json.loads(path.read_text())["builds"]]
        else:
            files.append(path)
    return files


def evaluate_difficulty(run: MQAEvaluation) -> dict | None:
    """Evaluate each question file of `run` (or of a sweep's index) into run.out/<stem>, then write the table and the
    figure into run.out; returns the table on the global-zero process."""
    check_apart({"--out": run.out}, evaluation_inputs(run), folders=True)
    builds = {path: sweep_build(path) for path in sweep_files(run.questions)}
    if len(set(builds.values())) < len(builds):
        raise ValueError(f"two question files are the same build (tier and K): {sorted(builds.values())}")
    with exclusive_output(run.out):
        claim_folder(run.out, DIFFICULTY_COMMAND)  # new, empty or an earlier sweep's: each build's folder replaced
        rows, loaded = [], LoadedCheckpoint.open(run.checkpoint, run.tokenizer)  # read once for every build
        for path, (tier, k) in sorted(builds.items(), key=lambda item: item[1]):
            results = evaluate_mqa(replace(run, questions=[path], out=run.out / path.stem), loaded)
            if results is None:
                continue
            interval = results["accuracy_interval"]
            rows.append(
                {
                    "tier": tier,
                    "num_options": k,
                    "file": str(path),
                    "chance": round(100 / k, 2),
                    "count": results["count"],
                }
                | {"accuracy": results["accuracy"], "low": interval["low"], "high": interval["high"]}
            )
        if not rows:
            return None
        table = {"checkpoint": run.checkpoint, "mode": run.mode, "rows": rows}
        write_json(run.out / TABLE_FILE, table)
        save_png(difficulty_figure(rows), run.out / FIGURE_FILE)
        return table


def difficulty_figure(rows: list[dict]):
    """Accuracy against K, one line per tier with its intervals, and chance (100/K) dashed."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for tier in dict.fromkeys(row["tier"] for row in rows):
        mine = [row for row in rows if row["tier"] == tier]
        ks = [row["num_options"] for row in mine]
        accuracy = [row["accuracy"] for row in mine]
        errors = [
            [a - row["low"] for a, row in zip(accuracy, mine)],
            [row["high"] - a for a, row in zip(accuracy, mine)],
        ]
        axis.errorbar(ks, accuracy, yerr=errors, marker="o", capsize=3, label=tier)
    ks = sorted({row["num_options"] for row in rows})
    axis.plot(ks, [100 / k for k in ks], "k--", linewidth=1, label="chance")
    axis.set_xlabel("options per question (K)")
    axis.set_ylabel("accuracy (%), 95% interval")
    axis.set_xticks(ks)
    axis.set_ylim(0, 100)
    axis.legend()
    axis.set_title("EK-100-MQA difficulty: accuracy against K per distractor tier")
    figure.tight_layout()
    return figure

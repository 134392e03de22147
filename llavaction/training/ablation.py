"""Ablation rows (small YAML diffs) run and collected into one table (`llavaction ablate` is the command line).

A row's first line names the config it modifies, `# base: PATH`: the experiment itself, or another row (the paper's
cumulative rows each add one method to the row before). A row trains with the whole chain stacked, from `--base` to
the row; a row whose chain does not start at `--base` is refused. A row without the line modifies `--base` directly.

    llavaction ablate --base experiments/demo.yaml experiments/ablations/demo/*.yaml --out runs/ablations
    llavaction ablate --base experiments/llavaction_7b.yaml experiments/ablations/7b/*.yaml \
        --out runs/ablations_7b --slurm            # one SLURM array task per row
    llavaction ablate ... --dry_run      # print each merged config, run nothing
    llavaction ablate ... --collect      # only gather finished rows into the table

Rows run one after the other here (or as a SLURM job array); a finished row (its result.json exists) is skipped on a
rerun. Each row writes under `--out/<row>`: its run (`trainer.default_root_dir`, with its checkpoints and logs) and,
when the chain exports one, its original-layout export (`model.export_dir`), so no row overwrites another's. Anything
after `--` goes to every `train.py fit` call. `--dry-run` merges the YAML only (no model, no data): each row's changes
against --base and its directories.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llavaction.benchmark.uncertainty import p_value_text, paired_comparison
from llavaction.utils.configs import config_chain, differences, merged_config, named_base
from llavaction.utils.figures import pyplot, save_png
from llavaction.utils.files import atomic_output, check_apart
from llavaction.utils.jsonl import read_jsonl, write_json

RESULT = "result.json"
QUESTIONS = "validation_questions.jsonl"
COLUMNS = ("val/mqa_accuracy", "val/chance", "val/questions")
DIFFERENCE = "vs previous row"
BOUNDS = ("_low", "_high")


class AblationError(ValueError):
    pass


def chain(base: Path, row: Path) -> list[Path]:
    """The configs to stack for a row, from its farthest base to the row; --base must be in the chain."""
    configs = config_chain(row)
    if named_base(row) is None:  # a bare row modifies --base
        return [*config_chain(base), *configs]
    if base.resolve() not in configs:
        raise AblationError(
            f"{row}: its chain of bases ({' <- '.join(p.name for p in configs)}) does not include --base {base}"
        )
    return configs


def row_directories(configs: list[Path], run_dir: Path) -> dict[str, Path | None]:
    """Where a row writes: its run folder, checkpoints (RunCheckpoint's, under the run) and export (when its chain
    sets model.export_dir). A checkpoint callback with a fixed dirpath would be shared by every row: refused."""
    config = merged_config(configs)
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        if isinstance(callback, dict) and (callback.get("init_args") or {}).get("dirpath"):
            raise AblationError(
                f"{configs[-1]}: a checkpoint callback writes to the fixed dirpath "
                f"{callback['init_args']['dirpath']}, which every row would share; leave dirpath unset"
            )
    export = (config.get("model") or {}).get("export_dir")
    return {"run": run_dir, "checkpoints": run_dir / "checkpoints", "export": run_dir / "export" if export else None}


def fit_command(configs: list[Path], run_dir: Path, extra: list[str]) -> list[str]:
    stacked = [arg for config in configs for arg in ("--config", str(config))]
    export = row_directories(configs, run_dir)["export"]
    own = [f"--trainer.default_root_dir={run_dir}"] + ([f"--model.export_dir={export}"] if export else [])
    return [sys.executable, "-m", "llavaction.cli.train", "fit", *stacked, *own, *extra]


def describe_row(base: Path, row: Path, out: Path) -> str:
    """A row's chain, its changes against --base and its directories (from the YAML alone)."""
    configs = chain(base, row)
    lines = [f"# ---- {row.stem}: {' + '.join(p.name for p in configs)}"]
    changes = differences(merged_config(config_chain(base)), merged_config(configs))
    lines += [f"  {change}" for change in changes] or ["  (no change against --base)"]
    folders = row_directories(configs, out / row.stem)
    lines.append("  writes: " + ", ".join(f"{k} {v}" for k, v in folders.items() if v is not None))
    return "\n".join(lines)


def run_row(base: Path, row: Path, out: Path, extra: list[str]) -> dict:
    """Train one row; its final validation figures become out/<row>/result.json."""
    from llavaction.training.validation import QUESTIONS_FILE, RESULTS_FILE  # Lightning's only where a row trains

    run_dir = out / row.stem
    resume = ["--ckpt_path=last"] if (run_dir / "checkpoints" / "last.ckpt").exists() else []  # an interrupted row
    if subprocess.run(fit_command(chain(base, row), run_dir, [*extra, *resume])).returncode != 0:
        raise AblationError(f"row {row.stem}: training failed (its output is above; the run is in {run_dir})")
    found = sorted(run_dir.rglob(RESULTS_FILE), key=lambda p: p.stat().st_mtime)
    if not found:
        raise AblationError(f"{row.stem}: the run wrote no {RESULTS_FILE} (no validation ran?)")
    result = json.loads(found[-1].read_text()) | {"row": row.stem}
    questions = found[-1].parent / QUESTIONS_FILE
    if questions.exists():  # kept beside result.json: the next row is compared with this one question by question
        shutil.copyfile(questions, run_dir / QUESTIONS)
    write_json(run_dir / RESULT, result)
    return result


def row_differences(results: list[dict], out: Path) -> list[str]:
    """Each row against the row before, on the same validation questions: the headline accuracy's difference with
    its 95% interval over videos and a paired p-value ('' for the first row, or where a row lacks its questions)."""
    cells = [""]
    for before, after in zip(results, results[1:]):
        files = [out / r["row"] / QUESTIONS for r in (before, after)]
        if not all(f.exists() for f in files):
            cells.append("")
            continue
        a, b = ({q["narration_id"]: q for q in read_jsonl(f)} for f in files)
        name = f"mqa_accuracy_{after['scoring'][0]}"
        shared = [n for n in b if n in a and name in a[n]["hits"] and name in b[n]["hits"]]
        if len(shared) != len(b) or len(shared) != len(a):
            cells.append(f"other questions ({len(a)} and {len(b)})")
            continue
        comparison = paired_comparison(
            [float(a[n]["hits"][name]) for n in shared],
            [float(b[n]["hits"][name]) for n in shared],
            [b[n]["video_id"] for n in shared],
        )
        d = comparison.difference
        cells.append(f"{d.value:+.1f} [{d.low:+.1f}, {d.high:+.1f}], p = {p_value_text(comparison.p_value)}")
    return cells


def table_cell(result: dict, column: str) -> str:
    """A figure with its interval where the run logged one ('51.8 [42.0, 60.1]')."""
    value = result.get(column, "")
    if not isinstance(value, float):
        return str(value)
    low, high = result.get(f"{column}_low"), result.get(f"{column}_high")
    return f"{value:.1f}" + (f" [{low:.1f}, {high:.1f}]" if low is not None and high is not None else "")


def write_table(results: list[dict], out: Path) -> None:
    """results.csv, results.md and results.png (a bar chart of the headline accuracy), each written whole."""
    versus = row_differences(results, out)
    results = [r | {DIFFERENCE: cell} for r, cell in zip(results, versus)]
    extra = sorted(
        {k for r in results for k in r if k.startswith("val/") and k not in COLUMNS and not k.endswith(BOUNDS)}
    )
    columns = ["row", *COLUMNS, DIFFERENCE, *extra]
    csv_columns = columns + sorted({k for r in results for k in r if k.startswith("val/") and k.endswith(BOUNDS)})
    with atomic_output(out / "results.csv") as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        lines.append("| " + " | ".join([r["row"], *(table_cell(r, c) for c in columns[1:])]) + " |")
    lines.append("")
    lines.append(
        "Accuracies in percent with their 95% interval (a bootstrap over the validation videos); "
        f"`{DIFFERENCE}`: the headline accuracy's difference from the row above, on the same questions, with its "
        "interval and a paired p-value."
    )
    with atomic_output(out / "results.md") as f:
        f.write("\n".join(lines) + "\n")
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(1.2 + 0.9 * len(results), 3.5))
    axis.bar([r["row"] for r in results], [r["val/mqa_accuracy"] for r in results])
    if results:
        axis.axhline(results[0]["val/chance"], color="grey", linestyle="--", label="chance")
        axis.legend()
    axis.set(ylabel="validation MQA accuracy (%)", ylim=(0, 100))
    axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    save_png(figure, out / "results.png", dpi=120)


def slurm_script(base: Path, rows: list[Path], out: Path, extra: list[str]) -> str:
    """A job array, one task per row (an interrupted row's task, rerun, continues its last checkpoint); Lightning
    reads the SLURM environment of each task's srun."""
    commands = [shlex.join(fit_command(chain(base, row), out / row.stem, extra)) for row in rows]
    last = [shlex.quote(str(out / row.stem / "checkpoints" / "last.ckpt")) for row in rows]
    collect = [sys.executable, "-m", "llavaction.cli.ablate", "--base", str(base), *map(str, rows), "--out", str(out)]
    return "\n".join(
        [
            "#!/bin/bash",
            f"#SBATCH --job-name=llavaction-ablate --array=0-{len(rows) - 1}",
            "#SBATCH --nodes=1 --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task=12 --time=24:00:00",
            "set -euo pipefail",
            "COMMANDS=(" + " ".join(shlex.quote(c) for c in commands) + ")",
            "LAST=(" + " ".join(last) + ")",
            'RESUME=""; if [ -e "${LAST[$SLURM_ARRAY_TASK_ID]}" ]; then RESUME="--ckpt_path=last"; fi',
            'eval "srun ${COMMANDS[$SLURM_ARRAY_TASK_ID]} $RESUME"',
            f"# then: {shlex.join([*collect, '--collect'])}",
            "",
        ]
    )


@dataclass(frozen=True)
class AblationRun:
    """Ablation rows trained one after the other (or as a SLURM job array) and collected into one table.

    Args:
        base: the base config the rows modify.
        rows: the row configs, in table order.
        out: the folder of the rows' runs and of the table (results.md, results.csv, results.png).
        slurm: write (and submit, where sbatch exists) a SLURM job array instead of running here.
        dry_run: print each row's changes against base and its folders; run nothing.
        collect: only gather finished rows into the table.
    """

    POSITIONAL = "rows"

    base: Path
    rows: list[Path]
    out: Path
    slurm: bool = False
    dry_run: bool = False
    collect: bool = False

    def __post_init__(self):
        if sum((self.slurm, self.dry_run, self.collect)) > 1:
            raise ValueError("--slurm, --dry_run and --collect exclude each other")
        missing = [str(p) for p in [self.base, *self.rows] if not Path(p).exists()]
        if missing:
            raise ValueError(f"config(s) not found: {', '.join(missing)}")
        if len({Path(r).stem for r in self.rows}) != len(self.rows):
            raise ValueError("two rows share a file name; row names must be unique")
        for row in self.rows:
            chain(Path(self.base), Path(row))


@contextlib.contextmanager
def quiet_seeding() -> Iterator[None]:
    """Lightning's "Seed set to N" line left out while a config is only parsed."""
    logger = logging.getLogger("lightning.fabric.utilities.seed")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_ablation(run: AblationRun, extra: list[str], config_problem=None) -> int:
    """Run (or describe, submit, collect) the rows; `extra` goes to every `train.py fit` call. `config_problem(configs,
    extra)`, the training CLI's own check (llavaction.cli.train), says why a row's config would be refused: every row
    is checked before anything runs, so a typo'd key in the last row is not found hours after the first trained."""
    base, rows, out = Path(run.base), [Path(r) for r in run.rows], Path(run.out)
    check_apart({"--out": out}, {"--base": base, "rows": rows}, folders=True)
    for row in rows if config_problem is not None and not run.collect else []:
        with quiet_seeding():  # each row's parse seeds as a fit would: one "Seed set to 0" line per row otherwise
            problem = config_problem(chain(base, row), extra)
        if problem:
            raise AblationError(f"{row}: train.py fit would refuse this row: {problem}")
    if run.dry_run:
        for row in rows:
            print(describe_row(base, row, out))
        if extra:
            print(f"# every row also gets: {shlex.join(extra)}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if run.slurm:
        script = out / "ablate.sbatch"
        with atomic_output(script) as stream:
            stream.write(slurm_script(base, rows, out, extra))
        if shutil.which("sbatch") is None:
            print(f"wrote {script}; submit it with: sbatch {script}")
            return 0
        subprocess.run(["sbatch", str(script)], check=True)
        return 0
    results = []
    for row in rows:
        done = out / row.stem / RESULT
        if done.exists():
            print(f"{row.stem}: finished earlier, skipped", flush=True)
            results.append(json.loads(done.read_text()))
        elif run.collect:
            print(f"{row.stem}: not finished yet", flush=True)
        else:
            print(f"{row.stem}: training", flush=True)
            results.append(run_row(base, row, out, extra))
    write_table(results, out)
    print((out / "results.md").read_text())
    return 0

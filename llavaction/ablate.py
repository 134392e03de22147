"""Run a list of ablation rows (small YAML diffs) and collect the table.

A row's first line names the config it modifies, `# base: PATH`: the experiment itself, or another row (the paper's
cumulative rows each add one method to the row before). A row trains with the whole chain stacked, from `--base` to
the row; a row whose chain does not start at `--base` is refused. A row without the line modifies `--base` directly.

    python -m llavaction.ablate --base experiments/demo.yaml experiments/ablations/demo/*.yaml --out runs/ablations
    python -m llavaction.ablate --base experiments/llavaction_7b.yaml experiments/ablations/7b/*.yaml \
        --out runs/ablations_7b --slurm            # one SLURM array task per row
    python -m llavaction.ablate ... --dry-run      # print each merged config, run nothing
    python -m llavaction.ablate ... --collect      # only gather finished rows into the table

Rows run one after the other here (or as a SLURM job array); a finished row (its result.json exists) is skipped on a
rerun. Each row writes under `--out/<row>`: its run (`trainer.default_root_dir`, with its checkpoints and logs) and,
when the chain exports one, its original-layout export (`model.export_dir`), so no row overwrites another's. Anything
after `--` goes to every `train.py fit` call. `--dry-run` merges the YAML only (no model, no data): each row's changes
against --base and its directories.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from llavaction.cli_errors import ArgumentParser, add_debug_flag, run_cli
from llavaction.configs import ConfigChainError, config_chain, differences, merged_config, named_base
from llavaction.jsonl import write_json

RESULT = "result.json"
COLUMNS = ("val/mqa_accuracy", "val/chance", "val/questions")


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
    return [sys.executable, "-m", "llavaction.train", "fit", *stacked, *own, *extra]


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
    from llavaction.callbacks import RESULTS_FILE  # Lightning's import only where a row trains

    run_dir = out / row.stem
    if subprocess.run(fit_command(chain(base, row), run_dir, extra)).returncode != 0:
        raise AblationError(f"row {row.stem}: training failed (its output is above; the run is in {run_dir})")
    found = sorted(run_dir.rglob(RESULTS_FILE), key=lambda p: p.stat().st_mtime)
    if not found:
        raise AblationError(f"{row.stem}: the run wrote no {RESULTS_FILE} (no validation ran?)")
    result = json.loads(found[-1].read_text()) | {"row": row.stem}
    write_json(run_dir / RESULT, result)
    return result


def write_table(results: list[dict], out: Path) -> None:
    """results.csv, results.md and results.png (a bar chart of the headline accuracy)."""
    extra = sorted({k for r in results for k in r if k.startswith("val/") and k not in COLUMNS})
    columns = ["row", *COLUMNS, *extra]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        cells = [r["row"]] + [f"{r[c]:.1f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(1.2 + 0.9 * len(results), 3.5))
    axis.bar([r["row"] for r in results], [r["val/mqa_accuracy"] for r in results])
    if results:
        axis.axhline(results[0]["val/chance"], color="grey", linestyle="--", label="chance")
        axis.legend()
    axis.set(ylabel="validation MQA accuracy (%)", ylim=(0, 100))
    axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    figure.savefig(out / "results.png", dpi=120)
    plt.close(figure)


def slurm_script(base: Path, rows: list[Path], out: Path, extra: list[str]) -> str:
    """A job array, one task per row; Lightning reads the SLURM environment of each task's srun."""
    commands = [shlex.join(fit_command(chain(base, row), out / row.stem, extra)) for row in rows]
    collect = [sys.executable, "-m", "llavaction.ablate", "--base", str(base), *map(str, rows), "--out", str(out)]
    return "\n".join(
        [
            "#!/bin/bash",
            f"#SBATCH --job-name=llavaction-ablate --array=0-{len(rows) - 1}",
            "#SBATCH --nodes=1 --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task=12 --time=24:00:00",
            "set -euo pipefail",
            "COMMANDS=(" + " ".join(shlex.quote(c) for c in commands) + ")",
            'eval "srun ${COMMANDS[$SLURM_ARRAY_TASK_ID]}"',
            f"# then: {shlex.join([*collect, '--collect'])}",
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="base config the rows modify")
    parser.add_argument("rows", type=Path, nargs="+", help="row configs, in table order")
    parser.add_argument("--out", type=Path, required=True)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--slurm", action="store_true", help="submit a SLURM job array instead of running here")
    mode.add_argument(
        "--dry-run", action="store_true", help="print each row's changes against --base and its folders, run nothing"
    )
    mode.add_argument("--collect", action="store_true", help="only gather finished rows")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    missing = [str(p) for p in [args.base, *args.rows] if not p.exists()]
    if missing:
        parser.error(f"config(s) not found: {', '.join(missing)}")
    if len({r.stem for r in args.rows}) != len(args.rows):
        parser.error("two rows share a file name; row names must be unique")
    try:
        for row in args.rows:
            chain(args.base, row)
    except (AblationError, ConfigChainError) as err:
        parser.error(str(err))
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    return run_cli(lambda: run(args, extra), debug=args.debug)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    if args.dry_run:
        for row in args.rows:
            print(describe_row(args.base, row, args.out))
        if extra:
            print(f"# every row also gets: {shlex.join(extra)}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.slurm:
        script = args.out / "ablate.sbatch"
        script.write_text(slurm_script(args.base, args.rows, args.out, extra))
        if shutil.which("sbatch") is None:
            print(f"wrote {script}; submit it with: sbatch {script}")
            return 0
        subprocess.run(["sbatch", str(script)], check=True)
        return 0
    results = []
    for row in args.rows:
        done = args.out / row.stem / RESULT
        if done.exists():
            print(f"{row.stem}: finished earlier, skipped", flush=True)
            results.append(json.loads(done.read_text()))
        elif args.collect:
            print(f"{row.stem}: not finished yet", flush=True)
        else:
            print(f"{row.stem}: training", flush=True)
            results.append(run_row(args.base, row, args.out, extra))
    write_table(results, args.out)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

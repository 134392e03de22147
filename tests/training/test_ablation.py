"""The ablation runner: two tiny rows trained and tabled, dry runs, cumulative chains."""

import json
import re

import pytest

from llavaction.cli.ablate import main as ablate
from tests.fit_helpers import demo_args
from tests.helpers import ROOT


def test_runner_on_two_tiny_rows(demo_dir, demo_shards, tmp_path, capsys):
    rows = []
    for frames in (4, 8):
        row = tmp_path / f"frames_{frames}.yaml"
        row.write_text(f"data:\n  num_frames: {frames}\n")
        rows.append(row)
    extra = demo_args(demo_dir, demo_shards, tmp_path)[3:]  # everything after `fit --config demo.yaml`
    extra = [a for a in extra if not a.startswith("--trainer.default_root_dir")]
    extra += [
        "--trainer.max_epochs=1",
        "--data.loader.samples_per_epoch=8",
        "--trainer.check_val_every_n_epoch=1",
        "--model.evaluation.mqa_scoring=[letter]",
    ]
    base = ROOT / "experiments" / "demo.yaml"
    out = tmp_path / "table"
    ablate(["--base", str(base), *map(str, rows), "--out", str(out), "--", *extra])
    table = (out / "results.md").read_text()
    assert "frames_4" in table and "frames_8" in table
    # each accuracy with its interval over the 2 validation videos; the second row against the first, paired
    first, second = (line for line in table.splitlines() if line.startswith(("| frames_4", "| frames_8")))
    assert re.search(r"\| \d+\.\d \[\d+\.\d, \d+\.\d\] \|", first)
    assert re.search(r"\| [+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\], p = \d\.\d{3} \|", second)
    assert (out / "frames_8" / "validation_questions.jsonl").exists()
    assert (out / "results.csv").exists() and (out / "results.png").stat().st_size > 0
    assert json.loads((out / "frames_4" / "result.json").read_text())["val/questions"] == 8
    capsys.readouterr()
    ablate(["--base", str(base), *map(str, rows), "--out", str(out), "--", *extra])
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2
    ablate(["--base", str(base), str(rows[0]), "--out", str(out), "--slurm", "--", *extra])
    script = (out / "ablate.sbatch").read_text()
    assert "--array=0-0" in script and "srun" in script


def test_dry_run_prints_changes_and_directories_without_building(tmp_path, capfd, monkeypatch):
    import subprocess

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a dry run starts nothing"))
    row = tmp_path / "frames_16.yaml"
    row.write_text("data:\n  num_frames: 16\n")
    ablate(["--base", str(ROOT / "experiments" / "demo.yaml"), str(row), "--out", str(tmp_path / "o"), "--dry-run"])
    out = capfd.readouterr().out
    assert "# ---- frames_16" in out and "data.num_frames: 8 -> 16" in out
    assert f"run {tmp_path / 'o' / 'frames_16'}" in out and "export" not in out.split("writes:")[1]
    # the 7B rows: each under its own folder, the export included
    rows = sorted((ROOT / "experiments" / "ablations" / "7b").glob("*.yaml"))
    base = ROOT / "experiments" / "llavaction_7b.yaml"
    assert len(rows) == 11
    ablate(["--base", str(base), *map(str, rows), "--out", str(tmp_path / "abl"), "--dry-run"])
    out, err = capfd.readouterr()
    assert "Seed set to" not in out + err  # each row is parsed, not run: no seeding lines
    for row in rows:
        block = out.split(f"# ---- {row.stem}:")[1].split("# ----")[0]
        assert f"export {tmp_path / 'abl' / row.stem / 'export'}" in block
    assert 'model.action.mode: "one_token" -> null' in out.split("# ---- 01_random_distractors")[1]


def test_cumulative_rows_stack_their_chain_and_refuse_another_base(tmp_path, capfd):
    demo_rows = ROOT / "experiments" / "ablations" / "demo"
    row = demo_rows / "03_temporal_detection.yaml"
    ablate(["--base", str(ROOT / "experiments" / "demo.yaml"), str(row), "--out", str(tmp_path / "o"), "--dry-run"])
    out = capfd.readouterr().out
    assert "demo.yaml + " in out and "01_random_distractors.yaml + " in out and "02_hard_distractors.yaml + " in out
    train = [line for line in out.splitlines() if line.strip().startswith("data.train:")][0]
    assert "train_mqa_random" not in train.split(" -> ")[1]  # row 2 replaced row 1's source
    assert train.split(" -> ")[1].count('"task": "temporal"') == 1
    other = ["--base", str(ROOT / "experiments" / "llavaction_7b.yaml"), str(row), "--out", str(tmp_path / "x")]
    assert ablate(other) == 2
    assert "does not include --base" in capfd.readouterr().err


def test_the_table_is_written_whole(tmp_path, monkeypatch):
    import csv

    from llavaction.training.ablation import write_table

    rows = [{"row": "01", "val/mqa_accuracy": 40.0, "val/chance": 20.0, "val/questions": 8.0}]
    write_table(rows, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["results.csv", "results.md", "results.png"]

    def full(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", full)
    with pytest.raises(OSError, match="No space left"):
        write_table([rows[0] | {"val/mqa_accuracy": 90.0}], tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_row_the_training_cli_would_refuse_is_refused_before_any_row_runs(tmp_path, capfd):
    good, typo = tmp_path / "a_frames.yaml", tmp_path / "b_typo.yaml"
    good.write_text("data:\n  num_frames: 4\n")
    typo.write_text("model:\n  optimzer:\n    lr: 1.0e-4\n")
    base = str(ROOT / "experiments" / "demo.yaml")
    for extra in (["--dry-run"], []):
        assert ablate(["--base", base, str(good), str(typo), "--out", str(tmp_path / "o"), *extra]) == 2
        error = capfd.readouterr().err.strip().splitlines()[-1]
        assert (
            error
            == f"error: {typo}: train.py fit would refuse this row: Group 'model' does not accept option 'optimzer.lr'"
        )
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written

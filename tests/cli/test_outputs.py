"""No command writes over one of its own inputs (llavaction.utils.files.check_apart): an output that is an input, a
file of an input folder, or (for a folder written whole) a folder holding an input is refused in one line, before
anything is read or written, and the input is left as it was. One table, every command that writes."""

import json
import shutil

import pytest

from tests.fit_helpers import demo_args
from tests.helpers import ROOT, one_line_exit

PRECIOUS = "precious, not to be overwritten\n"


def cli(name):
    """A command's main(argv), imported when the case runs."""
    import importlib

    module, _, sub = name.partition(" ")
    main = importlib.import_module(module).main
    return (lambda argv: main([sub, *argv])) if sub else main


@pytest.fixture
def files(tmp_path, original_checkpoint, demo_shards):
    """Inputs of every kind, each holding PRECIOUS (a command must refuse before it reads them), and real ones where a
    command parses its config before it runs."""
    made = {}
    for name in ("q.jsonl", "c.json", "s.npz", "p.jsonl", "v.mp4", "base.yaml"):
        made[name] = tmp_path / name
        made[name].write_text(PRECIOUS)
    for folder in ("annotations", "videos", "results"):
        made[folder] = tmp_path / folder
        made[folder].mkdir()
    made["csv"] = made["annotations"] / "EPIC_100_validation.csv"
    made["prediction"] = made["results"] / "predictions.jsonl"
    for path in (made["csv"], made["prediction"]):
        path.write_text(PRECIOUS)
    made["shards"] = tmp_path / "shards"
    shutil.copytree(demo_shards["validation_mqa"], made["shards"])
    made["checkpoint"] = tmp_path / "checkpoint"
    shutil.copytree(original_checkpoint, made["checkpoint"])
    made["row"] = tmp_path / "row.yaml"
    shutil.copyfile(ROOT / "experiments" / "demo.yaml", made["base.yaml"])
    made["row"].write_text(f"# base: {made['base.yaml']}\nseed_everything: 1\n")
    return made


def snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# (command, its arguments with the output at an input's path, what the error names)
CASES = {
    "build_mqa over a CSV it reads": (
        "data_prep.build_mqa",
        lambda f: ["--annotations", f["annotations"], "--split", "validation", "--out", f["csv"]],
        "lies in this command's input --annotations",
    ),
    "build_mqa, two outputs at one path": (
        "data_prep.build_mqa",
        lambda f: (
            ["--annotations", f["annotations"], "--split", "validation", "--out", f["q.jsonl"]]
            + ["--temporal-out", f["q.jsonl"]]
        ),
        "--out and --temporal_out are the same file",
    ),
    "build_mqa over its predictions": (
        "data_prep.build_mqa",
        lambda f: (
            ["--annotations", f["annotations"], "--split", "validation", "--distractors", "predictions"]
            + ["--predictions", f["p.jsonl"], "--out", f["p.jsonl"]]
        ),
        "is also this command's input --predictions",
    ),
    "prompts render": (
        "llavaction.cli.prompts render",
        lambda f: ["--questions", f["q.jsonl"], "--num-frames", "8", "--out", f["q.jsonl"]],
        "is also this command's input --questions",
    ),
    "extract_frames": (
        "data_prep.extract_frames",
        lambda f: ["--questions", f["q.jsonl"], "--videos", f["videos"], "--out", f["q.jsonl"]],
        "is also this command's input --questions",
    ),
    "extract_frames into a folder holding its questions": (
        "data_prep.extract_frames",
        lambda f: ["--questions", f["csv"], "--videos", f["videos"], "--out", f["annotations"]],
        "holds this command's input --questions",
    ),
    "build_replay": (
        "data_prep.build_replay",
        lambda f: ["--conversations", f["c.json"], "--videos", f["videos"], "--out", f["c.json"]],
        "is also this command's input --conversations",
    ),
    "audit_mqa": (
        "data_prep.audit_mqa",
        lambda f: [f["q.jsonl"], "--annotations", f["annotations"], "--out", f["q.jsonl"]],
        "is also this command's input questions",
    ),
    "evaluate mqa into its shards": (
        "llavaction.cli.evaluate mqa",
        lambda f: (
            ["--questions", f["q.jsonl"], "--shards", f["shards"], "--checkpoint", f["checkpoint"]]
            + ["--out", f["shards"]]
        ),
        "is also this command's input --shards",
    ),
    "evaluate difficulty into a folder holding its questions": (
        "llavaction.cli.evaluate difficulty",
        lambda f: (
            ["--questions", f["prediction"], "--frames", f["shards"], "--checkpoint", f["checkpoint"]]
            + ["--out", f["results"]]
        ),
        "holds this command's input --questions",
    ),
    "evaluate ek100": (
        "llavaction.cli.evaluate ek100",
        lambda f: ["--scores", f["s.npz"], "--annotations", f["annotations"], "--out", f["s.npz"]],
        "is also this command's input --scores",
    ),
    "evaluate class-scores": (
        "llavaction.cli.evaluate class-scores",
        lambda f: ["--predictions", f["p.jsonl"], "--out", f["p.jsonl"]],
        "is also this command's input --predictions",
    ),
    "evaluate candidates": (
        "llavaction.cli.evaluate candidates",
        lambda f: ["--scores", f["s.npz"], "--out", f["s.npz"]],
        "is also this command's input --scores",
    ),
    "evaluate submission": (
        "llavaction.cli.evaluate submission",
        lambda f: ["--scores", f["s.npz"], "--sls_pt", "1", "--sls_tl", "1", "--sls_td", "1", "--out", f["s.npz"]],
        "is also this command's input --scores",
    ),
    "evaluate lmms-export": (
        "llavaction.cli.evaluate lmms-export",
        lambda f: ["--questions", f["q.jsonl"], "--shards", f["shards"], "--out", f["q.jsonl"]],
        "is also this command's input --questions",
    ),
    "evaluate compare": (
        "llavaction.cli.evaluate compare",
        lambda f: [f["results"], f["results"], "--out", f["prediction"]],
        "lies in this command's input runs",
    ),
    "export": (
        "llavaction.cli.export",
        lambda f: ["--checkpoint", f["checkpoint"], "--out", f["checkpoint"]],
        "is also this command's input --checkpoint",
    ),
    "analyze": (
        "llavaction.cli.analyze",
        lambda f: [f["results"], "--shards", f["shards"], "--out", f["results"]],
        "is also this command's input results",
    ),
    "predict": (
        "llavaction.cli.predict",
        lambda f: (
            ["--checkpoint", f["checkpoint"], "--video", f["v.mp4"], "--start", "0", "--end", "1"]
            + ["--strip", f["v.mp4"]]
        ),
        "is also this command's input --video",
    ),
    "ablate": (
        "llavaction.cli.ablate",
        lambda f: ["--base", f["base.yaml"], f["row"], "--out", f["row"].parent, "--dry-run"],
        "holds this command's input --base",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_no_command_writes_over_its_own_input(case, files, tmp_path, capsys):
    command, arguments, expected = CASES[case]
    before = snapshot(tmp_path)
    error = one_line_exit(capsys, lambda: cli(command)([str(a) for a in arguments(files)]))
    assert expected in error and "nothing was changed" in error or "the same file" in error, error
    assert snapshot(tmp_path) == before


def test_plan_refuses_to_write_its_rows_over_what_it_reads(demo_dir, demo_shards, tmp_path, capsys):
    from llavaction.cli.plan import main as plan

    store = tmp_path / "train_mqa"
    shutil.copytree(demo_shards["train_mqa"], store)
    train = json.dumps([{"path": str(store), "task": "mqa"}])
    args = [*demo_args(demo_dir, demo_shards, tmp_path / "run")[1:], f"--data.train={train}"]
    before = snapshot(store)
    error = one_line_exit(capsys, lambda: plan([*args, "--out", str(store / "index.json")]))
    assert f"lies in this command's input data {store}" in error and snapshot(store) == before
    config = ROOT / "experiments" / "demo.yaml"
    error = one_line_exit(capsys, lambda: plan([*args, "--out", str(config)]))
    assert "is also this command's input --config" in error

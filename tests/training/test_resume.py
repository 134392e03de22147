"""Resuming on another layout (llavaction.training.resume): the global batch kept or the resume refused, each sample
of the interrupted epoch read once through the training loaders, and fits resumed with another per-device batch or
after `trainer.max_steps` stopped them inside an epoch."""

import csv
import json
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from llavaction.training.resume import ResumedPosition, apply_resume, plan_resume
from tests.fit_helpers import csv_logged, demo_args, record_keys, step_checkpoint, step_checkpoints
from tests.helpers import datamodule, loader_state, one_line_exit, write_checkpoint


def test_the_global_batch_is_kept_or_the_resume_refused(demo_dir, demo_shards, tmp_path):
    """12 = 4 ranks x batch 1 x accumulation 3: kept at 2, 3 and 1 ranks; 5 ranks cannot keep it; another batch
    where it divides; the reference's megabatch kept likewise; a checkpoint without its accumulation refused."""
    dm = datamodule(demo_dir, demo_shards, batch_size=1, samples_per_epoch=24)
    path = write_checkpoint(tmp_path / "four.ckpt", loader_state(dm, 4, 3, accumulate=3))
    assert plan_resume(path, dm, 4, 3).accumulate is None and not plan_resume(path, dm, 4, 3).replan  # the same
    for world, accumulate in ((2, 6), (3, 4), (1, 12)):
        resume = plan_resume(path, dm, world, 3)
        assert resume.accumulate == accumulate and resume.epoch == 0 and resume.replan and resume.parts[0].batches == 3
    with pytest.raises(
        ValueError,
        match=r"global batch is 12 \(4 ranks x batch 1 x accumulation 3\); 5 ranks x "
        r"batch 1 cannot keep it: resume on 1, 2, 3, 4, 6 or 12 ranks",
    ):
        plan_resume(path, dm, 5, 3)
    by_two = datamodule(demo_dir, demo_shards, batch_size=2, samples_per_epoch=24)
    assert plan_resume(path, by_two, 2, 1).accumulate == 3 and plan_resume(path, by_two, 2, 3).accumulate is None
    with pytest.raises(ValueError, match="cannot keep it: set data.loader.batch_size to a divisor of 12"):
        plan_resume(path, datamodule(demo_dir, demo_shards, batch_size=5, samples_per_epoch=24), 1, 3)
    # the megabatch (4 ranks x 3 steps x 1 = 12) is kept as the global batch is
    grouped = datamodule(demo_dir, demo_shards, batch_size=1, samples_per_epoch=24, megabatch_steps=3)
    path = write_checkpoint(tmp_path / "grouped.ckpt", loader_state(grouped, 4, 3, accumulate=3))
    resume = plan_resume(path, grouped, 2, 3)
    assert (resume.accumulate, resume.megabatch_steps) == (6, 6)
    trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=3, callbacks=[])
    apply_resume(resume, grouped, trainer)
    assert trainer.accumulate_grad_batches == 6 and grouped.loader.megabatch_steps == 6
    assert grouped.resumed.planner.megabatch_steps == 6 and isinstance(trainer.callbacks[0], ResumedPosition)
    # an earlier version's checkpoint does not say its accumulation: only its own layout resumes it
    old = {key: value for key, value in loader_state(dm, 4, 3, accumulate=3).items() if key != "accumulate"}
    path = write_checkpoint(tmp_path / "old.ckpt", old)
    with pytest.raises(ValueError, match="does not record its gradient accumulation.*resume it on 4 ranks"):
        plan_resume(path, dm, 2, 3)
    assert plan_resume(path, dm, 4, 3).epoch == 0


def test_other_data_is_refused_inside_an_epoch_and_taken_at_its_end(demo_dir, demo_shards, tmp_path):
    dm = datamodule(demo_dir, demo_shards, batch_size=1, samples_per_epoch=24)
    inside = write_checkpoint(tmp_path / "inside.ckpt", loader_state(dm, 4, 3, accumulate=3))
    at_end = write_checkpoint(tmp_path / "end.ckpt", loader_state(dm, 4, 6, accumulate=3), processed=1)
    other = datamodule(demo_dir, demo_shards, batch_size=1, samples_per_epoch=20)
    with pytest.raises(
        ValueError, match=r"stopped 3 batches into epoch 0 of another plan \(quotas \[12, 12\] there, \[10, 10\] here\)"
    ):
        plan_resume(inside, other, 2, 3)
    assert plan_resume(at_end, other, 2, 3).epoch is None  # the next epoch is planned afresh


def loader_keys(dm, world: int, state: dict | None = None, batches: int | None = None) -> list[str]:
    """The keys of the real rows each rank's training loader of `dm` gives (its first `batches` batches, or all),
    restored from a loader state when given, rank by rank."""
    read = []
    for rank in range(world):
        dm._world = lambda rank=rank: (rank, world)
        loader = dm.train_dataloader()
        if state is not None:
            loader.load_state_dict(state)
        for number, batch in enumerate(loader):
            if batches is not None and number == batches:
                break
            read += [key for key, padding in zip(batch.keys, batch.is_padding.tolist()) if not padding]
    return read


def resumed_state(dm, world: int, accumulate: int, path) -> tuple[dict, int]:
    """A fit of `dm` on `world` ranks (configured with this accumulation) resuming the checkpoint at `path` as the
    training CLI does (plan_resume, apply_resume) and Lightning loads it (ResumedPosition): the training loader's state
    and the accumulation it trains with."""
    trainer = SimpleNamespace(world_size=world, accumulate_grad_batches=accumulate, callbacks=[])
    apply_resume(plan_resume(path, dm, world, accumulate), dm, trainer)
    checkpoint = torch.load(path, weights_only=True)
    for callback in trainer.callbacks:
        callback.on_load_checkpoint(None, None, checkpoint)
    fit = checkpoint["loops"]["fit_loop"]
    state = fit["state_dict"]["combined_loader"][0]
    assert fit["epoch_loop.batch_progress"]["current"]["processed"] == state["batches"]  # Lightning's count, renumbered
    return state, trainer.accumulate_grad_batches


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("worlds", [(4, 2), (4, 3), (4, 1), (2, 4)])
def test_the_loaders_read_each_sample_of_the_epoch_once_across_a_resume(
    demo_dir, demo_shards, tmp_path, worlds, workers
):
    """Each rank of the first world reads its first batches (a step of accumulation 12 / world); the checkpoint goes
    through the resume as a fit's does; each rank of the second world then reads the rest: together the epoch's
    samples, each exactly once."""
    before, after = worlds
    accumulate = 12 // before
    settings = dict(batch_size=1, samples_per_epoch=24, num_workers=workers)
    first = datamodule(demo_dir, demo_shards, **settings)
    epoch = Counter(loader_keys(first, before))
    assert sum(epoch.values()) == 24
    read = loader_keys(first, before, batches=accumulate)
    path = write_checkpoint(tmp_path / "mid.ckpt", loader_state(first, before, accumulate, accumulate))
    second = datamodule(demo_dir, demo_shards, **settings)
    state, accumulated = resumed_state(second, after, accumulate, path)
    assert accumulated == 12 // after and state["batches"] == 12 // after  # one step of the new layout done
    assert Counter(read + loader_keys(second, after, state)) == epoch


def test_a_resumed_epoch_resumed_again_exactly_and_on_a_third_world(demo_dir, demo_shards, tmp_path):
    """4 ranks read a step of an epoch of 48; 2 ranks a step of the rest; 2 ranks again (the same plan: exact) a step
    more; 3 ranks the rest: each sample once."""
    settings = dict(batch_size=1, samples_per_epoch=48, num_workers=0)
    first = datamodule(demo_dir, demo_shards, **settings)
    epoch = Counter(loader_keys(first, 4))
    read = loader_keys(first, 4, batches=3)
    path = write_checkpoint(tmp_path / "four.ckpt", loader_state(first, 4, 3, 3))
    for number, (world, steps) in enumerate(((2, 1), (2, 1), (3, None))):
        dm = datamodule(demo_dir, demo_shards, **settings)
        state, accumulate = resumed_state(dm, world, 12 // world, path)
        if number == 1:  # the same layout as the part it was reading: no renumbering, the next batch of that plan
            assert (state["batches"], state["start"]) == (12, 6) and len(state["earlier"]) == 1
        read += loader_keys(dm, world, state, batches=steps and accumulate)
        if steps:
            batches = state["batches"] + accumulate
            path = write_checkpoint(tmp_path / f"{number}.ckpt", loader_state(dm, world, batches, accumulate))
    assert len(state["earlier"]) == 2 and Counter(read) == epoch


def demo_fit(demo_dir, demo_shards, root, *extra):
    from llavaction.cli.train import main

    args = demo_args(
        demo_dir,
        demo_shards,
        root,
        *csv_logged(root),
        record_keys(root),
        "--data.loader.samples_per_epoch=32",
        "--trainer.max_epochs=1",
        "--trainer.check_val_every_n_epoch=10",
        *extra,
    )
    assert main(args) == 0
    return args


def logged(root, name: str) -> dict[int, float]:
    rows = [row for path in sorted(root.rglob("metrics.csv")) for row in csv.DictReader(open(path))]
    return {int(row["step"]): float(row[name]) for row in rows if row.get(name)}


def read_keys(root) -> list[tuple[int, list]]:
    lines = (root / "keys-rank0.jsonl").read_text().splitlines()
    return [(row["batch"], [key for key, padding in row["rows"] if not padding]) for row in map(json.loads, lines)]


def test_a_fit_resumed_with_another_batch_keeps_the_global_batch_and_the_schedule(
    demo_dir, demo_shards, tmp_path, capsys
):
    """Batch 4 -> 2 after 2 of 8 steps: accumulation 1 -> 2; the 24 samples left are read in batches 4-15 of 16,
    each once; the fit takes the 8 steps the whole run takes, its learning rate is the whole run's at each and its
    losses go on where the whole run's are."""
    whole = tmp_path / "whole"
    demo_fit(demo_dir, demo_shards, whole, step_checkpoints(whole, 2))
    resumed = tmp_path / "resumed"
    demo_fit(demo_dir, demo_shards, resumed, f"--ckpt_path={step_checkpoint(whole, 2)}", "--data.loader.batch_size=2")
    notes = capsys.readouterr().err
    assert "accumulate_grad_batches 1 -> 2: the global batch stays 4" in notes
    assert "24 samples left, 12 batches a rank from batch 4 of 16" in notes
    before, after = read_keys(whole)[:2], read_keys(resumed)
    assert [number for number, _ in after] == list(range(4, 16)) and all(len(keys) == 2 for _, keys in after)
    assert Counter(k for _, keys in before + after for k in keys) == Counter(
        k for _, keys in read_keys(whole) for k in keys
    )
    lr = "lr-AdamW/llm"
    losses, whole_losses = logged(resumed, "train/loss"), logged(whole, "train/loss")
    assert sorted(losses) == list(range(2, 8))
    assert logged(resumed, lr) == {step: value for step, value in logged(whole, lr).items() if step >= 2}
    # other batches from step 2 on, so not the same losses, but the curve goes on where it was (no jump)
    mean = sum(losses.values()) / 6
    assert abs(mean - sum(whole_losses[step] for step in losses) / 6) < 0.05 * mean


def test_a_fit_stopped_by_max_steps_inside_an_epoch_continues_it(demo_dir, demo_shards, tmp_path, capsys):
    """`trainer.max_steps` stops a fit after 2 of the epoch's 8 batches (Lightning counts the epoch as ended): its
    checkpoint is checked as any stopped inside an epoch (another seed refused), and the resumed fit reads the epoch's
    other 6 batches (not the next epoch's, not nothing)."""
    from llavaction.cli.plan import main as plan
    from llavaction.cli.train import main

    root = tmp_path / "run"
    demo_fit(demo_dir, demo_shards, root, "--trainer.max_steps=2")
    other = demo_args(demo_dir, demo_shards, root, "--data.loader.samples_per_epoch=32", "--ckpt_path=last")
    refused = one_line_exit(capsys, lambda: main([*other, "--data.seed=1"]))
    assert "it stopped 2 batches into epoch 0 of another plan (seed 0 there, 1 here)" in refused
    args = demo_fit(demo_dir, demo_shards, root, "--ckpt_path=last")
    rows = read_keys(root)
    assert [number for number, _ in rows] == list(range(8))
    plan_args = [arg for arg in args[1:] if not arg.startswith("--ckpt_path")]
    assert plan([*plan_args, f"--out={tmp_path / 'plan.jsonl'}"]) == 0
    planned = [json.loads(line) for line in (tmp_path / "plan.jsonl").read_text().splitlines()]
    assert Counter(k for _, keys in rows for k in keys) == Counter(r["key"] for r in planned if not r["padding"])

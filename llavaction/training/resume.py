"""A fit resumed from a checkpoint on any layout: devices x nodes, loader workers and per-device batch may differ from
the run that wrote it.

- The global batch (ranks x per-device batch x gradient accumulation) is the checkpoint's: under another world size or
  per-device batch, `trainer.accumulate_grad_batches` is recomputed to keep it (and `data.loader.megabatch_steps` to
  keep the reference's megabatch), or the resume is refused naming the world sizes that can keep it. Every epoch then
  takes as many optimizer steps as before, so the learning-rate schedule (its length from those steps) continues by
  step as it was.
- Inside an epoch: under the layout of the part of the epoch the checkpoint was reading, the epoch continues with the
  next batch of the same plan (exact resume); under another, the samples no rank consumed, and only those, are planned
  over the new ranks and workers (llavaction.data.resume), and the epoch's progress is renumbered so that the epoch
  keeps the length of a whole epoch under the new layout. A checkpoint of a fit stopped inside an epoch by something
  other than a signal (`trainer.max_steps`, a callback) continues that epoch too.
- The data must be the checkpoint's (seed, sources, their sizes and shares): a resume inside an epoch on other data is
  refused naming what differs.
Model and optimizer states load at any world size: a sharded (FSDP2) checkpoint is a torch.distributed.checkpoint
folder, which the strategy reshards when it loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import torch

from llavaction.data.resume import EpochPart, data_differences, layout_of


def fit_loop_state(path: str | Path) -> dict:
    """The fit loop's state a checkpoint holds ({} when none): a file, or FSDP2's sharded folder (its meta.pt)."""
    path = Path(path)
    file = path / "meta.pt" if path.is_dir() else path
    if not file.is_file():
        return {}
    loops = torch.load(file, map_location="cpu", weights_only=True, mmap=not path.is_dir()).get("loops") or {}
    return loops.get("fit_loop") or {}


@dataclass
class Resume:
    """What a fit resumed from a checkpoint changes before it starts.

    Args:
        accumulate: gradient accumulation that keeps the checkpoint's global batch (None: the run's own does).
        megabatch_steps: megabatch steps that keep the checkpoint's megabatch (None: the run's own do).
        epoch: the epoch the checkpoint stopped inside (None: it stopped at an epoch's end).
        parts: the parts of that epoch read so far, each with the batches its ranks finished; the last is the one
            the checkpoint was reading.
        replan: that part's layout is not this run's: what the parts left is planned anew (else the last part
            continues with its next batch).
        inside_reopened: the fit loop's progress says the epoch ended though the checkpoint stopped inside it.
        notes: what a user is told (one line each).
    """

    accumulate: int | None = None
    megabatch_steps: int | None = None
    epoch: int | None = None
    parts: list[EpochPart] = field(default_factory=list)
    replan: bool = False
    inside_reopened: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def planned_from(self) -> list[EpochPart]:
        """The parts whose remainder this run's loader reads: all of them when re-planned (one with no finished batch
        left out), else those before the last (whose remainder the last part is)."""
        return [part for part in self.parts if part.batches] if self.replan else self.parts[:-1]


def plan_resume(path: str | Path, data, world_size: int, accumulate: int) -> Resume:
    """How a fit with this DataModule, world size and gradient accumulation resumes the checkpoint at `path`;
    ValueError (one line) when it cannot continue it without repeating or skipping samples or changing the global
    batch. Reads the checkpoint's loop state only; changes nothing."""
    loop = fit_loop_state(path)
    states = (loop.get("state_dict") or {}).get("combined_loader") or [None]
    state = states[0]
    resume = Resume()
    if not isinstance(state, dict) or not isinstance(state.get("plan"), dict):
        return resume  # written by another loader, or before the first epoch
    plan, where = state["plan"], f"--ckpt_path {path}"
    _keep_global_batch(resume, where, state, data, world_size, accumulate)
    base = data.epoch_planner(world_size=world_size)
    if resume.megabatch_steps is not None:
        base = base.relaid(megabatch_steps=resume.megabatch_steps)
    epoch, counter, start = int(state["epoch"]), int(state["batches"]), int(state.get("start", 0))
    if "length" in state:
        ended = counter >= state["length"]
    else:  # an earlier version's checkpoint: Lightning's progress says whether its last batch was read
        ended = bool((loop.get("epoch_loop.batch_progress") or {}).get("is_last_batch"))
    if ended:
        return resume  # at an epoch's end: the next epoch is planned afresh
    earlier = [EpochPart.from_dict(part) for part in state.get("earlier", [])]
    for part in [*earlier, EpochPart(plan, counter - start)]:
        differing = data_differences(part.plan, base.describe())
        if differing:
            raise ValueError(
                f"{where}: it stopped {counter} batches into epoch {epoch} of another plan ({differing}); resume with "
                "the checkpoint's settings, or from one written at an epoch's end"
            )
    resume.epoch, resume.parts = epoch, [*earlier, EpochPart(plan, counter - start)]
    progress = (loop.get("epoch_progress") or {}).get("current") or {}
    resume.inside_reopened = progress.get("processed") == epoch + 1
    resume.replan = layout_of(plan) != layout_of(base.describe())
    if resume.replan:
        resume.notes.append(
            f"epoch {epoch} continues for {_layout_text(base.describe())}: {counter - start} batches a rank were "
            f"read of its part planned for {_layout_text(plan)}; the samples no rank read are planned anew"
        )
    return resume


def apply_resume(resume: Resume, data, trainer: L.Trainer) -> list[str]:
    """Set the fit up as `resume` says, before it starts: the accumulation and megabatch steps, the epoch's remainder
    planned in the DataModule, and the checkpoint's position renumbered when the trainer loads it (ResumedPosition).
    Returns what to tell the user."""
    if resume.accumulate is not None:
        trainer.accumulate_grad_batches = resume.accumulate
    if resume.megabatch_steps is not None:
        data.loader = replace(data.loader, megabatch_steps=resume.megabatch_steps)
    loader_state = None
    if resume.planned_from:  # the same remainder as the checkpoint's part (exact), or a new one (re-planned)
        resumed = data.resume_epoch(resume.epoch, resume.planned_from, trainer.world_size)
    if resume.replan:
        length = resumed.first_batch + resumed.planner.batches_per_rank  # a whole epoch's batches in this layout
        if not resumed.planner.total:
            raise ValueError(
                f"epoch {resume.epoch} stopped where its ranks had only padding left to read: resume it on its own "
                f"layout ({_layout_text(resume.parts[-1].plan)})"
            )
        loader_state = {
            "epoch": resume.epoch,
            "batches": resumed.first_batch,
            "start": resumed.first_batch,
            "plan": resumed.planner.describe(),
            "earlier": [part.as_dict() for part in resume.planned_from],
            "length": length,
            "accumulate": trainer.accumulate_grad_batches,
        }
        resume.notes.append(
            f"epoch {resume.epoch}: {resumed.planner.total} samples left, {resumed.planner.batches_per_rank} batches "
            f"a rank from batch {resumed.first_batch} of {length}"
        )
    if resume.inside_reopened or loader_state is not None:
        trainer.callbacks.append(ResumedPosition(resume, loader_state))
    return resume.notes


def _keep_global_batch(resume: Resume, where: str, state: dict, data, world_size: int, accumulate: int) -> None:
    """Under another world size or per-device batch, the accumulation (and megabatch steps) that keep the
    checkpoint's global batch (and megabatch), else a ValueError naming the world sizes that keep them."""
    plan, batch = state["plan"], data.loader.batch_size
    if (plan["world_size"], plan["batch_size"]) == (world_size, batch):
        return
    if state.get("accumulate") is None:
        raise ValueError(
            f"{where}: it does not record its gradient accumulation (an earlier version wrote it): resume it on "
            f"{plan['world_size']} ranks with data.loader.batch_size {plan['batch_size']}"
        )
    global_batch = plan["world_size"] * plan["batch_size"] * state["accumulate"]
    megabatch = plan["world_size"] * plan["batch_size"] * plan.get("megabatch_steps", 0)
    kept = [size for size in (global_batch, megabatch if data.loader.megabatch_steps else 0) if size]
    if any(size % (world_size * batch) for size in kept):
        workable = [w for w in range(1, global_batch + 1) if not any(size % (w * batch) for size in kept)]
        megabatch_text = f" and its megabatch of {megabatch}" if len(kept) > 1 else ""
        keep = (
            f"resume on {_either(workable)} ranks"
            if workable
            else f"set data.loader.batch_size to a divisor of {global_batch}"
        )
        raise ValueError(
            f"{where}: the run's global batch is {global_batch} ({_ranks(plan['world_size'])} x batch "
            f"{plan['batch_size']} x accumulation {state['accumulate']}); {_ranks(world_size)} x batch {batch} cannot "
            f"keep it{megabatch_text}: {keep}"
        )
    if global_batch // (world_size * batch) != accumulate:
        resume.accumulate = global_batch // (world_size * batch)
        resume.notes.append(
            f"trainer.accumulate_grad_batches {accumulate} -> {resume.accumulate}: the global batch stays "
            f"{global_batch}"
        )
    if len(kept) > 1 and megabatch // (world_size * batch) != data.loader.megabatch_steps:
        resume.megabatch_steps = megabatch // (world_size * batch)
        resume.notes.append(
            f"data.loader.megabatch_steps {data.loader.megabatch_steps} -> {resume.megabatch_steps}: the megabatch "
            f"stays {megabatch} samples"
        )


def _layout_text(plan: dict) -> str:
    workers = f"{plan['workers']} worker" + ("s" if plan["workers"] > 1 else "")
    return f"{_ranks(plan['world_size'])} x {workers}, batch {plan['batch_size']}"


def _ranks(count: int) -> str:
    return f"{count} rank" + ("s" if count > 1 else "")


def _either(numbers: list[int]) -> str:
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


class ResumedPosition(L.Callback):
    """Renumbers the checkpoint's training position as the resume planned it, before the trainer restores its loops
    (Lightning's public on_load_checkpoint hook, which may change the checkpoint): the epoch's batch counter moves to
    the remainder's first batch and the training loader's state to the remainder's plan, and an epoch the fit loop
    counts as ended though the checkpoint stopped inside it is counted as under way again."""

    def __init__(self, resume: Resume, loader_state: dict | None):
        self.resume, self.loader_state = resume, loader_state

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        fit = checkpoint["loops"]["fit_loop"]
        if self.resume.inside_reopened:
            for counts in fit["epoch_progress"].values():
                counts["processed"] -= 1
        if self.loader_state is not None:
            batches = fit["epoch_loop.batch_progress"]
            shift = self.loader_state["batches"] - fit["state_dict"]["combined_loader"][0]["batches"]
            for counts in (batches["total"], batches["current"]):
                for name in counts:
                    counts[name] += shift
            fit["state_dict"]["combined_loader"] = [self.loader_state]

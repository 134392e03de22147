"""Data preparation as array tasks (a SLURM job array, or N processes by hand): each task takes a deterministic,
contiguous slice of the work balanced by its expected cost and writes its own part of the output; merge_shards
completes the set. The parts of N tasks add up to exactly what one task writes."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

PART_NAME = re.compile(r"^part-(\d{4})-of-(\d{4})$")


@dataclass(frozen=True)
class ArrayJob:
    """One task of an array.

    Args:
        index: this task, from 0.
        count: tasks in the array.
    """

    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"task index {self.index} of {self.count} tasks: expected 0 <= index < tasks")
        if self.count > 9999:
            raise ValueError(f"{self.count} tasks: at most 9999")

    @classmethod
    def from_args(cls, num_tasks: int | None, task_index: int | None) -> ArrayJob | None:
        """The task given, else SLURM's array task (SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_ID minus
        SLURM_ARRAY_TASK_MIN); None for a single run."""
        environment = os.environ
        if num_tasks is None and "SLURM_ARRAY_TASK_COUNT" in environment:
            num_tasks = int(environment["SLURM_ARRAY_TASK_COUNT"])
        if task_index is None and "SLURM_ARRAY_TASK_ID" in environment:
            task_index = int(environment["SLURM_ARRAY_TASK_ID"]) - int(environment.get("SLURM_ARRAY_TASK_MIN", "0"))
        if num_tasks is None and task_index is None:
            return None
        if num_tasks is None or task_index is None:
            raise ValueError("--num-tasks and --task-index go together (or both from a SLURM job array)")
        if num_tasks == 1 and task_index != 0:
            raise ValueError(f"task index {task_index} of 1 task: expected 0 <= index < tasks")
        return None if num_tasks == 1 else cls(task_index, num_tasks)

    @property
    def part_name(self) -> str:
        """The folder (or file stem) of this task's part of the output."""
        return f"part-{self.index:04d}-of-{self.count:04d}"

    def share(self, costs: list[float]) -> range:
        """This task's contiguous run of the units whose costs are given in order: unit u goes to the task whose
        slice of the total cost holds the middle of u's cost."""
        total = sum(costs) or 1.0
        start = stop = None
        covered = 0.0
        for unit, cost in enumerate(costs):
            middle = (covered + cost / 2) / total
            covered += cost
            owner = min(self.count - 1, int(middle * self.count))
            if owner == self.index:
                start = unit if start is None else start
                stop = unit + 1
        return range(start or 0, stop or 0)

"""The reference's sampling strategies (`sampling_strategy` of its data YAML), in one place: build_replay applies them
to conversation files, the training mixture to its sources.

    all          every item
    first:N      the first N items            first:N%   the first N percent (rounded up)
    end:N        the last N items             end:N%     the last N percent (rounded up)
    random:N     N items drawn at random      random:N%  N percent drawn at random (seeded: fixed for a run)

N is a count >= 0 or a percentage in [0, 100]; a count beyond the items keeps them all. `end:0` keeps nothing (the
reference's slice `[-0:]` keeps everything: README, differences).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

STRATEGY_NAMES = ("all", "first", "end", "random")


@dataclass(frozen=True)
class SamplingStrategy:
    """A parsed strategy.

    Args:
        name: all, first, end or random.
        count: N of `name:N`.
        percent: N of `name:N%`.
    """

    name: Literal["all", "first", "end", "random"]
    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> SamplingStrategy:
        """`all`, `first:N`, `first:N%`, ...; a ValueError saying what is wrong otherwise."""
        text = str(text).strip()
        name, colon, number = text.partition(":")
        if name not in STRATEGY_NAMES or (name == "all") == bool(colon):
            raise ValueError(f"sampling strategy {text!r}: expected all, first:N, end:N or random:N (N or N%)")
        if name == "all":
            return cls("all")
        number = number.strip()
        try:
            if number.endswith("%"):
                percent = float(number[:-1])
                if not 0 <= percent <= 100 or math.isnan(percent):
                    raise ValueError(f"sampling strategy {text!r}: a percentage must lie in [0, 100]")
                return cls(name, percent=percent)
            count = int(number)
        except ValueError as err:
            if "sampling strategy" in str(err):
                raise
            raise ValueError(f"sampling strategy {text!r}: N must be a whole count or a percentage") from None
        if count < 0:
            raise ValueError(f"sampling strategy {text!r}: N must be >= 0")
        return cls(name, count=count)

    def size(self, total: int) -> int:
        """How many of `total` items the strategy keeps."""
        if self.name == "all":
            return total
        if self.percent is not None:
            return min(total, math.ceil(self.percent * total / 100))
        return min(total, self.count)

    def select(self, total: int, rng: random.Random) -> list[int]:
        """The indices kept, ascending; `rng` draws random:N."""
        keep = self.size(total)
        if self.name in ("all", "first"):
            return list(range(keep))
        if self.name == "end":
            return list(range(total - keep, total))
        indices = list(range(total))
        rng.shuffle(indices)
        return sorted(indices[:keep])

    def __str__(self) -> str:
        if self.name == "all":
            return "all"
        number = f"{self.percent:g}%" if self.percent is not None else str(self.count)
        return f"{self.name}:{number}"

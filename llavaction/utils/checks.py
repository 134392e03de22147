"""Values read from configs and command lines, checked where they are declared: the error names the option."""

from __future__ import annotations


def check_count(name: str, value, minimum: int, null: bool = False) -> None:
    """A count read from a config: an integer (not a bool) of at least `minimum`; the error names the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if null else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_range(name: str, value, low: float, high: float = float("inf")) -> None:
    """A number read from a config: finite (or the open upper bound), within [low, high]; the error names the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high or value != value:
        bounds = f">= {low}" if high == float("inf") else f"between {low} and {high}"
        raise ValueError(f"{name} must be a number {bounds}, got {value!r}")
    if value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")


def as_options(group: type, value):
    """An option group as its dataclass: a checkpoint's hyperparameters, or a config read without instantiating its
    classes, may hold it as a plain dict."""
    return group(**value) if isinstance(value, dict) else value

"""The figures shared by TensorBoard validation and the error-analysis report: frames upscaled for viewing, accuracy
bars and a row-normalised confusion matrix. matplotlib is imported where a figure is drawn (Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def upscale_nearest(frames: Sequence[np.ndarray], min_side: int) -> list[np.ndarray]:
    """Frames repeated by the smallest integer factor that makes their shorter side at least min_side (nearest
    neighbour: tiny demo frames stay sharp); frames already that large are returned as they are."""
    factor = max(1, -(-min_side // min(frames[0].shape[:2])))
    if factor == 1:
        return list(frames)
    return [np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1) for frame in frames]


def frame_strip(frames: Sequence[np.ndarray], min_height: int) -> np.ndarray:
    """The frames side by side, upscaled to at least min_height pixels."""
    return np.concatenate(upscale_nearest(frames, min_height), axis=1)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_bars(
    labels: Sequence[str],
    accuracies: Sequence[float],
    *,
    xlabel: str,
    ylabel: str = "accuracy (%)",
    title: str | None = None,
    colours: Sequence[str] | None = None,
    intervals: Sequence[tuple[float, float]] | None = None,
):
    """One bar per label, accuracies in percent (with their intervals as error bars when given), labels slanted under
    the bars; the width grows with the bars. Each bar's top is also marked in its colour, and the axis starts a little
    below 0, so a 0% bar stays visible with its colour (a tail class) and its interval."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(max(6, 0.4 * len(labels) + 2), 4))
    errors = None
    if intervals is not None:
        errors = [
            [a - low for a, (low, _) in zip(accuracies, intervals)],
            [h - a for a, (_, h) in zip(accuracies, intervals)],
        ]
    positions = range(len(labels))
    axis.bar(positions, accuracies, color=colours, yerr=errors, capsize=2 if errors else 0)
    axis.hlines(accuracies, [x - 0.4 for x in positions], [x + 0.4 for x in positions], colors=colours, linewidth=3)
    axis.set_xticks(positions, labels, rotation=65, ha="right", fontsize=7)
    axis.set(xlabel=xlabel, ylabel=ylabel, ylim=(-3, 100), title=title)
    figure.tight_layout()
    return figure


def confusion_heatmap(counts: np.ndarray, rows: Sequence[str], columns: Sequence[str], *, kind: str, title: str | None):
    """counts[true, chosen] shown row-normalised (each true class sums to 1), labelled by name."""
    plt = pyplot()
    share = np.asarray(counts, dtype=float)
    share = share / share.sum(1, keepdims=True).clip(min=1)
    side = 3 + 0.35 * len(columns)
    figure, axis = plt.subplots(figsize=(side + 1, side))
    image = axis.imshow(share, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(columns)), columns, rotation=70, ha="right", fontsize=7)
    axis.set_yticks(range(len(rows)), rows, fontsize=7)
    axis.set(xlabel=f"chosen {kind}", ylabel=f"true {kind}", title=title)
    figure.colorbar(image, fraction=0.04)
    figure.tight_layout()
    return figure


def save_png(figure, path: Path, dpi: int = 90) -> None:
    """Write the figure whole (llavaction.utils.files.atomic_output) and free it (pyplot keeps every open figure
    alive)."""
    from llavaction.utils.files import atomic_output

    try:
        with atomic_output(path, "wb") as stream:
            figure.savefig(stream, dpi=dpi, format="png")
    finally:
        pyplot().close(figure)

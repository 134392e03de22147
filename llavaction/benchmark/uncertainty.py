"""Uncertainty of benchmark figures: 95% intervals from a bootstrap clustered by video, and paired comparisons of two
prediction files on the same questions.

EK-100's 9,668 validation segments come from 138 videos, and segments of one video are correlated (the same kitchen,
person and lighting), so questions are not independent draws: the bootstrap resamples videos with replacement and
recomputes the figure over the questions of the drawn videos. The comparison of two models resamples the same videos
for both (the difference's interval) and flips, video by video, which model each video's answers belong to (a paired
randomisation test: the p-value of "the two models answer equally well")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0
# rows of the resample matrix drawn at once (bounds memory at many clusters)
_CHUNK = 100


def cluster_of(record: dict) -> str:
    """A question's video: its `video_id`, else its narration id less the segment number (`P01_11_7` -> `P01_11`)."""
    return record.get("video_id") or str(record["narration_id"]).rsplit("_", 1)[0]


@dataclass(frozen=True)
class Interval:
    """A figure in percent with its confidence interval and how it was drawn."""

    value: float
    low: float
    high: float
    confidence: float
    resamples: int
    clusters: int
    seed: int

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def text(self) -> str:
        """'71.7% [70.2, 73.1]' (percent)."""
        return f"{self.value:.1f}% [{self.low:.1f}, {self.high:.1f}]"


def _cluster_sums(values: Sequence[float], clusters: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    names, index = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    sums = np.bincount(index, weights=np.asarray(values, dtype=np.float64), minlength=len(names))
    sizes = np.bincount(index, minlength=len(names)).astype(np.float64)
    return sums, sizes


def _resampled_counts(clusters: int, resamples: int, seed: int):
    """How often each cluster is drawn in each resample, `_CHUNK` resamples at a time: [rows, clusters]."""
    rng = np.random.default_rng(seed)
    for begin in range(0, resamples, _CHUNK):
        rows = min(_CHUNK, resamples - begin)
        yield rng.multinomial(clusters, np.full(clusters, 1.0 / clusters), size=rows).astype(np.float64)


def clustered_interval(
    hits: Sequence[float],
    clusters: Sequence[str],
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Interval:
    """The mean of `hits` (0/1 per question) in percent, and its percentile interval over `resamples` resamples of
    the clusters (videos) with replacement."""
    if len(hits) == 0:
        raise ValueError("an interval needs at least one question")
    if len(hits) != len(clusters):
        raise ValueError(f"{len(hits)} values for {len(clusters)} cluster labels")
    sums, sizes = _cluster_sums(hits, clusters)
    estimates = np.concatenate(
        [(counts @ sums) / (counts @ sizes) for counts in _resampled_counts(len(sums), resamples, seed)]
    )
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(100 * estimates, [tail, 100 - tail])
    return Interval(100 * sums.sum() / sizes.sum(), float(low), float(high), confidence, resamples, len(sums), seed)


def p_value_text(p_value: float) -> str:
    """Three decimals, or four significant digits below 0.1, so that no p-value of 1000 resamples prints as a
    threshold it is under (10/1001 = 0.00999 is not "0.010", 50/1001 = 0.04995 not "0.050")."""
    return f"{p_value:.3f}" if p_value >= 0.1 else f"{p_value:.4g}"


@dataclass(frozen=True)
class Comparison:
    """B less A in points over the same questions, its clustered interval, and the paired test's p-value."""

    difference: Interval
    p_value: float
    questions: int

    def as_dict(self) -> dict:
        p_value = float(f"{self.p_value:.4g}")
        return {"difference": self.difference.as_dict(), "p_value": p_value, "questions": self.questions}

    def text(self) -> str:
        d = self.difference
        return (
            f"{d.value:+.1f} points [{d.low:+.1f}, {d.high:+.1f}], p = {p_value_text(self.p_value)} "
            f"({self.questions} questions, {d.clusters} videos)"
        )


def paired_comparison(
    hits_a: Sequence[float],
    hits_b: Sequence[float],
    clusters: Sequence[str],
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Comparison:
    """B's accuracy less A's on the same questions (in the same order): the difference's interval from resampling
    videos for both at once, and a two-sided p-value from flipping, per video, which answers are A's and which B's."""
    if not len(hits_a) == len(hits_b) == len(clusters):
        raise ValueError(f"a paired comparison needs one answer of each per question: {len(hits_a)}, {len(hits_b)}")
    differences = np.asarray(hits_b, dtype=np.float64) - np.asarray(hits_a, dtype=np.float64)
    interval = clustered_interval(differences, clusters, resamples, confidence, seed)
    sums, sizes = _cluster_sums(differences, clusters)
    observed = abs(sums.sum())
    rng = np.random.default_rng(seed + 1)
    signs = rng.choice((-1.0, 1.0), size=(resamples, len(sums)))
    # at least as far from zero as observed (a tolerance for the float sums of equal magnitudes)
    extreme = int((np.abs(signs @ sums) >= observed - 1e-9).sum())
    return Comparison(interval, (1 + extreme) / (1 + resamples), len(differences))


def record_interval(records: list[dict], key: str = "correct", **options) -> Interval | None:
    """The clustered interval of a boolean field of prediction records (None without records)."""
    if not records:
        return None
    return clustered_interval([float(bool(r.get(key))) for r in records], [cluster_of(r) for r in records], **options)


def hit_intervals(rows: list[tuple[str, dict[str, bool]]], **options) -> dict[str, Interval]:
    """Per figure name, the interval of its per-question hits: rows are (video, {name: hit}) of every question (a
    figure a question does not carry is left out for it)."""
    names = sorted({name for _, hits in rows for name in hits})
    intervals = {}
    for name in names:
        kept = [(video, hits[name]) for video, hits in rows if name in hits]
        intervals[name] = clustered_interval([float(h) for _, h in kept], [v for v, _ in kept], **options)
    return intervals

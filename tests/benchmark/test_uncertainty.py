"""Intervals clustered by video and paired comparisons: the bootstrap agrees with the normal approximation where
questions are independent, widens where they are correlated within videos, and two equal files differ by nothing."""

import numpy as np
import pytest

from llavaction.benchmark.uncertainty import (
    cluster_of,
    clustered_interval,
    p_value_text,
    paired_comparison,
    record_interval,
)


def test_independent_questions_give_the_normal_approximation():
    rng = np.random.default_rng(0)
    hits = rng.random(20_000) < 0.7
    interval = clustered_interval(hits, [str(i) for i in range(len(hits))], resamples=2000)
    p = hits.mean()
    half = 100 * 1.96 * np.sqrt(p * (1 - p) / len(hits))
    assert interval.value == pytest.approx(100 * p)
    assert interval.low == pytest.approx(100 * p - half, abs=0.1)
    assert interval.high == pytest.approx(100 * p + half, abs=0.1)


def test_correlated_videos_widen_the_interval():
    """120 videos of 80 questions each, each video with its own difficulty: resampling questions would claim a
    precision the 120 videos do not give."""
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0.3, 0.95, size=120)
    hits = np.concatenate([rng.random(80) < d for d in difficulty])
    videos = np.repeat([f"P{v:03d}_01" for v in range(120)], 80)
    clustered = clustered_interval(hits, videos)
    unclustered = clustered_interval(hits, [str(i) for i in range(len(hits))])
    assert clustered.value == unclustered.value
    assert clustered.high - clustered.low > 2 * (unclustered.high - unclustered.low)
    assert clustered.clusters == 120 and unclustered.clusters == len(hits)


def test_identical_files_differ_by_nothing_with_p_one_and_a_real_gap_is_found():
    rng = np.random.default_rng(2)
    videos = np.repeat([f"v{v}" for v in range(40)], 25)
    a = rng.random(1000) < 0.6
    same = paired_comparison(a, a, videos)
    assert same.difference.value == 0 and same.difference.low == 0 and same.difference.high == 0
    assert same.p_value == 1.0
    b = a | (rng.random(1000) < 0.3)  # B right wherever A is, and on about 30% more
    better = paired_comparison(a, b, videos)
    assert better.difference.value > 5 and better.difference.low > 0 and better.p_value < 0.01
    assert paired_comparison(b, a, videos).difference.value == pytest.approx(-better.difference.value)


def test_a_p_value_under_a_threshold_never_prints_or_saves_as_the_threshold():
    """With 8 videos every one of which improves, the sign-flip test's p is (1 + 9) / 1001 for seed 0's draws:
    under 0.01, where three decimals would print 0.010 and four would save 0.01."""
    videos = np.repeat([f"v{v}" for v in range(8)], 4)
    better = paired_comparison(np.zeros(32), np.tile([1.0, 0.0, 0.0, 0.0], 8), videos)
    assert better.p_value == pytest.approx(10 / 1001)
    assert "p = 0.00999 (32 questions, 8 videos)" in better.text()
    assert better.as_dict()["p_value"] == 0.009990
    texts = [p_value_text(p) for p in (1.0, 0.1, 50 / 1001, 0.05, 1 / 1001)]
    assert texts == ["1.000", "0.100", "0.04995", "0.05", "0.000999"]


def test_the_interval_is_seeded_and_says_how_it_was_drawn():
    videos = np.repeat(["a", "b", "c", "d"], 5)
    hits = [1, 0, 1, 1, 0] * 4
    first, second = clustered_interval(hits, videos, seed=3), clustered_interval(hits, videos, seed=3)
    assert first == second and first.resamples == 1000 and first.confidence == 0.95 and first.clusters == 4
    assert clustered_interval(hits, videos, seed=4) != first or first.low == first.high
    with pytest.raises(ValueError, match="at least one question"):
        clustered_interval([], [])


def test_records_cluster_by_video():
    assert cluster_of({"narration_id": "P01_11_7"}) == "P01_11"
    assert cluster_of({"narration_id": "x", "video_id": "P02_03"}) == "P02_03"
    records = [{"narration_id": f"P01_0{i % 3}_{i}", "correct": i % 2 == 0} for i in range(30)]
    interval = record_interval(records)
    assert interval.clusters == 3 and interval.value == pytest.approx(50.0)
    assert record_interval([]) is None

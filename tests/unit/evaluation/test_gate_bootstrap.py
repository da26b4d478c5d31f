"""The gate's bootstrap: the textbook paired percentile bootstrap over query groups, for a seed.

Resample the query groups with replacement, take each ranker's ratio of summed parts, keep the
percentiles of the difference. It is computed in chunks to bound memory; the chunks must not
change the result, a resample in which no group can be judged is dropped (never a NaN bound or a
warning), and the same seed always gives the same interval.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from rankflow.evaluation.gate import Interval, MetricParts, bootstrap_interval, paired_bootstrap


def parts(values: list[float] | np.ndarray) -> MetricParts:
    """Per-group values as parts (denominator 1 per group)."""
    return MetricParts(np.asarray(values, dtype=float), np.ones(len(values)))


def reference(
    ours: MetricParts, theirs: MetricParts, resamples: int, seed: int, confidence: float
) -> tuple[float, float]:
    """The percentile bootstrap written plainly: all resamples at once, no chunks."""
    n = len(ours.numerator)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    ratio = (counts @ ours.numerator) / (counts @ ours.denominator)
    other = (counts @ theirs.numerator) / (counts @ theirs.denominator)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratio - other, [tail, 1.0 - tail])
    return float(low), float(high)


def test_metric_parts_value_is_the_ratio_of_sums_over_judged_groups() -> None:
    pooled = MetricParts(np.array([1.0, 0.5, 0.0]), np.array([2.0, 1.0, 0.0]))
    assert pooled.value == 0.5
    assert pooled.groups == 2
    nothing = MetricParts(np.zeros(3), np.zeros(3))
    assert math.isnan(nothing.value)
    assert nothing.groups == 0
    assert math.isnan(MetricParts(np.array([]), np.array([])).value)


@pytest.mark.parametrize(("groups", "resamples"), [(4001, 1200), (300, 700)])
def test_the_chunked_bootstrap_is_the_plain_percentile_bootstrap(
    groups: int, resamples: int
) -> None:
    # 4,000,000 // 4001 = 999 resamples per chunk: two chunks, the second one short
    rng = np.random.default_rng(11)
    theirs = MetricParts(rng.uniform(0, 1, groups), rng.integers(1, 4, groups).astype(float))
    ours = MetricParts(theirs.numerator + rng.normal(0.02, 0.3, groups), theirs.denominator)
    interval = paired_bootstrap(ours, theirs, resamples, seed=5, confidence=0.9)
    low, high = reference(ours, theirs, resamples, seed=5, confidence=0.9)
    assert interval.estimate == pytest.approx(ours.value - theirs.value, rel=1e-12)
    assert interval.low == pytest.approx(low, rel=1e-9)
    assert interval.high == pytest.approx(high, rel=1e-9)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    rng = np.random.default_rng(3)
    theirs = parts(rng.uniform(0, 1, 200))
    ours = parts(rng.uniform(0, 1, 200))
    first = paired_bootstrap(ours, theirs, 500, seed=42)
    assert paired_bootstrap(ours, theirs, 500, seed=42) == first
    other = paired_bootstrap(ours, theirs, 500, seed=43)
    assert other.estimate == first.estimate
    assert (other.low, other.high) != (first.low, first.high)


def test_the_difference_is_challenger_minus_champion() -> None:
    better, worse = parts([0.9, 0.8, 0.7, 0.6]), parts([0.5, 0.4, 0.3, 0.2])
    up = paired_bootstrap(better, worse, 200, seed=1)
    down = paired_bootstrap(worse, better, 200, seed=1)
    assert up.estimate == pytest.approx(0.4)
    assert down.estimate == pytest.approx(-0.4)
    # every group differs by exactly 0.4, so every resample does too
    assert (up.low, up.high) == (pytest.approx(0.4), pytest.approx(0.4))
    assert (down.low, down.high) == (pytest.approx(-0.4), pytest.approx(-0.4))


def test_one_group_gives_a_point_interval_at_its_difference() -> None:
    interval = paired_bootstrap(parts([0.75]), parts([0.5]), 100, seed=1)
    assert (interval.estimate, interval.low, interval.high) == (0.25, 0.25, 0.25)


def test_a_single_resample_gives_one_finite_difference() -> None:
    ours, theirs = parts([1.0, 0.0, 0.5]), parts([0.0, 0.0, 0.0])
    interval = paired_bootstrap(ours, theirs, 1, seed=2)
    assert interval.low == interval.high
    assert 0.0 <= interval.low <= 1.0


def test_no_group_or_a_nan_metric_gives_no_interval() -> None:
    empty = paired_bootstrap(parts([]), parts([]), 100, seed=1)
    assert all(math.isnan(x) for x in (empty.estimate, empty.low, empty.high))
    broken = paired_bootstrap(parts([0.5, math.nan, 0.2]), parts([0.1, 0.2, 0.3]), 100, seed=1)
    assert all(math.isnan(x) for x in (broken.estimate, broken.low, broken.high))


def test_resamples_in_which_no_group_can_be_judged_are_dropped_silently() -> None:
    # only the first of three groups has a relevant item: about 30% of the resamples miss it
    ours = MetricParts(np.array([0.8, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]))
    theirs = MetricParts(np.array([0.5, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interval = paired_bootstrap(ours, theirs, 300, seed=4)
    assert interval.estimate == pytest.approx(0.3)
    assert interval.low == pytest.approx(0.3)
    assert interval.high == pytest.approx(0.3)


def test_when_no_resample_can_be_judged_the_bounds_are_nan_not_an_error() -> None:
    # one judged group of four: with seed 2, each of the three resamples leaves it out
    ours = MetricParts(np.array([0.8, 0.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0]))
    theirs = MetricParts(np.array([0.5, 0.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0]))
    interval = paired_bootstrap(ours, theirs, 3, seed=2)
    assert interval.estimate == pytest.approx(0.3)
    assert math.isnan(interval.low)
    assert math.isnan(interval.high)


def test_a_confidence_level_sets_the_percentiles() -> None:
    rng = np.random.default_rng(8)
    theirs = parts(rng.uniform(0, 1, 400))
    ours = parts(rng.uniform(0, 1, 400))
    wide = paired_bootstrap(ours, theirs, 2000, seed=1, confidence=0.99)
    default = paired_bootstrap(ours, theirs, 2000, seed=1)
    narrow = paired_bootstrap(ours, theirs, 2000, seed=1, confidence=0.5)
    assert default == paired_bootstrap(ours, theirs, 2000, seed=1, confidence=0.95)
    assert wide.low < default.low < narrow.low < narrow.estimate
    assert narrow.estimate < narrow.high < default.high < wide.high


def test_one_rankers_interval_is_the_normal_interval_of_its_mean() -> None:
    rng = np.random.default_rng(21)
    values = rng.uniform(0, 1, 900)
    interval = bootstrap_interval(parts(values), 2000, seed=9, confidence=0.95)
    assert interval.estimate == pytest.approx(values.mean())
    half = 1.96 * values.std() / math.sqrt(len(values))
    assert interval.low == pytest.approx(values.mean() - half, abs=0.15 * half)
    assert interval.high == pytest.approx(values.mean() + half, abs=0.15 * half)
    assert bootstrap_interval(parts(values), 2000, seed=9, confidence=0.95) == interval
    narrow = bootstrap_interval(parts(values), 2000, seed=9, confidence=0.5)
    assert interval.low < narrow.low < narrow.high < interval.high


def test_one_rankers_interval_pools_weighted_groups() -> None:
    pooled = MetricParts(np.array([2.0, 0.0, 1.0]), np.array([4.0, 1.0, 1.0]))
    interval = bootstrap_interval(pooled, 500, seed=3)
    assert interval.estimate == 0.5
    assert 0.0 <= interval.low < 0.5 < interval.high <= 1.0
    assert bootstrap_interval(parts([0.4] * 5), 50, seed=3) == Interval(
        pytest.approx(0.4), pytest.approx(0.4), pytest.approx(0.4)
    )

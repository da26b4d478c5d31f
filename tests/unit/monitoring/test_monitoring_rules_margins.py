"""The monitoring rules at their margins: what exactly breaches, when calibration starts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankflow.monitoring.rules import (
    Figure,
    Threshold,
    calibrated_threshold,
    finite,
    jensen_shannon,
    judge,
    psi,
)

CALIBRATION = {"min_clean_days": 3, "mad_multiplier": 5.0, "relative_floor": 0.002}
CONFIG = {"thresholds": {"list_coverage": {"min": 0.99}}, "calibration": CALIBRATION}


def test_a_value_on_a_bound_is_inside_it() -> None:
    bounds = Threshold(0.5, 2.0, "default")
    assert not bounds.breached_by(0.5)
    assert not bounds.breached_by(2.0)
    assert bounds.breached_by(0.4999)
    assert bounds.breached_by(2.0001)
    assert bounds.breached_by(math.nan)


def test_an_unwatched_side_never_breaches() -> None:
    assert not Threshold(None, 1.0, "default").breached_by(-1e9)
    assert not Threshold(0.0, None, "default").breached_by(1e9)


def test_calibration_starts_at_exactly_min_clean_days() -> None:
    default = Threshold(0.99, None, "default")
    assert calibrated_threshold(default, [0.995, 0.996], CALIBRATION) == default
    calibrated = calibrated_threshold(default, [0.995, 0.996, 0.997], CALIBRATION)
    assert calibrated.source == "calibrated(3d)"
    # missing days do not count towards the minimum
    assert calibrated_threshold(default, [0.995, 0.996, math.nan], CALIBRATION) == default


def test_calibrated_bounds_are_median_plus_minus_k_robust_sigmas_on_the_watched_sides() -> None:
    values = [10.0, 11.0, 12.0, 13.0, 30.0]  # median 12, MAD 1
    margin = 5.0 * 1.4826 * 1.0
    both = calibrated_threshold(Threshold(0.0, 100.0, "default"), values, CALIBRATION)
    assert (both.lower, both.upper) == pytest.approx((12.0 - margin, 12.0 + margin))
    upper_only = calibrated_threshold(Threshold(None, 100.0, "default"), values, CALIBRATION)
    assert upper_only.lower is None
    assert upper_only.upper == pytest.approx(12.0 + margin)


def test_judge_records_the_bounds_it_used_and_leaves_unwatched_figures_unjudged() -> None:
    rows = judge(
        [Figure("lists", "list_coverage", 0.98), Figure("lists", "recall_users", 12.0)], CONFIG
    )
    watched, recorded = rows
    assert (watched["lower"], watched["upper"]) == (0.99, None)
    assert watched["threshold_source"] == "default"
    assert watched["breached"] is True
    assert (recorded["lower"], recorded["upper"]) == (None, None)
    assert recorded["threshold_source"] == "none"
    assert recorded["breached"] is False
    assert set(watched) == set(recorded)


def test_a_missing_figure_is_nan_and_breaches_a_watched_bound() -> None:
    assert math.isnan(finite(None))
    assert finite(3) == 3.0
    assert isinstance(finite(3), float)
    (row,) = judge([Figure("lists", "list_coverage", finite(None))], CONFIG)
    assert row["breached"] is True


def test_shares_of_counts_of_any_type_and_of_nothing() -> None:
    ints = np.array([1, 1, 2])
    assert psi(ints, np.array([2, 2, 4])) == pytest.approx(0.0)
    assert jensen_shannon(ints, ints) == pytest.approx(0.0)
    # one count against nothing: every bin is floored, not divided by zero
    assert math.isfinite(psi(np.array([1, 0, 0]), np.array([0, 0, 0])))
    assert psi(np.array([1, 0]), np.array([0, 1])) > 1.0

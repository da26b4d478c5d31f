"""Pure monitoring logic: drift measures, concentration, thresholds and their calibration."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pytest

from rankflow.config import load_pipeline_config
from rankflow.evaluation.lists import gini, top_slot_share
from rankflow.monitoring.history import latest_day
from rankflow.monitoring.rules import (
    MAD_TO_SIGMA,
    Figure,
    Threshold,
    breaches,
    calibrated_threshold,
    clean_values,
    jensen_shannon,
    judge,
    psi,
)

CONFIG = load_pipeline_config(env={})["monitoring"]


def test_psi_is_zero_for_the_same_shape_and_grows_with_the_shift() -> None:
    reference = np.array([100, 200, 300, 400])
    assert psi(reference, reference * 3) == pytest.approx(0.0)
    small = psi(reference, np.array([110, 200, 290, 400]))
    large = psi(reference, np.array([400, 300, 200, 100]))
    assert 0 < small < 0.01 < 0.25 < large


def test_psi_matches_the_textbook_formula_and_counts_a_vanished_bin() -> None:
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(p, q) == pytest.approx(expected)
    assert math.isfinite(psi(np.array([50, 50, 0]), np.array([0, 50, 50])))
    assert psi(np.array([50, 50, 0]), np.array([0, 50, 50])) > 1


def test_jensen_shannon_is_bounded_symmetric_and_one_for_disjoint_histograms() -> None:
    a, b = np.array([1, 2, 3, 0]), np.array([0, 3, 2, 1])
    assert jensen_shannon(a, a) == pytest.approx(0.0)
    assert jensen_shannon(a, b) == pytest.approx(jensen_shannon(b, a))
    assert 0 < jensen_shannon(a, b) < 1
    assert jensen_shannon(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)


def test_gini_of_equal_and_of_concentrated_exposure() -> None:
    assert gini(np.full(100, 7.0)) == pytest.approx(0.0)
    one_holds_all = np.zeros(100)
    one_holds_all[0] = 50
    assert gini(one_holds_all) == pytest.approx(0.99)
    assert gini(np.array([])) == 0.0


def test_sellers_without_slots_count_in_the_gini_only() -> None:
    # 98 sellers with no slot, one with 10, one with 90: the top seller holds 90% of the slots
    slots = np.array([0] * 98 + [10, 90])
    assert top_slot_share(slots, top_percent=1) == pytest.approx(0.9)
    assert gini(slots) > 0.95
    assert gini(np.array([10, 90])) < 0.5
    assert gini(np.full(10, 5)) == pytest.approx(0.0)
    assert top_slot_share(np.full(10, 5), top_percent=1) == pytest.approx(0.1)
    assert top_slot_share(np.zeros(3), top_percent=1) == 0.0


def test_a_threshold_breaches_outside_its_bounds_and_on_a_missing_figure() -> None:
    watched = Threshold(lower=0.9, upper=None, source="default")
    assert not watched.breached_by(0.95)
    assert watched.breached_by(0.5)
    assert watched.breached_by(float("nan"))


def test_calibration_needs_enough_clean_days_then_follows_them() -> None:
    default = Threshold(lower=None, upper=0.25, source="default")
    calibration = CONFIG["calibration"]
    few = [0.02] * (calibration["min_clean_days"] - 1)
    assert calibrated_threshold(default, few, calibration) is default
    rng = np.random.default_rng(3)
    steady = list(0.03 + rng.normal(0, 0.002, 30))
    calibrated = calibrated_threshold(default, steady, calibration)
    assert calibrated.lower is None  # only the watched side is calibrated
    assert calibrated.upper is not None
    assert 0.03 < calibrated.upper < 0.06
    assert calibrated.source == "calibrated(30d)"
    noisy_feature = list(0.4 + rng.normal(0, 0.05, 30))  # always above the default
    assert calibrated_threshold(default, noisy_feature, calibration).upper > 0.5


def test_calibrated_bounds_are_the_median_plus_minus_k_robust_sigmas_exactly() -> None:
    """1.4826 x MAD estimates a normal sample's standard deviation: pinned, with the formula."""
    assert MAD_TO_SIGMA == 1.4826
    calibration = {**CONFIG["calibration"], "relative_floor": 0.0}
    k = float(calibration["mad_multiplier"])
    values = [10.0, 11.0, 12.0, 13.0, 30.0] * 4  # median 12, MAD 1: the outlier does not count
    both = calibrated_threshold(Threshold(0.0, 100.0, "default"), values, calibration)
    assert both.lower == pytest.approx(12.0 - k * 1.4826)
    assert both.upper == pytest.approx(12.0 + k * 1.4826)
    rng = np.random.default_rng(11)
    normal = list(rng.normal(50.0, 2.0, 4000))
    wide = calibrated_threshold(Threshold(None, 100.0, "default"), normal, calibration)
    assert wide.upper == pytest.approx(50.0 + k * 2.0, rel=0.02)  # k sigmas of the sample


def test_calibration_keeps_a_margin_for_a_perfectly_steady_figure() -> None:
    default = Threshold(lower=0.99, upper=None, source="default")
    calibrated = calibrated_threshold(default, [1.0] * 20, CONFIG["calibration"])
    assert calibrated.lower is not None
    assert 0.85 < calibrated.lower < 1.0


def history(days: int, value: float, breached_day: int | None = None) -> list[dict]:
    start = date(2026, 10, 1)
    return [
        {
            "ds": start + timedelta(days=i),
            "metric": "list_coverage",
            "subject": "",
            "value": value if i != breached_day else 0.5,
            "breached": i == breached_day,
        }
        for i in range(days)
    ]


def test_only_days_without_any_breach_count_as_clean() -> None:
    rows = history(20, 0.998, breached_day=4)
    rows.append(
        {"ds": date(2026, 10, 8), "metric": "feature_psi", "subject": "x", "value": 0.9,
         "breached": True}
    )  # fmt: skip
    clean = clean_values(rows)
    assert len(clean[("list_coverage", "")]) == 18  # day 4 and day 7 (another breach) left out
    assert ("feature_psi", "x") not in clean


def test_judge_uses_defaults_first_then_calibrated_bounds() -> None:
    figures = [
        Figure("lists", "list_coverage", 0.97),
        Figure("lists", "lists", 1234.0),
        Figure("feature", "feature_psi", 0.3, "item_ctr_7d"),
    ]
    first_night = {row["metric"]: row for row in judge(figures, CONFIG)}
    assert first_night["list_coverage"]["breached"]
    assert first_night["list_coverage"]["threshold_source"] == "default"
    assert first_night["lists"]["threshold_source"] == "none"
    assert not first_night["lists"]["breached"]
    assert first_night["feature_psi"]["breached"]
    assert [b["metric"] for b in breaches(first_night.values())] == [
        "list_coverage",
        "feature_psi",
    ]
    # a surface whose coverage is always about 0.96 calibrates below it
    later = {row["metric"]: row for row in judge(figures, CONFIG, history(30, 0.965))}
    assert later["list_coverage"]["threshold_source"].startswith("calibrated")
    assert not later["list_coverage"]["breached"]


def test_latest_day_picks_the_rows_of_the_most_recent_day() -> None:
    rows = [
        {"ds": "2026-10-01", "v": 1},
        {"ds": "2026-10-03", "v": 2},
        {"ds": "2026-10-03", "v": 3},
    ]
    assert [r["v"] for r in latest_day(rows)] == [2, 3]
    assert latest_day([]) == []

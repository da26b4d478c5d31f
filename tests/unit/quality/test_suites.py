"""Pure rules of the data-quality gates: recent-day row counts, query groups, label leakage."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from rankflow.quality.gates import CRITICAL, WARNING, CheckOutcome, QualityReport
from rankflow.quality.suites import (
    expected_row_range,
    leakage_outcome,
    perfect_separators,
    query_groups_outcome,
    row_count_outcomes,
)

D = date(2026, 10, 20)


def test_expected_row_range_needs_enough_history() -> None:
    assert expected_row_range([100, 110], 0.5, 2.0, min_days=3) is None
    assert expected_row_range([100, 90, 300], 0.5, 2.0, min_days=3) == (50, 201)


def test_a_collapsed_or_doubled_day_fails_against_its_recent_days() -> None:
    counts = {D - timedelta(days=d): 1000 for d in range(1, 8)}
    counts[D] = 300
    counts[D + timedelta(days=1)] = 1000
    first, second = row_count_outcomes(counts, [D, D + timedelta(days=1)], 0.5, 2.0, 7)
    assert not first.success
    assert "300 rows" in first.observed
    assert second.success


def test_days_without_history_are_reported_not_judged() -> None:
    (outcome,) = row_count_outcomes({D: 5}, [D], 0.5, 2.0, 7)
    assert outcome.success
    assert "not judged" in outcome.observed


def test_a_missing_day_counts_as_zero_rows() -> None:
    counts = {D - timedelta(days=d): 1000 for d in range(1, 8)}
    (outcome,) = row_count_outcomes(counts, [D], 0.5, 2.0, 7)
    assert not outcome.success


def test_query_groups_must_be_contiguous_and_sorted() -> None:
    assert query_groups_outcome(["a", "a", "b", "c", "c"]).success
    assert not query_groups_outcome(["a", "b", "a"]).success
    assert not query_groups_outcome(["b", "b", "a"]).success


def test_a_feature_that_knows_the_label_is_a_leak() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"label": rng.integers(0, 3, 500), "honest": rng.normal(size=500)})
    frame["copy"] = frame["label"] * 2.0 + 0.5
    frame["negated"] = -frame["label"]
    assert perfect_separators(frame, ["honest", "copy", "negated"]) == ["copy", "negated"]
    assert not leakage_outcome(frame, ["honest", "label"]).success
    assert leakage_outcome(frame, ["honest"]).success


def test_only_critical_failures_block() -> None:
    outcomes = (
        CheckOutcome("a", "x", CRITICAL, True, ""),
        CheckOutcome("b", "y", WARNING, False, "3 unexpected"),
    )
    report = QualityReport("suite", "2026-10-20", outcomes)
    assert report.blocking == []
    assert [o.check for o in report.warnings] == ["b"]
    assert "passed" in report.summary()
    blocked = QualityReport(
        "suite", "2026-10-20", (*outcomes, CheckOutcome("c", None, CRITICAL, False, ""))
    )
    assert blocked.as_dict()["blocked"]
    assert blocked.summary().startswith("suite 2026-10-20: blocked; critical c")

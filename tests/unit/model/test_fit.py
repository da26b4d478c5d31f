"""Training inputs: the window before the held-out day, and contiguous query groups."""

from __future__ import annotations

from datetime import date

import pandas as pd

from rankflow.model.fit import group_sizes, sort_by_query, training_window


def test_training_window_is_strictly_before_the_test_day() -> None:
    window = training_window(date(2026, 10, 30), {"train_days": 10, "validation_days": 1})
    assert window.test_day == date(2026, 10, 30)
    assert window.validation_start == window.validation_end == date(2026, 10, 29)
    assert window.train_end == date(2026, 10, 28)
    assert window.train_start == date(2026, 10, 19)


def test_group_sizes_follow_contiguous_query_groups() -> None:
    frame = pd.DataFrame(
        {"ds": ["d"] * 5, "qid": ["b", "a", "b", "a", "c"], "position": [1, 1, 2, 2, 1]}
    )
    ordered = sort_by_query(frame)
    assert list(ordered.qid) == ["a", "a", "b", "b", "c"]
    assert list(group_sizes(ordered.qid)) == [2, 2, 1]

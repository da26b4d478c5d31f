"""Training inputs: the window before the held-out day, and contiguous query groups."""

from __future__ import annotations

from datetime import date

import pandas as pd

from rankflow.model.fit import LocalRows, group_sizes, sort_by_query, training_window


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


def query_rows(groups: int, size: int) -> pd.DataFrame:
    """``groups`` query groups of ``size`` rows each over two days, sorted by query."""
    return sort_by_query(
        pd.DataFrame(
            {
                "ds": [f"2026-11-0{1 + g % 2}" for g in range(groups) for _ in range(size)],
                "qid": [f"q{g}" for g in range(groups) for _ in range(size)],
                "position": [p for _ in range(groups) for p in range(1, size + 1)],
            }
        )
    )


def test_a_sample_of_query_groups_keeps_whole_groups_in_order_and_repeats() -> None:
    train, validation = query_rows(2000, 5), query_rows(10, 5)
    rows = LocalRows(train, validation)
    sample = rows.groups_sample(3000)
    kept = sample.train
    assert 2500 < len(kept) < 3500  # about the rows asked for, in whole groups
    assert set(kept.groupby(["ds", "qid"]).size()) == {5}
    assert kept.equals(sort_by_query(kept))  # still in query order, positions in shown order
    assert sample.validation is validation  # early stopping watches every validation group
    assert rows.groups_sample(3000).train.equals(kept)  # the same groups on a rerun
    assert rows.groups_sample(len(train)) is rows  # nothing to cut: the rows themselves

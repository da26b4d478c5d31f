"""Pure logic: trigger params, training window, top-K, query groups, S3 manifest."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from rankflow.model.fit import group_sizes, sort_by_query, training_window
from rankflow.model.scoring import top_k_per_user
from rankflow.publish.s3 import build_manifest
from rankflow.steps.params import InvalidParamsError, resolve_run_date

PARAMS = {"ds": None, "surface": "home", "top_k": 100, "retrain": True}
TODAY = date(2026, 11, 25)


def test_run_date_defaults_to_data_interval_start() -> None:
    start = datetime(2026, 11, 20, 2, tzinfo=UTC)
    assert resolve_run_date(PARAMS, start, TODAY) == "2026-11-20"


def test_run_date_param_wins() -> None:
    start = datetime(2026, 11, 20, 2, tzinfo=UTC)
    assert resolve_run_date({**PARAMS, "ds": "2026-11-01"}, start, TODAY) == "2026-11-01"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"ds": "2026-13-01"}, "not a date"),
        ({"ds": "2026-11-25"}, "not over yet"),
        ({"surface": "checkout"}, "surface"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": "100"}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"retrain": "yes"}, "retrain"),
    ],
)
def test_invalid_params_are_rejected_with_a_reason(override: dict, message: str) -> None:
    with pytest.raises(InvalidParamsError, match=message):
        resolve_run_date({**PARAMS, **override}, datetime(2026, 11, 20, tzinfo=UTC), TODAY)


def test_missing_interval_and_ds_is_rejected() -> None:
    with pytest.raises(InvalidParamsError, match="ds param"):
        resolve_run_date(PARAMS, None, TODAY)


def test_training_window_is_strictly_before_the_test_day() -> None:
    window = training_window(date(2026, 10, 30), {"train_days": 10, "validation_days": 1})
    assert window.test_day == date(2026, 10, 30)
    assert window.validation_start == window.validation_end == date(2026, 10, 29)
    assert window.train_end == date(2026, 10, 28)
    assert window.train_start == date(2026, 10, 19)


def test_top_k_keeps_best_items_per_user_in_order() -> None:
    users = np.array([2, 1, 2, 1, 2, 1, 3])
    items = np.array([20, 10, 21, 11, 22, 12, 30])
    scores = np.array([0.1, 0.9, 0.5, 0.2, 0.5, 0.3, 1.0])
    ranked = top_k_per_user(users, items, scores, k=2)
    as_lists = {
        int(u): list(map(int, i)) for u, i in zip(ranked.user_id, ranked.item_ids, strict=True)
    }
    # user 2: items 21 and 22 tie on 0.5 -> smaller item id first
    assert as_lists == {1: [10, 12], 2: [21, 22], 3: [30]}
    assert [len(s) for s in ranked.scores] == [2, 2, 1]


def test_top_k_handles_short_lists_and_k_larger_than_candidates() -> None:
    ranked = top_k_per_user(np.array([5, 5]), np.array([1, 2]), np.array([0.0, 1.0]), k=100)
    assert list(ranked.item_ids[0]) == [2, 1]


def test_group_sizes_follow_contiguous_query_groups() -> None:
    frame = pd.DataFrame(
        {"ds": ["d"] * 5, "qid": ["b", "a", "b", "a", "c"], "position": [1, 1, 2, 2, 1]}
    )
    ordered = sort_by_query(frame)
    assert list(ordered.qid) == ["a", "a", "b", "b", "c"]
    assert list(group_sizes(ordered.qid)) == [2, 2, 1]


def test_manifest_counts_and_orders_parts() -> None:
    parts = [
        {"key": "p/part-00001.parquet", "rows": 3, "bytes": 30, "sha256": "b"},
        {"key": "p/part-00000.parquet", "rows": 2, "bytes": 20, "sha256": "a"},
    ]
    manifest = build_manifest(parts, {"model_version": "4"}, datetime(2026, 1, 1, tzinfo=UTC))
    assert manifest["users"] == 5
    assert manifest["schema_version"] == 1
    assert [p["sha256"] for p in manifest["parts"]] == ["a", "b"]
    assert manifest["model_version"] == "4"

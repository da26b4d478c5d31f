"""Trigger params of the nightly DAG: the day to process, and bad params refused with a reason."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

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

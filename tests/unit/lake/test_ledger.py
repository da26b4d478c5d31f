"""The promotion ledger's events and the replay that says what readers were served."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from rankflow.lake.ledger import COLUMNS, LedgerEvent, served_at

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def _ledger(events: list[LedgerEvent]) -> pd.DataFrame:
    return pd.DataFrame([e.as_row() for e in events], columns=COLUMNS)


def test_the_same_task_retried_yields_the_same_event_id() -> None:
    first = LedgerEvent(
        "publish_redis",
        T0,
        surface="home",
        redis_version="v1",
        model_version="3",
        airflow_run_id="scheduled__1",
    )
    retried = LedgerEvent(
        "publish_redis",
        T0 + timedelta(minutes=5),
        surface="home",
        redis_version="v1",
        model_version="3",
        airflow_run_id="scheduled__1",
    )
    assert first.event_id == retried.event_id
    other_run = LedgerEvent(
        "publish_redis",
        T0,
        surface="home",
        redis_version="v1",
        model_version="3",
        airflow_run_id="manual__2",
    )
    assert other_run.event_id != first.event_id


def test_two_manual_rollbacks_are_two_events() -> None:
    a = LedgerEvent("rollback", T0, surface="home", redis_version="v1", model_version="3")
    b = LedgerEvent(
        "rollback", T0 + timedelta(hours=1), surface="home", redis_version="v1", model_version="3"
    )
    assert a.event_id != b.event_id


def test_unknown_event_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown ledger event 'deploy'"):
        LedgerEvent("deploy", T0)


def test_replay_follows_publications_and_rollbacks_of_one_surface() -> None:
    ledger = _ledger(
        [
            LedgerEvent("promote", T0, model_version="1"),
            LedgerEvent(
                "publish_redis",
                T0,
                surface="home",
                redis_version="v1",
                model_version="1",
                airflow_run_id="r1",
                gold_version=4,
            ),
            LedgerEvent(
                "publish_redis",
                T0 + timedelta(days=1),
                surface="home",
                redis_version="v2",
                model_version="2",
                airflow_run_id="r2",
            ),
            LedgerEvent(
                "publish_redis",
                T0 + timedelta(days=1, hours=1),
                surface="search",
                redis_version="s9",
                model_version="9",
                airflow_run_id="r3",
            ),
            LedgerEvent(
                "rollback",
                T0 + timedelta(days=1, hours=2),
                surface="home",
                redis_version="v1",
                model_version="1",
                reason="bad lists",
            ),
        ]
    )
    assert served_at(ledger, "home", T0 - timedelta(hours=1)).redis_version is None
    assert served_at(ledger, "home", T0 + timedelta(hours=5)).model_version == "1"
    during = served_at(ledger, "home", T0 + timedelta(days=1, minutes=30))
    assert (during.redis_version, during.model_version, during.airflow_run_id) == ("v2", "2", "r2")
    after = served_at(ledger, "home", T0 + timedelta(days=2))
    assert (after.redis_version, after.model_version) == ("v1", "1")
    # the rollback serves v1 again: the day, run and gold version v1 was published with
    assert (after.gold_version, after.airflow_run_id) == (4, "r1")
    assert served_at(ledger, "search", T0 + timedelta(days=2)).model_version == "9"

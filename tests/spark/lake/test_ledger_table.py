"""The promotion ledger as a Delta table: append-only, and a retried task records once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from rankflow.config import Settings
from rankflow.lake.ledger import LEDGER_TABLE, LedgerEvent, append_events, read_ledger

pytestmark = pytest.mark.spark
T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def test_retries_append_nothing_twice_and_rows_cannot_be_changed(
    spark: Any, lake_settings: Settings
) -> None:
    events = [
        LedgerEvent(
            "promote",
            T0,
            model_version="2",
            previous_champion="1",
            gate_promote=True,
            gate_reason="ok",
            airflow_run_id="r1",
        ),
        LedgerEvent(
            "publish_redis",
            T0,
            surface="home",
            model_version="2",
            redis_version="v2",
            airflow_run_id="r1",
        ),
    ]
    assert append_events(spark, lake_settings, events) == 2
    assert append_events(spark, lake_settings, events) == 0  # the task retried
    ledger = read_ledger(spark, lake_settings)
    assert list(ledger["event"]) == ["promote", "publish_redis"]
    assert ledger.loc[0, "previous_champion"] == "1"
    path = lake_settings.paths.table(LEDGER_TABLE)
    with pytest.raises(Exception, match=r"(?i)append.?only|delete"):
        spark.sql(f"DELETE FROM delta.`{path}` WHERE event = 'promote'")
    assert len(read_ledger(spark, lake_settings)) == 2


def test_an_absent_ledger_reads_as_empty(spark: Any, lake_settings: Settings) -> None:
    assert read_ledger(spark, lake_settings).empty


def race(spark: Any, settings: Settings, event: LedgerEvent) -> tuple[list[int], list[str]]:
    """Append ``event`` from two threads released at the same instant: (counts, errors)."""
    start = threading.Barrier(2)
    counts: list[int] = []
    errors: list[str] = []

    def append() -> None:
        start.wait()
        try:
            counts.append(append_events(spark, settings, [event]))
        except Exception as error:  # surfaced by the caller, with its text
            errors.append(str(error)[:3000])

    threads = [threading.Thread(target=append) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return counts, errors


def test_two_concurrent_appends_of_the_same_event_record_it_once(
    spark: Any, lake_settings: Settings
) -> None:
    """Two tasks (a retry and its zombie, or two backfills) appending at the same moment."""
    rounds = 4  # the first round also races to create the table
    for round_ in range(rounds):
        event = LedgerEvent(
            "publish_redis",
            T0,
            surface="home",
            model_version=str(round_),
            redis_version=f"v{round_}",
            airflow_run_id=f"race-{round_}",
        )
        counts, errors = race(spark, lake_settings, event)
        assert errors == [], f"round {round_}: {errors}"
        assert sorted(counts) == [0, 1], f"round {round_}: {counts}"
    ledger = read_ledger(spark, lake_settings)
    assert len(ledger) == rounds
    assert ledger["event_id"].is_unique

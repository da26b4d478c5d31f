"""The promotion ledger as a Delta table: append-only, and a retried task records once."""

from __future__ import annotations

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

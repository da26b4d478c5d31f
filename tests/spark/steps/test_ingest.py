"""Ingest: explicit schema, quarantine with reasons, the malformed-share limit, idempotence."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from rankflow.quality.gates import DataQualityError
from rankflow.quality.raw import raw_day_path
from rankflow.steps.ingest import ingest_range
from rankflow.transforms.bronze import IngestError

pytestmark = pytest.mark.spark
DS = date(2026, 10, 5)


def event(i: int, **override: object) -> str:
    row = {
        "event_id": f"e{i}",
        "event_type": "impression",
        "ts": "2026-10-05T10:00:00Z",
        "user_id": 7,
        "item_id": 100 + i,
        "surface": "home",
        "session_id": "s1",
        "position": i + 1,
        "schema_version": 1,
        "an_unknown_extra_field": "tolerated",
    }
    row.update(override)
    return json.dumps(row)


GOOD = [event(i) for i in range(20)]
BAD = {
    "malformed JSON or wrong type": '{"event_id": "x1", "event_type": ',
    "missing user_id": event(100, user_id=None),
    "unknown event_type": event(101, event_type="teleport"),
    "position < 1": event(102, position=0),
    "timestamp outside the drop's day": event(103, ts="2026-10-06T00:00:01Z"),
    "duplicate event_id": event(0),
    "item_id outside 1..2^32-1": event(104, item_id=2**33),
}


def land(settings, lines: list[str], kind: str = "events") -> Path:
    folder = raw_day_path(settings, kind, DS)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-00000.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "_SUCCESS").touch()
    return folder


def with_limit(settings, share: float):
    pipeline = {**settings.pipeline, "ingest": {"max_quarantine_share": share}}
    return replace(settings, pipeline=pipeline)


def test_malformed_rows_are_quarantined_with_their_reason(spark, lake_settings) -> None:
    settings = with_limit(lake_settings, 0.5)
    land(settings, GOOD + list(BAD.values()))
    stats = ingest_range(spark, settings, "events", DS, DS)[0]
    assert (stats.rows, stats.accepted, stats.quarantined) == (27, 20, 7)
    bronze = spark.read.format("delta").load(settings.paths.table("bronze/events"))
    assert bronze.count() == 20
    assert bronze.select("event_id").distinct().count() == 20
    quarantine = spark.read.format("delta").load(settings.paths.table("bronze/quarantine"))
    reasons = {r["reason"] for r in quarantine.collect()}
    assert reasons == set(BAD)
    assert all(r["raw"] for r in quarantine.collect())


def test_too_many_malformed_rows_fail_clearly_and_leave_bronze_untouched(
    spark, lake_settings
) -> None:
    settings = with_limit(lake_settings, 0.01)
    land(settings, GOOD + list(BAD.values()))
    with pytest.raises(DataQualityError, match=r"gate blocked: raw_events 2026-10-05"):
        ingest_range(spark, settings, "events", DS, DS)[0]
    assert not Path(settings.paths.table("bronze/events")).exists()
    quarantine = spark.read.format("delta").load(settings.paths.table("bronze/quarantine"))
    assert quarantine.count() == 7


def test_missing_success_marker_is_refused(spark, lake_settings) -> None:
    folder = land(lake_settings, GOOD)
    (folder / "_SUCCESS").unlink()
    with pytest.raises(IngestError, match="_SUCCESS is missing"):
        ingest_range(spark, lake_settings, "events", DS, DS)


def test_ingesting_twice_gives_the_same_table(spark, lake_settings) -> None:
    settings = with_limit(lake_settings, 0.5)
    land(settings, [*GOOD, BAD["unknown event_type"]])
    ingest_range(spark, settings, "events", DS, DS)[0]
    path = settings.paths.table("bronze/events")
    first = sorted(map(tuple, spark.read.format("delta").load(path).collect()))
    ingest_range(spark, settings, "events", DS, DS)[0]
    second = sorted(map(tuple, spark.read.format("delta").load(path).collect()))
    assert first == second
    quarantine = spark.read.format("delta").load(settings.paths.table("bronze/quarantine"))
    assert quarantine.count() == 1

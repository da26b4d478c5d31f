"""One corpus of raw lines through ingest's Spark rules and the live records' Python rules.

Every line must get the same verdict and the same reason from both
(``rankflow.transforms.bronze`` and ``rankflow.quality.live``), the day's window standing in
for the open window of a live record.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime

import pytest

from rankflow.quality.live import Window, parse_time_ms, rejection
from rankflow.transforms.bronze import parse_lines, validate

pytestmark = pytest.mark.spark

DS = date(2026, 12, 7)
MAX_LINE = 65_536
DAY = Window(
    int(datetime(2026, 12, 7, tzinfo=UTC).timestamp() * 1000),
    int(datetime(2026, 12, 8, tzinfo=UTC).timestamp() * 1000) - 1,
)


UNIQUE = itertools.count(1)  # ingest marks a repeated event or item id of a day: one id a line


def event(**changes: object) -> str:
    fields: dict[str, object] = {
        "event_id": f"e{next(UNIQUE)}", "event_type": "click", "ts": "2026-12-07T09:59:58.250Z",
        "user_id": 7, "item_id": 1_000_001, "surface": "home", "session_id": "s1",
        "position": 3,
    }  # fmt: skip
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not ...})


def item(**changes: object) -> str:
    fields: dict[str, object] = {
        "item_id": 1_000_000 + next(UNIQUE), "seller_id": 9, "listed_ts": "2026-12-07T09:58:00Z",
        "category": "dresses", "brand": "acme", "condition": "very_good", "price": 25.0,
    }  # fmt: skip
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not ...})


EVENTS = [
    event(),
    '{"event_id": "a", "event_id": "b", "event_type": "click"}',
    event(extra={"k": 1}).replace('"k": 1', '"k": 1, "k": 2'),  # a nested repeat: fine
    event()[:-5],
    "[1, 2]",
    event(user_id=1.9),
    event(user_id=True),
    event(user_id="12"),
    event(user_id=2**63),
    event(position=2**31),
    event(ts="yesterday"),
    event(ts=1_796_637_598),  # epoch seconds: 09:59:58 of the day
    event(ts="2026-12-07T09:59:58"),  # no zone: UTC
    event(ts="2026-12-07T11:59:58+02:00"),
    event(event_id=...),
    event(position=None),
    event(user_id=0),
    event(item_id=2**32),
    event(event_type="share"),
    event(position=0),
    event(session_id=123),
    event(schema_version="1"),
    event(ts="2026-12-06T23:59:59Z"),  # the day before: the one rule worded differently
]
ITEMS = [
    item(),
    item(price="NaN"),
    item(price="Infinity"),
    item().replace("25.0", "NaN"),
    item(price=0),
    item(price=-1.0),
    item(price=0, seller_rating="NaN"),
    item(seller_rating="x"),
    item(seller_id=...),
    item(style=5),
    item(seller_rating=None, size="M"),
]
SAME_RULE = {"timestamp outside the drop's day": "timestamp before the open window"}


@pytest.mark.parametrize(("kind", "lines"), [("events", EVENTS), ("items", ITEMS)])
def test_ingest_and_live_records_give_the_same_reasons(spark, kind: str, lines: list[str]) -> None:
    from pyspark.sql import functions as F

    frame = spark.createDataFrame([(line,) for line in lines], "value string")
    frame = frame.withColumn("ds", F.lit(DS))
    reasons = {
        row["raw"]: row["reason"]
        for row in validate(parse_lines(frame, kind), kind, MAX_LINE).collect()
    }
    for line in lines:
        spark_reason = reasons[line]
        live = rejection(kind, line.encode(), MAX_LINE, DAY)
        assert SAME_RULE.get(spark_reason, spark_reason) == live, line


def test_epoch_seconds_and_zones_read_as_ingest_reads_them() -> None:
    assert parse_time_ms("2026-12-07T11:59:58+02:00") == 1_796_637_598_000

"""Ingest: explicit schema, quarantine with reasons, the malformed-share limit, idempotence."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankflow.quality.gates import DataQualityError
from rankflow.quality.raw import EVENT_TYPES, raw_day_path
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
# hostile lines a broken or malicious producer writes: (the reason ingest must give, the line)
HOSTILE: list[tuple[str, str | bytes]] = [
    ("line over 65536 bytes", event(110, an_unknown_extra_field="x" * 70_000)),
    ("invalid UTF-8", event(111).encode().replace(b'"s1"', b'"s\xff1"')),
    ("duplicate JSON key", event(112)[:-1] + ', "user_id": 8}'),
    (
        "malformed JSON or wrong type",
        event(113)[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}",
    ),
    ("malformed JSON or wrong type", event(114, user_id=1.9)),
    ("malformed JSON or wrong type", event(115, user_id=True)),
    ("user_id outside 1..2^32-1", event(116, user_id=-3)),
    ("malformed JSON or wrong type", event(117, item_id="12")),
]


def item(i: int, **override: object) -> str:
    row = {
        "item_id": 500 + i,
        "seller_id": 9,
        "listed_ts": "2026-10-05T09:00:00Z",
        "category": "dresses",
        "brand": "acme",
        "condition": "good",
        "price": 12.5,
        "seller_rating": 4.5,
    }
    row.update(override)
    return json.dumps(row)


def land(settings, lines: list[str | bytes], kind: str = "events") -> Path:
    folder = raw_day_path(settings, kind, DS)
    folder.mkdir(parents=True, exist_ok=True)
    data = b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines)
    (folder / "part-00000.jsonl").write_bytes(data + b"\n")
    (folder / "_SUCCESS").touch()
    return folder


def with_limit(settings, share: float):
    pipeline = {
        **settings.pipeline,
        "ingest": {**settings.pipeline["ingest"], "max_quarantine_share": share},
    }
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


def test_hostile_lines_are_quarantined_with_their_reason_and_counted(spark, lake_settings) -> None:
    settings = with_limit(lake_settings, 0.5)
    land(settings, GOOD + [line for _, line in HOSTILE])
    stats = ingest_range(spark, settings, "events", DS, DS)[0]
    assert (stats.rows, stats.accepted, stats.quarantined) == (28, 20, 8)
    quarantine = spark.read.format("delta").load(settings.paths.table("bronze/quarantine"))
    assert Counter(r["reason"] for r in quarantine.collect()) == Counter(r for r, _ in HOSTILE)
    bronze = spark.read.format("delta").load(settings.paths.table("bronze/events"))
    assert {r["event_id"] for r in bronze.collect()} == {f"e{i}" for i in range(20)}


def test_non_finite_prices_and_ratings_never_reach_bronze(spark, lake_settings) -> None:
    settings = with_limit(lake_settings, 0.5)
    good = [item(i) for i in range(10)]
    nan_token = item(20)[:-1].replace('"price": 12.5', '"price": NaN') + "}"
    hostile = [
        ("price not finite (NaN or Infinity)", nan_token),
        ("price not finite (NaN or Infinity)", item(21, price="Infinity")),
        ("price not finite (NaN or Infinity)", item(22, price="-Infinity")),
        ("price <= 0", item(23, price=-1.0)),
        ("seller_rating not finite (NaN or Infinity)", item(24, seller_rating="NaN")),
    ]
    land(settings, good + [line for _, line in hostile], kind="items")
    stats = ingest_range(spark, settings, "items", DS, DS)[0]
    assert (stats.accepted, stats.quarantined) == (10, 5)
    quarantine = spark.read.format("delta").load(settings.paths.table("bronze/quarantine"))
    assert Counter(r["reason"] for r in quarantine.collect()) == Counter(r for r, _ in hostile)
    prices = [
        r["price"]
        for r in spark.read.format("delta").load(settings.paths.table("bronze/items")).collect()
    ]
    assert all(math.isfinite(p) for p in prices)


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


# --- property-based: whatever lines a producer writes, every line is accounted for -----------

FIELDS = ["event_id", "event_type", "ts", "user_id", "item_id", "surface", "session_id", "position"]
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def hostile_line(draw: st.DrawFn) -> bytes:
    """A good event line with one or more of the faults producers make."""
    i = draw(st.integers(min_value=1000, max_value=10**6))
    fields = {f: draw(JSON_VALUES) for f in draw(st.sets(st.sampled_from(FIELDS), max_size=2))}
    line = event(i, **fields).encode()
    fault = draw(st.sampled_from(["none", "truncate", "byte", "duplicate", "nest", "nan"]))
    if fault == "truncate":
        line = line[: draw(st.integers(min_value=0, max_value=len(line) - 1))]
    elif fault == "byte":
        at = draw(st.integers(min_value=0, max_value=len(line)))
        line = line[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + line[at:]
    elif fault == "duplicate":
        line = line[:-1] + b', "' + draw(st.sampled_from(FIELDS)).encode() + b'": 1}'
    elif fault == "nest":
        depth = draw(st.integers(min_value=1, max_value=3000))
        line = line[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    elif fault == "nan":
        line = line.replace(b'"position": ', b'"position": NaN, "p": ', 1)
    return line.replace(b"\n", b" ")


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(hostile_line(), min_size=50, max_size=150))
def test_every_generated_line_is_accepted_valid_or_quarantined_with_a_reason(
    spark, lake_settings, lines: list[bytes]
) -> None:
    settings = with_limit(lake_settings, 1.0)
    shutil.rmtree(settings.paths.home, ignore_errors=True)
    land(settings, [*GOOD, *lines])
    stats = ingest_range(spark, settings, "events", DS, DS)[0]
    assert stats.rows == len(GOOD) + len([line for line in lines if line.strip()])
    assert stats.accepted + stats.quarantined == stats.rows
    assert stats.accepted >= len(GOOD)
    quarantine = spark.read.format("delta").load(settings.paths.table("bronze/quarantine"))
    assert quarantine.where("reason IS NULL OR raw IS NULL").count() == 0
    assert quarantine.count() == stats.quarantined
    bronze = spark.read.format("delta").load(settings.paths.table("bronze/events")).collect()
    assert len(bronze) == stats.accepted
    for row in bronze:  # an accepted row honours the whole contract
        assert 1 <= row["user_id"] <= 2**32 - 1
        assert 1 <= row["item_id"] <= 2**32 - 1
        assert row["position"] >= 1
        assert row["event_type"] in EVENT_TYPES
        assert row["ts"] is not None
        assert all(row[f] is not None for f in FIELDS)

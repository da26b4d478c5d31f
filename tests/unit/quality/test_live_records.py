"""Live records get ingest's rules: the first broken rule's reason, the same texts, all or none."""

from __future__ import annotations

import json

import pytest

from rankflow.quality.live import (
    Listing,
    LiveEvent,
    Window,
    check_batch,
    decode_record,
    encode_record,
    parse_time_ms,
    rejection,
)

NOW = parse_time_ms("2026-12-07T10:00:00Z") or 0
WINDOW = Window.around(NOW, 3600, 300)


def event(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "event_id": "s1-3", "event_type": "click", "ts": "2026-12-07T09:59:58.250Z",
        "user_id": 7, "item_id": 1_000_001, "surface": "home", "session_id": "s1",
        "position": 3,
    }  # fmt: skip
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not ...}


def item(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "item_id": 1_000_002, "seller_id": 9, "listed_ts": "2026-12-07T09:58:00Z",
        "category": "dresses", "brand": "acme", "condition": "very_good", "price": 25.0,
    }  # fmt: skip
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not ...}


def line(record: dict[str, object]) -> bytes:
    return json.dumps(record).encode()


def reason(kind: str, raw: bytes) -> str | None:
    return rejection(kind, raw, 65_536, WINDOW)


def test_a_valid_event_and_listing_pass() -> None:
    assert reason("events", line(event())) is None
    assert reason("items", line(item())) is None
    assert reason("items", line(item(seller_rating=None, style="vintage", size="M"))) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff\xfe", "invalid UTF-8"),
        (b'{"event_id": "a", "event_id": "b"}', "duplicate JSON key"),
        (b'{"event_id": "a"', "malformed JSON or wrong type"),
        (b"[1, 2]", "malformed JSON or wrong type"),
        (line(event(user_id=1.9)), "malformed JSON or wrong type"),
        (line(event(user_id=True)), "malformed JSON or wrong type"),
        (line(event(user_id="12")), "malformed JSON or wrong type"),
        (line(event(ts="yesterday")), "malformed JSON or wrong type"),
        (line(event(event_id=...)), "missing event_id"),
        (line(event(position=None)), "missing position"),
        (line(event(user_id=0)), "user_id outside 1..2^32-1"),
        (line(event(item_id=2**32)), "item_id outside 1..2^32-1"),
        (line(event(event_type="share")), "unknown event_type"),
        (line(event(position=0)), "position < 1"),
        (line(event(ts="2026-12-07T08:00:00Z")), "timestamp before the open window"),
        (line(event(ts="2026-12-07T10:10:00Z")), "timestamp in the future"),
    ],
)
def test_each_broken_event_rule_gives_ingests_reason(raw: bytes, expected: str) -> None:
    assert reason("events", raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"price": NaN, "item_id": 1}', "missing seller_id"),  # NaN parses, as in Spark
        (line(item(price="12")), "malformed JSON or wrong type"),
        (line(item(seller_id=...)), "missing seller_id"),
        (line(item(price=-1.0)), "price <= 0"),
        (line(item(price=0)), "price <= 0"),
        (
            json.dumps(item()).replace("25.0", "Infinity").encode(),
            "price not finite (NaN or Infinity)",
        ),
        (line(item(seller_rating=float("nan"))), "seller_rating not finite (NaN or Infinity)"),
    ],
)
def test_each_broken_listing_rule_gives_ingests_reason(raw: bytes, expected: str) -> None:
    assert reason("items", raw) == expected


def test_the_line_length_is_checked_first() -> None:
    long = line(event(session_id="s" * 70_000, user_id=0))
    assert reason("events", long) == "line over 65536 bytes"


def test_unknown_fields_are_ignored_as_ingest_ignores_them() -> None:
    assert reason("events", line(event(app_version="9.1", schema_version=1))) is None


def test_times_without_a_zone_are_utc_as_in_ingest() -> None:
    assert parse_time_ms("2026-12-07T09:59:58") == parse_time_ms("2026-12-07T09:59:58Z")
    assert parse_time_ms("2026-12-07T11:59:58+02:00") == parse_time_ms("2026-12-07T09:59:58Z")


def test_a_batch_is_logged_whole_or_not_at_all() -> None:
    good = check_batch([line(event()), line(event(event_id="s1-4"))], [line(item())], 65_536,
                       WINDOW)  # fmt: skip
    assert not good.rejected
    assert [type(r) for r in good.records] == [Listing, LiveEvent, LiveEvent]
    bad = check_batch([line(event()), line(event(position=0))], [line(item(price=0))], 65_536,
                      WINDOW)  # fmt: skip
    assert bad.records == []
    assert [(r.kind, r.index, r.reason) for r in bad.rejected] == [
        ("items", 0, "price <= 0"),
        ("events", 1, "position < 1"),
    ]


def test_records_round_trip_through_the_log_bytes() -> None:
    checked = check_batch([line(event())], [line(item(size="M"))], 65_536, WINDOW)
    for record in checked.records:
        assert decode_record(encode_record(record)) == record
    click = checked.records[1]
    assert isinstance(click, LiveEvent)
    assert click.type_name == "click"
    assert click.ts_ms == NOW - 1750


def test_a_payload_that_is_not_a_record_raises() -> None:
    with pytest.raises(ValueError):
        decode_record(b"\x92\x07\xc0")
    with pytest.raises(ValueError):
        decode_record(b"garbage")

"""The sales-line contract: every hostile line is refused with its reason, every good one parsed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankflow.quality.raw import MAX_ID
from rankflow.quality.sales import (
    LineRejected,
    RejectedLine,
    Sale,
    parse_sale,
    read_sales_file,
)

GOOD = b'{"item_id": 1000046539, "sold_ts": "2026-10-31T02:14:07Z"}'
HOSTILE = {
    b'{"item_id": 1000046539, "sold_ts": "2026-10-31T02:1': "malformed JSON",
    b'{"item_id": 12, "sold_ts": "2026-10-31T02:14:07"}': "sold_ts without a time zone",
    b'{"item_id": 12, "sold_ts": "2026-10-31T02:14:07Z", "note": "caf\xe9"}': "invalid UTF-8",
    b'{"item_id": 12, "sold_ts": "2026-10-31T02:14:07Z", "x": ' + b"[" * 100_000 + b"]" * 100_000
    + b"}": "JSON nested too deeply",
    b'{"item_id": [[[12]]], "sold_ts": "2026-10-31T02:14:07Z"}': "item_id not an integer",
    b'{"item_id": 1.9, "sold_ts": "2026-10-31T02:14:07Z"}': "item_id not an integer",
    b'{"item_id": 12.0, "sold_ts": "2026-10-31T02:14:07Z"}': "item_id not an integer",
    b'{"item_id": true, "sold_ts": "2026-10-31T02:14:07Z"}': "item_id not an integer",
    b'{"item_id": -3, "sold_ts": "2026-10-31T02:14:07Z"}': "item_id not an integer",
    b'{"item_id": 0, "sold_ts": "2026-10-31T02:14:07Z"}': "item_id not an integer",
    b'{"item_id": 4294967296, "sold_ts": "2026-10-31T02:14:07Z"}': "item_id not an integer",
    b'{"item_id": "12", "sold_ts": "2026-10-31T02:14:07Z"}': "item_id not an integer",
    b'{"item_id": NaN, "sold_ts": "2026-10-31T02:14:07Z"}': "non-finite number NaN",
    b'{"item_id": -Infinity, "sold_ts": "2026-10-31T02:14:07Z"}': "non-finite number -Infinity",
    b'{"item_id": 12, "item_id": 13, "sold_ts": "2026-10-31T02:14:07Z"}': "duplicate key 'item_id'",
    b'{"sold_ts": "2026-10-31T02:14:07Z"}': "missing item_id",
    b'{"item_id": 12, "sold_ts": null}': "missing sold_ts",
    b'{"item_id": 12, "sold_ts": 1761876847}': "sold_ts not a string",
    b'{"item_id": 12, "sold_ts": "yesterday"}': "sold_ts not an ISO-8601 time",
    b'[{"item_id": 12, "sold_ts": "2026-10-31T02:14:07Z"}]': "not a JSON object",
    b'"just a string"': "not a JSON object",
}  # fmt: skip


def test_a_good_line_is_a_sale_in_utc() -> None:
    assert parse_sale(GOOD) == Sale(1000046539, datetime(2026, 10, 31, 2, 14, 7, tzinfo=UTC))
    shifted = parse_sale(b'{"item_id": 5, "sold_ts": "2026-10-31T04:14:07+02:00"}')
    assert shifted.sold_ts == datetime(2026, 10, 31, 2, 14, 7, tzinfo=UTC)
    assert shifted.sold_ts.tzinfo == UTC


@pytest.mark.parametrize(("line", "reason"), list(HOSTILE.items()), ids=list(HOSTILE.values()))
def test_each_hostile_line_is_refused_with_its_reason(line: bytes, reason: str) -> None:
    with pytest.raises(LineRejected, match=reason.replace("(", r"\(")):
        parse_sale(line, max_bytes=len(line) + 1)


def test_a_line_over_the_limit_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(LineRejected, match="line over 40 bytes"):
        parse_sale(GOOD, max_bytes=40)


def test_a_file_yields_its_sales_and_its_rejected_lines_in_order(tmp_path: Path) -> None:
    hostile = list(HOSTILE)
    huge = b'{"item_id": 7, "sold_ts": "2026-10-31T02:14:07Z", "pad": "' + b"x" * 5_000_000 + b'"}'
    path = tmp_path / "part-0.jsonl"
    path.write_bytes(b"\n".join([GOOD, *hostile, huge, b"", b"   ", GOOD]) + b"\n")
    parsed = list(read_sales_file(path, max_bytes=300_000))
    assert [type(p) for p in parsed] == [Sale] + [RejectedLine] * (len(hostile) + 1) + [Sale]
    rejected = [p for p in parsed if isinstance(p, RejectedLine)]
    assert [r.line for r in rejected] == list(range(2, len(hostile) + 3))
    assert rejected[-1].reason == "line over 300000 bytes"
    assert len(rejected[-1].raw) <= 2000  # the quarantine keeps a bounded, printable head
    assert "\\xe9" in rejected[2].raw  # the undecodable byte, escaped
    assert all(r.file == str(path) for r in rejected)


def sale_or_reason(line: bytes) -> Sale | str:
    """The parser's answer: a sale, or the reason it refused the line (any other error escapes)."""
    try:
        return parse_sale(line)
    except LineRejected as rejected:
        return str(rejected)


# --- property-based: whatever a producer writes, the parser answers a sale or a reason ------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_valid_sale_or_a_reason_never_a_crash(line: bytes) -> None:
    outcome = sale_or_reason(line)
    if isinstance(outcome, str):
        assert outcome  # a reason that says something
    else:
        assert 1 <= outcome.item_id <= MAX_ID
        assert outcome.sold_ts.tzinfo == UTC


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@settings(max_examples=400)
@given(
    item_id=JSON_VALUES,
    sold_ts=st.one_of(JSON_VALUES, st.datetimes().map(datetime.isoformat)),
    extra=st.dictionaries(st.sampled_from(["note", "item_id", "sold_ts"]), JSON_VALUES),
)
def test_hostile_fields_are_refused_and_valid_ones_accepted(item_id, sold_ts, extra) -> None:
    line = json.dumps({"item_id": item_id, "sold_ts": sold_ts}).encode()
    if extra:  # appended raw, so a repeated key really appears twice in the text
        line = line[:-1] + b", " + json.dumps(extra).encode()[1:]
    valid_id = type(item_id) is int and 1 <= item_id <= MAX_ID
    try:
        moment = datetime.fromisoformat(sold_ts) if isinstance(sold_ts, str) else None
    except ValueError:
        moment = None
    valid_ts = moment is not None and moment.tzinfo is not None
    repeated = bool(set(extra) & {"item_id", "sold_ts"})
    non_finite = any(token in line for token in (b"NaN", b"Infinity"))
    if valid_id and valid_ts and not repeated and not non_finite:
        assert parse_sale(line) == Sale(item_id, moment.astimezone(UTC))  # type: ignore[union-attr]
    else:
        with pytest.raises(LineRejected):
            parse_sale(line)


@given(
    item_id=st.integers(min_value=1, max_value=MAX_ID),
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    offset_minutes=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_every_valid_sale_round_trips(item_id: int, moment: datetime, offset_minutes: int) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    line = json.dumps({"item_id": item_id, "sold_ts": local.isoformat()}).encode()
    assert parse_sale(line) == Sale(item_id, moment)

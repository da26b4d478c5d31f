"""Live events and listings: the raw drop's rules (docs/raw-format.md) applied to one record.

``POST /v1/events`` and the stream updater check a record with the rules ingest applies to a
raw line (``rankflow.transforms.bronze.rejection_reason``), in the same order and with the same
reason texts, so a record the service accepts is one ingest accepts the next night; the one
rule a live record cannot have — "inside the drop's day" — becomes "inside the open window"
(not older than ``stream.max_event_age_seconds``, not ahead of the server's clock by more than
``stream.max_clock_skew_seconds``). ``tests/spark/transforms/test_live_event_rules.py`` runs one
corpus through both and requires the same reason for every line.

A valid record becomes a :class:`LiveEvent` or :class:`Listing`: compact, typed, the same bytes
on every backend (MessagePack, array-like).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from rankflow.quality.raw import EVENT_TYPES, MAX_ID, required_fields

_TYPE_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}

# the raw schema's field types (``rankflow.quality.raw.raw_schema``): what Spark's JSON reader
# takes for each; fields it does not name (``schema_version``, extras) are ignored, as there
_LONG, _INT, _DOUBLE, _TIME, _TEXT = "long", "int", "double", "time", "text"
_FIELDS = {
    "events": {
        "event_id": _TEXT, "event_type": _TEXT, "ts": _TIME, "user_id": _LONG,
        "item_id": _LONG, "surface": _TEXT, "session_id": _TEXT, "position": _INT,
    },
    "items": {
        "item_id": _LONG, "seller_id": _LONG, "listed_ts": _TIME, "category": _TEXT,
        "brand": _TEXT, "style": _TEXT, "size": _TEXT, "condition": _TEXT, "price": _DOUBLE,
        "seller_rating": _DOUBLE,
    },
}  # fmt: skip
_BOUNDS = {_LONG: (-(2**63), 2**63 - 1), _INT: (-(2**31), 2**31 - 1)}
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "+Infinity": math.inf, "-Infinity": -math.inf}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LiveEvent(msgspec.Struct, array_like=True, frozen=True):
    """One user event as the log carries it (``event_type`` as its index in ``EVENT_TYPES``)."""

    event_id: str
    event_type: int
    ts_ms: int
    user_id: int
    item_id: int
    surface: str
    session_id: str
    position: int

    @property
    def type_name(self) -> str:
        """The event type's name (``click``)."""
        return EVENT_TYPES[self.event_type]


class Listing(msgspec.Struct, array_like=True, frozen=True):
    """One new listing as the log carries it."""

    item_id: int
    seller_id: int
    listed_ts_ms: int
    category: str
    brand: str
    condition: str
    price: float
    style: str | None = None
    size: str | None = None
    seller_rating: float | None = None


LogRecord = LiveEvent | Listing


class Rejected(msgspec.Struct, frozen=True):
    """Why one record of a request was refused (its index in the request's list)."""

    kind: str
    index: int
    reason: str


@dataclass(frozen=True)
class Window:
    """The times a live record may carry, in ms since the epoch (both ends included)."""

    earliest_ms: int
    latest_ms: int

    @classmethod
    def around(cls, now_ms: int, max_age_seconds: float, max_skew_seconds: float) -> Window:
        """The window of a record received at ``now_ms``."""
        return cls(now_ms - int(max_age_seconds * 1000), now_ms + int(max_skew_seconds * 1000))


def parse_time_ms(text: str) -> int | None:
    """Milliseconds since the epoch of an ISO-8601 time (no zone: UTC, as ingest reads it)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1) if moment.year >= 1970 else None


class _Object(dict[str, Any]):
    """A JSON object that remembers whether its own keys repeat (nested ones are not checked)."""

    repeats = False


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    found = _Object(pairs)
    found.repeats = len(found) != len(pairs)
    return found


def _parse_constant(token: str) -> float:
    """JSON's lenient ``NaN``/``Infinity`` tokens parse (a later rule names the field)."""
    return float(token)


def decode_object(raw: bytes) -> dict[str, Any] | str:
    """The record's object, or the line rule it breaks (UTF-8, duplicate key, malformed).

    Only top-level keys are checked for repeats, as ingest checks them (``json_object_keys``).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid UTF-8"
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_parse_constant)
    except (ValueError, RecursionError):
        return "malformed JSON or wrong type"
    if not isinstance(value, _Object):
        return "malformed JSON or wrong type"
    return "duplicate JSON key" if value.repeats else dict(value)


def as_schema(kind: str, record: dict[str, Any]) -> dict[str, Any] | None:
    """The record's schema fields read as Spark's JSON reader reads them (None: a wrong type).

    Integers must be JSON integers within the column's range (``1.9``, ``true``, ``"12"`` are
    wrong); doubles take numbers and the strings ``NaN``/``Infinity``; strings take any scalar
    (``123`` reads as ``"123"``); times take ISO-8601 text or epoch seconds. Absent and null
    fields are None.
    """
    out: dict[str, Any] = {}
    for name, kind_of in _FIELDS[kind].items():
        value = record.get(name)
        if value is None:
            out[name] = None
        elif kind_of in _BOUNDS:
            low, high = _BOUNDS[kind_of]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                return None
            out[name] = value
        elif kind_of == _DOUBLE:
            if isinstance(value, str) and value in _NON_FINITE:
                out[name] = _NON_FINITE[value]
            elif isinstance(value, bool) or not isinstance(value, int | float):
                return None
            else:
                out[name] = float(value)
        elif kind_of == _TIME:
            if isinstance(value, int) and not isinstance(value, bool):
                out[name] = value * 1000
            elif isinstance(value, str) and (moment := parse_time_ms(value)) is not None:
                out[name] = moment
            else:
                return None
        elif isinstance(value, dict | list):
            return None  # no raw string field holds an object
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def rejection(kind: str, raw: bytes, max_line_bytes: int, window: Window) -> str | None:
    """The first rule a raw record of ``kind`` (``events`` or ``items``) breaks, or None.

    The order and texts are ingest's (``rankflow.transforms.bronze.rejection_reason``).
    """
    checked = checked_record(kind, raw, max_line_bytes, window)
    return checked if isinstance(checked, str) else None


def checked_record(
    kind: str, raw: bytes, max_line_bytes: int, window: Window
) -> dict[str, Any] | str:
    """The record's schema fields (times in ms), or the first rule it breaks."""
    if len(raw) > max_line_bytes:
        return f"line over {max_line_bytes} bytes"
    record = decode_object(raw)
    if isinstance(record, str):
        return record
    fields = as_schema(kind, record)
    if fields is None:
        return "malformed JSON or wrong type"
    reason = field_rejection(kind, fields, window)
    return reason if reason is not None else fields


def field_rejection(kind: str, fields: dict[str, Any], window: Window) -> str | None:
    """The first field rule a record's schema fields break, or None (see :func:`rejection`)."""
    for name in required_fields(kind):
        if fields.get(name) is None:
            return f"missing {name}"
    ids = ("user_id", "item_id") if kind == "events" else ("item_id", "seller_id")
    for name in ids:
        if not 1 <= fields[name] <= MAX_ID:
            return f"{name} outside 1..2^32-1"
    if kind == "events":
        if fields["event_type"] not in EVENT_TYPES:
            return "unknown event_type"
        if fields["position"] < 1:
            return "position < 1"
        moment = fields["ts"]
    else:
        if not math.isfinite(fields["price"]):
            return "price not finite (NaN or Infinity)"
        if fields["price"] <= 0:
            return "price <= 0"
        rating = fields.get("seller_rating")
        if rating is not None and not math.isfinite(rating):
            return "seller_rating not finite (NaN or Infinity)"
        moment = fields["listed_ts"]
    if moment < window.earliest_ms:
        return "timestamp before the open window"
    if moment > window.latest_ms:
        return "timestamp in the future"
    return None


def live_event(record: dict[str, Any]) -> LiveEvent:
    """The log's form of a valid event record."""
    return LiveEvent(
        event_id=record["event_id"],
        event_type=_TYPE_CODE[record["event_type"]],
        ts_ms=record["ts"],
        user_id=record["user_id"],
        item_id=record["item_id"],
        surface=record["surface"],
        session_id=record["session_id"],
        position=record["position"],
    )


def listing(record: dict[str, Any]) -> Listing:
    """The log's form of a valid listing record."""
    return Listing(
        item_id=record["item_id"],
        seller_id=record["seller_id"],
        listed_ts_ms=record["listed_ts"],
        category=record["category"],
        brand=record["brand"],
        condition=record["condition"],
        price=float(record["price"]),
        style=record.get("style"),
        size=record.get("size"),
        seller_rating=(
            None if record.get("seller_rating") is None else float(record["seller_rating"])
        ),
    )


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/events``: user events and new listings, each raw JSON."""

    events: list[msgspec.Raw] = msgspec.field(default_factory=list)
    items: list[msgspec.Raw] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class Checked:
    """A request's records in log form, or every refused record with its reason."""

    records: list[LogRecord]
    rejected: list[Rejected]


def check_batch(
    events: Sequence[bytes], items: Sequence[bytes], max_line_bytes: int, window: Window
) -> Checked:
    """Check every record of a request; all must pass for any to be logged."""
    records: list[LogRecord] = []
    rejected: list[Rejected] = []
    for kind, raws in (("items", items), ("events", events)):
        for index, raw in enumerate(raws):
            checked = checked_record(kind, bytes(raw), max_line_bytes, window)
            if isinstance(checked, str):
                rejected.append(Rejected(kind, index, checked))
            elif not rejected:
                records.append(live_event(checked) if kind == "events" else listing(checked))
    return Checked([] if rejected else records, rejected)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw])


def encode_record(record: LogRecord) -> bytes:
    """A record's bytes on the log: MessagePack ``[kind, record]`` (0 event, 1 listing)."""
    return _ENCODER.encode((0 if isinstance(record, LiveEvent) else 1, record))


def decode_record(payload: bytes) -> LogRecord:
    """A log entry's record (raises ``msgspec.DecodeError`` or ``ValueError`` when malformed)."""
    kind, body = _DECODER.decode(payload)
    if kind == 0:
        return msgspec.msgpack.decode(body, type=LiveEvent)
    if kind == 1:
        return msgspec.msgpack.decode(body, type=Listing)
    raise ValueError(f"unknown record kind {kind}")

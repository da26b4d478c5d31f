"""The hourly sales drops' contract (docs/raw-format.md): one line parsed, or the reason it is not.

The sold-item repair runs every hour on lines a producer wrote minutes ago, so a bad line must
neither stop it (the rest of the hour is applied) nor pass unseen (it is quarantined with its
reason and counted). Each line is checked in order: its length, UTF-8, JSON (truncated lines,
nesting too deep, duplicate keys, ``NaN``/``Infinity``), an object, then its fields: ``item_id``
an integer in 1..2^32-1 (not ``1.9``, ``true``, ``"12"`` or ``-3``) and ``sold_ts`` an ISO-8601
time with a zone (a time without one is ambiguous by up to a day of sales).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rankflow.quality.raw import MAX_ID

DEFAULT_MAX_LINE_BYTES = 65536


@dataclass(frozen=True)
class Sale:
    """One item sold, at a time in UTC."""

    item_id: int
    sold_ts: datetime


@dataclass(frozen=True)
class RejectedLine:
    """A line that is not a sale: where it was, why, and its text (undecodable bytes escaped)."""

    file: str
    line: int
    reason: str
    raw: str

    def as_dict(self) -> dict[str, Any]:
        """Return the quarantine record."""
        return asdict(self)


class LineRejected(ValueError):
    """A line breaks the contract; the message is the reason recorded in the quarantine."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing a key given twice (parsers disagree on which one wins)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise LineRejected(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def non_finite(constant: str) -> float:
    """Refuse ``NaN``, ``Infinity`` and ``-Infinity``, which strict JSON does not have."""
    raise LineRejected(f"non-finite number {constant}")


def parse_json_object(line: bytes, max_bytes: int) -> dict[str, Any]:
    """Decode one line as a strict JSON object, or raise :class:`LineRejected` saying why."""
    if len(line) > max_bytes:
        raise LineRejected(f"line over {max_bytes} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LineRejected(f"invalid UTF-8 at byte {error.start}") from None
    try:
        value = json.loads(text, object_pairs_hook=unique_keys, parse_constant=non_finite)
    except json.JSONDecodeError as error:
        raise LineRejected(f"malformed JSON: {error.msg} (column {error.colno})") from None
    except RecursionError:
        raise LineRejected("JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise LineRejected(f"not a JSON object but {type(value).__name__}")
    return value


def present(row: dict[str, Any], field: str) -> Any:
    """A required field's value (absent or null is ``missing``)."""
    if row.get(field) is None:
        raise LineRejected(f"missing {field}")
    return row[field]


def checked_id(row: dict[str, Any], field: str) -> int:
    """An id field: a JSON integer in 1..2^32-1 (booleans, floats and strings are refused)."""
    value = present(row, field)
    if type(value) is not int or not 1 <= value <= MAX_ID:
        raise LineRejected(f"{field} not an integer in 1..2^32-1: {json.dumps(value)[:40]}")
    return value


def checked_time(row: dict[str, Any], field: str) -> datetime:
    """A time field: an ISO-8601 string with a zone (``Z`` or an offset), returned in UTC."""
    value = present(row, field)
    if not isinstance(value, str):
        raise LineRejected(f"{field} not a string: {json.dumps(value)[:40]}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise LineRejected(f"{field} not an ISO-8601 time: {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise LineRejected(f"{field} without a time zone: {value[:40]!r}")
    return moment.astimezone(UTC)


def parse_sale(line: bytes, max_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Sale:
    """Parse one sales line, or raise :class:`LineRejected` with the first rule it breaks."""
    row = parse_json_object(line, max_bytes)
    return Sale(checked_id(row, "item_id"), checked_time(row, "sold_ts"))


def printable(line: bytes, limit: int = 2000) -> str:
    """A line's text for the quarantine: bad bytes escaped as backslash-x, cut at ``limit``."""
    return line[:limit].decode("utf-8", errors="backslashreplace")


def bounded_lines(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (number, line, too long) without ever holding more than ``max_bytes`` of a line."""
    with path.open("rb") as handle:
        number = 0
        while chunk := handle.readline(max_bytes + 1):
            number += 1
            too_long = len(chunk.rstrip(b"\r\n")) > max_bytes
            if too_long and not chunk.endswith(b"\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass  # skip the remainder of an over-long line
            yield number, chunk.rstrip(b"\r\n"), too_long


def read_sales_file(path: Path, max_bytes: int) -> Iterator[Sale | RejectedLine]:
    """Yield each non-blank line of a sales file as a sale or as a rejected line."""
    for number, line, too_long in bounded_lines(path, max_bytes):
        if not line.strip():
            continue
        try:
            if too_long:
                raise LineRejected(f"line over {max_bytes} bytes")
            yield parse_sale(line, max_bytes)
        except LineRejected as rejected:
            yield RejectedLine(str(path), number, str(rejected), printable(line))

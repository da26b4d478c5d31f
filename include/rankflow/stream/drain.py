"""Drain the serving log: one day of the Redis stream into the ``bronze/served`` Delta table.

A stream entry's id is its arrival time in milliseconds, so a day's entries are exactly the id
range ``[day 00:00, next day 00:00)``. The day is cut into slices that Spark tasks read in
parallel with paged ``XRANGE`` (nothing is collected to the driver) and decode with the
service's own record type; the rows replace the day's partition in one Delta transaction, so a
retry rewrites the same rows. Entries that do not decode go to ``bronze/served_quarantine`` with
the reason, counted. Only then is the stream trimmed, keeping ``serving.log_retention_days``
days for retries.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    import redis
    from pyspark.sql import DataFrame, SparkSession


SERVED_TABLE = "bronze/served"
QUARANTINE_TABLE = "bronze/served_quarantine"
SERVED_SCHEMA = (
    "stream_id string, ts timestamp, request_id string, user_id long, surface string, k int, "
    "candidate_ids array<long>, item_ids array<long>, scores array<float>, "
    "model_version string, feature_version string, fallback boolean, reason string, "
    "scored_ids array<long>, scored_scores array<float>, inputs binary, "
    "stream_cutoff_ms long, error string, "
    "payload binary"
)
PAGE = 2000  # entries per XRANGE call


def day_start_ms(ds: date) -> int:
    """Milliseconds since the epoch at ``ds`` 00:00 UTC (the day's first stream id)."""
    return int(datetime(ds.year, ds.month, ds.day, tzinfo=UTC).timestamp() * 1000)


def day_slices(ds: date, slices: int) -> list[tuple[int, int]]:
    """Cut a day into ``slices`` half-open millisecond ranges that cover it exactly."""
    start, end = day_start_ms(ds), day_start_ms(ds + timedelta(days=1))
    bounds = [start + (end - start) * i // slices for i in range(slices + 1)]
    return list(itertools.pairwise(bounds))


def read_slice(client: redis.Redis, stream: str, start: int, end: int) -> Iterator[list[Any]]:
    """Page through the entries with ids in ``[start, end)`` ms (``XRANGE``, exclusive end)."""
    low, high = f"{start}-0", f"({end}-0"
    while True:
        page = client.xrange(stream, low, high, count=PAGE)
        if not page:
            return
        yield page
        if len(page) < PAGE:
            return
        last = page[-1][0]
        low = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def entries_batch(entries: list[Any]) -> pa.RecordBatch:
    """Decode a page of stream entries into rows; a record that does not decode keeps its bytes."""
    import numpy as np
    import pyarrow as pa

    from rankflow.serving.log import RECORD_FIELD, decode_record

    def ids(raw: bytes) -> list[int]:
        values: list[int] = np.frombuffer(raw, "<u4").astype(np.int64).tolist()
        return values

    def floats(raw: bytes) -> list[float]:
        values: list[float] = np.frombuffer(raw, "<f4").tolist()
        return values

    schema = served_arrow_schema()
    rows: list[dict[str, Any]] = []
    for entry_id, fields in entries:
        stream_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        ts = datetime.fromtimestamp(int(stream_id.split("-")[0]) / 1000, UTC)
        payload = fields.get(RECORD_FIELD) or fields.get(RECORD_FIELD.decode())
        row: dict[str, Any] = {"stream_id": stream_id, "ts": ts, "payload": payload}
        try:
            if payload is None:
                raise ValueError(f"no {RECORD_FIELD.decode()!r} field")
            record = decode_record(payload)
            width = len(record.scored_ids) // 4
            if len(record.candidates) % 4 or len(record.item_ids) % 4 or len(record.scores) % 4:
                raise ValueError("an id or score array is not a whole number of 4-byte words")
            if len(record.scored_scores) != 4 * width or (width and len(record.inputs) % width):
                raise ValueError("the sampled scores or inputs do not match the scored ids")
            row |= {
                "request_id": record.request_id,
                "user_id": record.user_id,
                "surface": record.surface,
                "k": record.k,
                "candidate_ids": ids(record.candidates) if record.candidates else None,
                "item_ids": ids(record.item_ids),
                "scores": floats(record.scores),
                "model_version": record.model_version,
                "feature_version": record.feature_version,
                "fallback": record.fallback,
                "reason": record.reason,
                "scored_ids": ids(record.scored_ids) if width else None,
                "scored_scores": floats(record.scored_scores) if width else None,
                "inputs": record.inputs or None,
                "stream_cutoff_ms": record.stream_cutoff_ms or None,
                "payload": None,
            }
        except Exception as problem:  # quarantined with the reason, never dropped
            row["error"] = f"{type(problem).__name__}: {problem}"[:500]
        rows.append(row)
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def served_arrow_schema() -> pa.Schema:
    """The Arrow schema of :data:`SERVED_SCHEMA` (what the slice readers yield)."""
    import pyarrow as pa

    ids, floats = pa.list_(pa.int64()), pa.list_(pa.float32())
    return pa.schema(
        [
            ("stream_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("request_id", pa.string()),
            ("user_id", pa.int64()),
            ("surface", pa.string()),
            ("k", pa.int32()),
            ("candidate_ids", ids),
            ("item_ids", ids),
            ("scores", floats),
            ("model_version", pa.string()),
            ("feature_version", pa.string()),
            ("fallback", pa.bool_()),
            ("reason", pa.string()),
            ("scored_ids", ids),
            ("scored_scores", floats),
            ("inputs", pa.binary()),
            ("stream_cutoff_ms", pa.int64()),
            ("error", pa.string()),
            ("payload", pa.binary()),
        ]
    )


def make_slice_reader(
    redis_url: str, stream: str
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Build the ``mapInArrow`` task reading the slices of its rows (``start``, ``end`` ms)."""

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from rankflow.store.client import redis_client

        client = redis_client(redis_url, socket_timeout=30.0)
        try:
            for batch in batches:
                bounds = zip(
                    batch.column("start").to_pylist(), batch.column("end").to_pylist(), strict=True
                )
                for start, end in bounds:
                    for page in read_slice(client, stream, int(start), int(end)):
                        yield entries_batch(page)
        finally:
            client.close()

    return read


def served_frame(
    spark: SparkSession, redis_url: str, stream: str, ds: date, slices: int
) -> DataFrame:
    """The day's stream entries as a DataFrame, read by Spark tasks slice by slice."""
    ranges = spark.createDataFrame(day_slices(ds, slices), "start long, end long")
    return ranges.repartition(min(slices, 64)).mapInArrow(
        make_slice_reader(redis_url, stream), SERVED_SCHEMA
    )


@dataclass(frozen=True)
class StreamState:
    """What the stream still holds: its length and the newest id a trim deleted."""

    length: int
    max_deleted_ms: int  # 0: nothing was ever trimmed


def stream_state(client: redis.Redis, stream: str) -> StreamState:
    """Read ``XINFO STREAM`` (an absent stream holds nothing and lost nothing)."""
    import redis as redis_module

    try:
        info: dict[Any, Any] = client.xinfo_stream(stream)
    except redis_module.ResponseError:
        return StreamState(0, 0)

    def field(name: str) -> Any:
        value = info.get(name, info.get(name.encode()))
        return value.decode() if isinstance(value, bytes) else value

    deleted = str(field("max-deleted-entry-id") or "0-0")
    return StreamState(int(field("length") or 0), int(deleted.split("-")[0]))


def trim_before(client: redis.Redis, stream: str, ds: date, keep_days: int) -> int:
    """Delete the entries older than the ``keep_days`` days ending with ``ds``; return how many."""
    oldest_kept = day_start_ms(ds - timedelta(days=max(keep_days, 1) - 1))
    return int(client.xtrim(stream, minid=f"{oldest_kept}-0", approximate=False))

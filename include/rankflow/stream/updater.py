"""The stream updater: read the event log, apply each batch to the fresh state in one script call.

``rankflow stream`` runs one per partition (or per Kafka consumer). Per batch: decode every
entry (an entry that does not decode is quarantined with its reason on
``{prefix}:log:events-quarantine`` and only moves the position on), apply the batch with
``fresh_apply.lua`` — atomic, skipping entries at or before the partition's applied position
and event ids already applied that day — then acknowledge. A crash anywhere loses nothing and
counts nothing twice: unacknowledged entries are delivered again and skipped by position.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from rankflow.features.registry import STREAM_LAG_SECONDS
from rankflow.quality.live import Listing, LiveEvent, decode_record, encode_record
from rankflow.quality.raw import EVENT_TYPES, MAX_ID
from rankflow.store.fresh import (
    day_text,
    event_id_bucket,
    events_quarantine_key,
    freshness_key,
)

if TYPE_CHECKING:
    import redis

    from rankflow.stream.log import Entry, PartitionReader

log = logging.getLogger("rankflow.stream")
HEARTBEAT_SECONDS = 0.25
_BLANK = ("",) * 6


@dataclass(frozen=True)
class UpdaterConfig:
    """The updater's settings (``stream:`` in the pipeline YAML)."""

    prefix: str
    session_window_seconds: int
    lag_seconds: int
    max_recent_events: int
    day_ttl_seconds: int
    id_buckets: int
    batch: int
    block_ms: int
    max_live_sales: int = 1_000_000
    max_live_listings: int = 500_000

    @classmethod
    def of(cls, prefix: str, config: dict[str, Any]) -> UpdaterConfig:
        """The settings from the pipeline YAML's ``stream`` section."""
        return cls(
            prefix=prefix,
            session_window_seconds=int(config["session_window_seconds"]),
            lag_seconds=STREAM_LAG_SECONDS,
            max_recent_events=int(config["max_recent_events"]),
            day_ttl_seconds=int(config["day_ttl_seconds"]),
            id_buckets=int(config["id_buckets"]),
            batch=int(config["batch"]),
            block_ms=int(config["block_ms"]),
            max_live_sales=int(config["max_live_sales"]),
            max_live_listings=int(config["max_live_listings"]),
        )

    @property
    def keep_ms(self) -> int:
        """How far back of a user's newest event the recent events are kept (window + lag)."""
        return (self.session_window_seconds + self.lag_seconds + 1) * 1000

    @property
    def user_ttl_ms(self) -> int:
        """A user's recent events expire this long after the user's last event."""
        return self.keep_ms + 60_000


@dataclass
class Applied:
    """What one batch did."""

    applied: int = 0
    duplicates: int = 0
    replayed: int = 0
    listings: int = 0
    quarantined: int = 0
    sold: list[int] = field(default_factory=list)
    # the times of the events applied now (not duplicates nor replayed entries): their freshness
    event_ms: list[int] = field(default_factory=list)


def _position(entry: Entry) -> tuple[str, str]:
    return str(entry.position[0]), str(entry.position[1])


def script_arguments(
    entries: Sequence[Entry], config: UpdaterConfig
) -> tuple[list[str | bytes], list[tuple[Entry, str]], list[int]]:
    """The per-entry arguments of ``fresh_apply.lua``, the entries refused, the event times."""
    args: list[str | bytes] = []
    refused: list[tuple[Entry, str]] = []
    times: list[int] = []
    for entry in entries:
        hi, lo = _position(entry)
        try:
            record = decode_record(entry.payload)
        except (msgspec.DecodeError, ValueError, TypeError) as problem:  # TypeError: no bytes
            refused.append((entry, f"undecodable record: {problem}"))
            args += ["x", hi, lo, "", "", *_BLANK]
            continue
        wrong = out_of_range(record)
        if wrong is not None:
            refused.append((entry, wrong))
            args += ["x", hi, lo, "", "", *_BLANK]
            continue
        if isinstance(record, LiveEvent):
            day = day_text(record.ts_ms)
            second = (record.ts_ms // 1000) % 86_400
            args += [
                "e", hi, lo, record.event_id,
                str(event_id_bucket(record.event_id, config.id_buckets)),
                str(record.user_id), str(record.item_id), str(record.event_type),
                str(record.ts_ms), day, str(second),
            ]  # fmt: skip
            times.append(record.ts_ms)
        elif isinstance(record, Listing):
            args += ["l", hi, lo, str(record.item_id), encode_record(record), *_BLANK]
    return args, refused, times


def out_of_range(record: LiveEvent | Listing) -> str | None:
    """Why a decoded record cannot be applied (a producer that skipped the checks), or None."""
    if not 1 <= record.item_id <= MAX_ID:
        return "item_id outside 1..2^32-1"
    if isinstance(record, LiveEvent):
        if not 1 <= record.user_id <= MAX_ID:
            return "user_id outside 1..2^32-1"
        if not 0 <= record.event_type < len(EVENT_TYPES):
            return "unknown event_type"
        if record.ts_ms <= 0:
            return "timestamp before 1970"
    return None


def apply_entries(
    client: redis.Redis,
    entries: Sequence[Entry],
    config: UpdaterConfig,
    *,
    partition: str,
    caught_up: bool,
    now_ms: int | None = None,
) -> Applied:
    """Quarantine what does not decode, then apply the batch in one atomic script call."""
    from rankflow.store.commands import _run, _text

    records, refused, times = script_arguments(entries, config)
    if refused:
        pipe = client.pipeline(transaction=False)
        for entry, reason in refused:
            pipe.xadd(
                events_quarantine_key(config.prefix),
                {"partition": str(entry.partition), "position": "-".join(_position(entry)),
                 "reason": reason, "payload": entry.payload},
                maxlen=100_000, approximate=True,
            )  # fmt: skip
        pipe.execute()
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    head = [
        config.prefix, partition, str(now), str(config.keep_ms), str(config.user_ttl_ms),
        str(config.day_ttl_seconds * 1000), str(config.max_recent_events),
        "1" if caught_up else "0", str(config.max_live_sales), str(config.max_live_listings),
    ]  # fmt: skip
    reply = _run(client, "fresh_apply", [], [*head, *records])
    applied, duplicates, replayed, listings = (int(v) for v in reply[:4])
    flags = _text(reply[4]) or ""
    fresh = [ms for ms, flag in zip(times, flags, strict=True) if flag == "1"]
    sold = [int(v) for v in reply[5:]]
    return Applied(applied, duplicates, replayed, listings, len(refused), sold, fresh)


def retried_errors() -> tuple[type[Exception], ...]:
    """The failures an updater outlives: Redis or Kafka away or slow (a bug still stops it)."""
    import redis

    errors: list[type[Exception]] = [redis.ConnectionError, redis.TimeoutError]
    try:
        from confluent_kafka import KafkaException

        errors.append(KafkaException)
    except ImportError:
        pass
    return tuple(errors)


class Updater:
    """One updater process's loop over its reader, until stopped."""

    def __init__(
        self,
        client: redis.Redis,
        reader: PartitionReader,
        config: UpdaterConfig,
        on_batch: Callable[[Applied, int], None] | None = None,
        freshness: FreshnessMeter | None = None,
    ) -> None:
        self.client = client
        self.reader = reader
        self.config = config
        self.on_batch = on_batch  # (what a batch did, its entries): metrics, the sold repair
        self.freshness = freshness or FreshnessMeter(config.prefix)
        self.stop_event = threading.Event()
        self.totals = Applied()
        self.beaten_at = float("-inf")

    def step(self) -> int:
        """Read, apply and acknowledge one batch per partition it holds; return its entries."""
        entries = self.reader.read(self.config.batch, self.config.block_ms)
        by_partition: dict[int, list[Entry]] = {}
        for entry in entries:
            by_partition.setdefault(entry.partition, []).append(entry)
        caught_up = self.reader.at_end(len(entries) < self.config.batch)
        for partition, part in by_partition.items():
            done = apply_entries(
                self.client, part, self.config, partition=self.label(partition),
                caught_up=caught_up,
            )  # fmt: skip
            self.reader.ack(part)
            self.count(done, len(part))
            self.freshness.observe(self.label(partition), done.event_ms)
        if caught_up:
            self.heartbeat(set(by_partition))
        self.freshness.flush_due(self.client)
        return len(entries)

    def heartbeat(self, applied: set[int]) -> None:
        """Record that the partitions held without entries are caught up (idle is not stale).

        At most every ``HEARTBEAT_SECONDS``: a quiet partition next to a busy one must not cost
        a script call per read.
        """
        now = time.monotonic()
        if now - self.beaten_at < HEARTBEAT_SECONDS:
            return
        self.beaten_at = now
        for partition in self.reader.partitions:
            if partition not in applied:
                label = self.label(partition)
                apply_entries(self.client, [], self.config, partition=label, caught_up=True)

    def label(self, partition: int) -> str:
        """A partition's name in the fresh state's positions: backend and number (``redis:0``)."""
        return f"{self.reader.backend}:{partition}"

    def count(self, done: Applied, entries: int) -> None:
        """Add a batch to the totals and report it."""
        totals = self.totals
        totals.applied += done.applied
        totals.duplicates += done.duplicates
        totals.replayed += done.replayed
        totals.listings += done.listings
        totals.quarantined += done.quarantined
        totals.sold += done.sold
        if self.on_batch is not None:
            self.on_batch(done, entries)

    def run(self) -> Applied:
        """Loop until :meth:`stop`; an outage of Redis or the broker is retried every second.

        Nothing is lost by a retry: the batch in hand was not acknowledged, so it is read again
        and applied once (by position).
        """
        while not self.stop_event.is_set():
            try:
                self.step()
            except retried_errors() as problem:
                log.warning("stream updater: %s; retrying in a second", problem)
                self.stop_event.wait(1.0)
        return self.totals

    def stop(self) -> None:
        """Finish the batch in hand and stop."""
        self.stop_event.set()


class FreshnessMeter:
    """Event time to visible online feature, per partition: the updater's freshness metric.

    Each applied event's lag is its apply time less its event time (the app's clock to the
    fresh state: the log's delay, the updater's and any backlog). A duplicate id or an entry
    re-read after a restart is not counted: its features were visible since its first apply.
    Every ``every_seconds`` the lags since the last summary become one record per partition in
    ``{prefix}:fresh:freshness`` (JSON: when, how many events, p50/p99/max in ms), which the
    stream watch checks against ``stream.max_freshness_seconds`` and the Ranking page shows;
    with ``histogram`` (a Prometheus metric of ``rankflow stream --metrics-port``) every lag is
    observed there too.
    """

    def __init__(self, prefix: str, every_seconds: float = 10.0, histogram: Any = None) -> None:
        self.key = freshness_key(prefix)
        self.every_seconds = every_seconds
        self.histogram = histogram
        self.lags: dict[str, list[float]] = {}
        self.flushed_at = time.monotonic()

    def observe(self, partition: str, event_ms: Sequence[int]) -> None:
        """Record the lags of a partition's events applied just now."""
        if not event_ms:
            return
        now = time.time_ns() // 1_000_000
        lags = [(now - ms) / 1000.0 for ms in event_ms]
        self.lags.setdefault(partition, []).extend(lags)
        if self.histogram is not None:
            child = self.histogram.labels(partition=partition)
            for lag in lags:
                child.observe(max(lag, 0.0))

    def flush_due(self, client: redis.Redis) -> None:
        """Write the summaries when ``every_seconds`` have passed (nothing new: nothing written)."""
        if time.monotonic() - self.flushed_at < self.every_seconds:
            return
        self.flushed_at = time.monotonic()
        if not self.lags:
            return
        import json

        import numpy as np

        now = time.time_ns() // 1_000_000
        summaries = {}
        for partition, lags in self.lags.items():
            values = np.asarray(lags) * 1000.0
            p50, p99 = np.percentile(values, [50, 99])
            summary = {
                "at_ms": now,
                "events": len(lags),
                "p50_ms": round(float(p50), 1),
                "p99_ms": round(float(p99), 1),
                "max_ms": round(float(values.max()), 1),
            }
            summaries[partition] = json.dumps(summary)
        self.lags = {}
        client.hset(self.key, mapping=summaries)  # type: ignore[arg-type]

"""The event log: partitions of records, appended by producers, read by the updaters in a group.

Two backends behind one protocol (``stream.backend``): Redis Streams, the embedded default (one
stream per partition, ``{prefix}:log:events:{p}``, in the Redis ``make up`` starts; a consumer
group per stream), and Kafka (one topic keyed by user id; see :mod:`rankflow.stream.kafka`).
A record goes to the partition of its user (a listing: of its item), so one updater sees a
user's events in order. Delivery is at least once: an updater acknowledges after applying, and
the fresh state's per-partition position makes a re-delivered entry a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rankflow.quality.live import LiveEvent, LogRecord, encode_record
from rankflow.store.fresh import events_log_key, owner_key

if TYPE_CHECKING:
    import redis

    from rankflow.config import Settings

PAYLOAD_FIELD = b"r"  # a Redis stream entry's one field: the record (MessagePack)


@dataclass(frozen=True)
class Entry:
    """One log entry: its partition, its position there (two integers) and its bytes."""

    partition: int
    position: tuple[int, int]
    payload: bytes
    appended_ms: int = 0  # when the log took it (Redis: the id's milliseconds; Kafka: its time)


def record_key(record: LogRecord) -> int:
    """The id a record is partitioned by: its user's (a listing: its item's)."""
    return record.user_id if isinstance(record, LiveEvent) else record.item_id


class EventLog(Protocol):
    """Where producers append records."""

    partitions: int

    def append(self, records: Sequence[LogRecord]) -> None:
        """Append records (each to its partition); returns once the log holds them."""

    def close(self) -> None:
        """Release connections."""


class PartitionReader(Protocol):
    """One updater's view of its partitions."""

    backend: str  # names the partitions in the fresh state's positions (``redis:0``)

    @property
    def partitions(self) -> tuple[int, ...]:
        """The partitions held now."""

    def read(self, count: int, block_ms: int) -> list[Entry]:
        """Up to ``count`` entries: first any delivered before and not acknowledged, then new."""

    def ack(self, entries: Sequence[Entry]) -> None:
        """Mark entries applied (they are not delivered again)."""

    def at_end(self, short: bool) -> bool:
        """Whether the last read reached the end of every partition held.

        ``short``: it returned fewer entries than asked (necessary, not sufficient).
        """

    def close(self) -> None:
        """Release connections."""


def parse_stream_id(value: bytes | str) -> tuple[int, int]:
    """A Redis stream id (``ms-seq``) as two integers."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


class RedisStreamsLog:
    """The event log on Redis Streams: ``partitions`` streams, capped at ``max_length`` entries."""

    def __init__(self, client: redis.Redis, prefix: str, partitions: int, max_length: int) -> None:
        self.client = client
        self.prefix = prefix
        self.partitions = partitions
        self.max_length = max_length

    def append(self, records: Sequence[LogRecord]) -> None:
        """Append in one pipelined round trip (``XADD ... MAXLEN ~``)."""
        if not records:
            return
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            stream = events_log_key(self.prefix, record_key(record) % self.partitions)
            pipe.xadd(
                stream,
                {PAYLOAD_FIELD: encode_record(record)},
                maxlen=self.max_length,
                approximate=True,
            )
        pipe.execute()

    def close(self) -> None:
        """Close the client."""
        self.client.close()


class PartitionHeldError(RuntimeError):
    """Another updater holds a partition (one updater per partition keeps its order)."""


class RedisStreamsReader:
    """The one reader of some partitions' streams, each under a lease.

    The fresh state's position check needs a partition's entries applied in order, by one
    updater at a time. The lease (``{prefix}:fresh:owner:{group}:redis:{p}``, renewed as it reads)
    keeps a second updater off a held partition; a killed holder's lease expires after
    ``lease_ms``, or is taken at once by a restart under the same ``holder`` name. Whoever
    takes a partition first claims every entry an earlier holder read and never acknowledged
    (``XAUTOCLAIM`` from the start, idle or not: no one else may hold them), reads those
    (``XREADGROUP ... 0``), then new ones (``>``), all as consumer ``holder``.
    """

    backend = "redis"

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        partitions: Sequence[int],
        group: str,
        holder: str,
        lease_ms: int = 10_000,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.group = group
        self.holder = holder
        self.lease_ms = lease_ms
        self.partitions = tuple(partitions)
        self.streams = {events_log_key(prefix, p): p for p in partitions}
        self.renewed_at = 0.0
        self.take_leases(wait_ms=lease_ms + 1_000)
        for stream in self.streams:
            self.create_group(stream)
            self.claim_all(stream)
        self.pending = True  # replay the partitions' unacknowledged entries first
        self.read_new = False  # whether the last read was of new entries (not a replay)

    def lease_key(self, partition: int) -> str:
        """The key of a partition's lease."""
        return owner_key(self.prefix, self.group, self.backend, partition)

    def take_leases(self, wait_ms: int = 0) -> None:
        """Take or renew every partition's lease (waiting up to ``wait_ms`` for a dead holder's)."""
        import time

        from rankflow.store.commands import _run, _text

        deadline = time.monotonic() + wait_ms / 1000
        for partition in self.partitions:
            while True:
                reply = _run(self.client, "lease", [self.lease_key(partition)],
                             [self.holder, self.lease_ms])  # fmt: skip
                if int(reply[0]) == 1:
                    break
                if time.monotonic() >= deadline:
                    raise PartitionHeldError(
                        f"partition {partition} is held by {_text(reply[1])!r} for "
                        f"{int(reply[2]) / 1000:.1f} s more: one updater per partition "
                        "(rankflow stream --partitions)"
                    )
                time.sleep(min(0.5, max(int(reply[2]), 10) / 1000))
        self.renewed_at = time.monotonic()

    def create_group(self, stream: str) -> None:
        """Create the group at the stream's start (and the stream), unless it exists."""
        import redis

        try:
            self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def claim_all(self, stream: str) -> int:
        """Make every unacknowledged entry of a held stream this reader's; return how many."""
        claimed, cursor = 0, "0-0"
        while True:
            reply = self.client.xautoclaim(stream, self.group, self.holder, 0, cursor, count=1000)
            cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            claimed += len(reply[1])
            if cursor == "0-0":
                return claimed

    def _entries(self, reply: list[Any] | None) -> list[Entry]:
        out: list[Entry] = []
        for stream, messages in reply or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            partition = self.streams[name]
            for entry_id, fields in messages:
                payload = (fields or {}).get(PAYLOAD_FIELD, b"")
                position = parse_stream_id(entry_id)
                out.append(Entry(partition, position, payload, position[0]))
        return out

    def read(self, count: int, block_ms: int) -> list[Entry]:
        """Up to ``count`` entries: the unacknowledged ones first (``0``), then new ones (``>``)."""
        import time

        if time.monotonic() - self.renewed_at > self.lease_ms / 3000:
            self.take_leases()
        if self.pending:
            ids: dict[Any, Any] = dict.fromkeys(self.streams, "0")
            reply: Any = self.client.xreadgroup(self.group, self.holder, ids, count=count)
            entries = self._entries(reply)
            self.read_new = False
            if entries:
                return entries
            self.pending = False
        self.read_new = True
        new: dict[Any, Any] = dict.fromkeys(self.streams, ">")
        fresh: Any = self.client.xreadgroup(self.group, self.holder, new, count=count,
                                            block=block_ms)  # fmt: skip
        return self._entries(fresh)

    def at_end(self, short: bool) -> bool:
        """A short read of new entries (``>``) found every stream's end; a replay never does."""
        return short and self.read_new

    def ack(self, entries: Sequence[Entry]) -> None:
        """``XACK`` the entries, one call per stream, in one round trip."""
        by_stream: dict[str, list[str]] = {}
        names = {p: s for s, p in self.streams.items()}
        for entry in entries:
            by_stream.setdefault(names[entry.partition], []).append(
                f"{entry.position[0]}-{entry.position[1]}"
            )
        if not by_stream:
            return
        pipe = self.client.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        pipe.execute()

    def close(self) -> None:
        """Give the leases back and close the client."""
        from rankflow.store.commands import _text

        for partition in self.partitions:
            key = self.lease_key(partition)
            if _text(self.client.get(key)) == self.holder:
                self.client.delete(key)
        self.client.close()


BACKENDS = ("redis", "kafka")


def check_backend(backend: str) -> str:
    """The backend named by ``stream.backend``, or a clear error."""
    if backend not in BACKENDS:
        raise ValueError(f"stream.backend is {backend!r}: one of {', '.join(BACKENDS)}")
    return backend


def event_log(settings: Settings, url: str | None = None) -> EventLog:
    """The event log the settings name (``stream.backend``), for producers."""
    from rankflow.store.client import redis_client

    config = settings.pipeline["stream"]
    if config["backend"] == "kafka":
        from rankflow.stream.kafka import KafkaLog

        return KafkaLog.of(settings)
    check_backend(config["backend"])
    client = redis_client(url or settings.redis.url, socket_timeout=5.0)
    return RedisStreamsLog(
        client, settings.redis.key_prefix, int(config["partitions"]), int(config["max_log_length"])
    )


def partition_reader(
    settings: Settings,
    partitions: Sequence[int] | None,
    consumer: str | None = None,
    group: str | None = None,
) -> PartitionReader:
    """A reader in the updaters' group: of ``partitions``, or (None) of all.

    ``consumer`` is a stable name a restart reuses (Redis: the leases' holder, taken back at
    once; Kafka: static membership); without one a name of this process is made up. On Kafka,
    None partitions lets the group share them among its consumers. ``group`` defaults to the
    updaters' (``stream.group``).
    """
    from rankflow.store.client import redis_client

    config = settings.pipeline["stream"]
    if config["backend"] == "kafka":
        from rankflow.stream.kafka import KafkaReader

        return KafkaReader.of(settings, partitions, consumer, group)
    check_backend(config["backend"])
    client = redis_client(settings.redis.url, socket_timeout=10.0)
    every = range(int(config["partitions"]))
    holder = consumer or f"{socket.gethostname()}-{os.getpid()}"
    return RedisStreamsReader(
        client, settings.redis.key_prefix, partitions or every, group or str(config["group"]),
        holder,
        lease_ms=int(float(config["lease_seconds"]) * 1000),
    )  # fmt: skip

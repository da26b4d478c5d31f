"""The fresh online state the stream updater keeps: keys and value layouts (pure).

Not versioned like the nightly lists and vectors: each key is updated in place, atomically, by
``fresh_apply.lua`` (one script call per batch of log entries) and expires on its own.

``{prefix}:fresh:u:{user}``  the user's recent events, 16 bytes each (little-endian): event time
    in ms (i64), item id (u32), event type (u8, its index in ``EVENT_TYPES``), 3 pad bytes; in
    arrival order; entries older than the session window are dropped as new ones arrive.
``{prefix}:fresh:i:{yyyymmdd}:{item}``  the item's counted events of one UTC day, 80 bytes:
    ``base`` impressions, clicks, saves (u32 each) and ``base_second`` (i32, the latest second
    of the day folded into the base, -1 none), then ``SLOTS`` slots of (second i32, impressions,
    clicks, saves u32). Slots hold the latest seconds separately so a reader can leave out the
    events of the last ``lag`` seconds exactly: the counts as of a cutoff second ``c`` are the
    base plus the slots before ``c``, valid when ``base_second < c``.
``{prefix}:fresh:ids:{yyyymmdd}:{bucket}``  event ids applied that day (hash; ``HSETNX``):
    a record logged twice is counted once, as ingest keeps one row per ``event_id`` and day.
``{prefix}:fresh:applied``  per log partition, the position of the last applied entry: a batch
    re-read after a crash is skipped entry by entry, in the same script that applies it.
``{prefix}:fresh:sold`` / ``{prefix}:fresh:listed``  sorted sets of items sold / listed live,
    scored by an arrival sequence (``{prefix}:fresh:seq``) so readers poll what is new;
    ``{prefix}:fresh:listing:{item}`` the listing's record (MessagePack, as logged).
``{prefix}:fresh:owner:{group}:redis:{p}``  the lease of the reader holding a Redis stream.
``{prefix}:fresh:progress``  per partition (``redis:0``, ``kafka:3``): ``caught_up_ms,event_ms``,
    the wall time the updater last reached the end of the partition and the time of the last
    event it applied; the service reads it to tell a stale updater.
``{prefix}:fresh:freshness``  per partition, the updater's last summary of event-to-visible lags
    (JSON ``at_ms, events, p50_ms, p99_ms, max_ms``, every 10 s while events arrive).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from rankflow.store.keys import check_name

USER_ENTRY = np.dtype([("ts_ms", "<i8"), ("item_id", "<u4"), ("event_type", "u1"), ("_", "V3")])
SLOTS = 4  # seconds kept apart from the day's base: the lag's, the current, two spare
ITEM_DAY = struct.Struct("<3Ii" + "i3I" * SLOTS)  # 80 bytes
COUNTERS = ("impressions", "clicks", "saves")


def fresh_base(prefix: str) -> str:
    """Return ``{prefix}:fresh``, the root of every key the updater writes."""
    return f"{check_name(prefix, 'prefix')}:fresh"


def user_recent_key(prefix: str, user_id: int) -> str:
    """Return the key of a user's recent events."""
    return f"{fresh_base(prefix)}:u:{int(user_id)}"


def day_text(ts_ms: int) -> str:
    """Return the UTC day of a time as ``yyyymmdd`` (the day part of the item counters' keys)."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y%m%d")


DAY_MS = 86_400_000


def day_as_of(cutoff_ms: int) -> tuple[str, int]:
    """The day counters to read for events before ``cutoff_ms``: their day and cutoff second.

    The day is that of the last millisecond counted (``cutoff - 1``): at midnight exactly it is
    the day that just ended, read whole (second 86,400).
    """
    last = cutoff_ms - 1
    start = (last // DAY_MS) * DAY_MS
    return day_text(last), (cutoff_ms - start) // 1000


def item_day_key(prefix: str, day: str, item_id: int) -> str:
    """Return the key of an item's counters of one UTC day (``day``: ``yyyymmdd``)."""
    return f"{fresh_base(prefix)}:i:{day}:{int(item_id)}"


def event_ids_key(prefix: str, day: str, bucket: int) -> str:
    """Return the key of one bucket of a day's applied event ids."""
    return f"{fresh_base(prefix)}:ids:{day}:{int(bucket)}"


def event_id_bucket(event_id: str, buckets: int) -> int:
    """The bucket of an event id (CRC-32, stable across processes and languages)."""
    return zlib.crc32(event_id.encode()) % buckets


def applied_key(prefix: str) -> str:
    """Return the hash of the last applied log position per partition."""
    return f"{fresh_base(prefix)}:applied"


def freshness_key(prefix: str) -> str:
    """Per partition, the updater's latest summary of event-to-visible lags (JSON)."""
    return f"{fresh_base(prefix)}:freshness"


def decode_progress(mark: bytes) -> tuple[int, int]:
    """A partition's progress value: when it was last caught up, its last event's time (ms)."""
    caught_up, event_ms = mark.split(b",")
    return int(caught_up), int(event_ms)


def progress_key(prefix: str) -> str:
    """Return the hash of each partition's last event time and the time it was applied."""
    return f"{fresh_base(prefix)}:progress"


def owner_key(prefix: str, group: str, backend: str, partition: int) -> str:
    """Return the lease of the reader in ``group`` holding a log partition."""
    names = f"{check_name(group, 'group')}:{check_name(backend, 'backend')}"
    return f"{fresh_base(prefix)}:owner:{names}:{int(partition)}"


def sold_key(prefix: str) -> str:
    """Return the sorted set of items sold live (score: arrival sequence)."""
    return f"{fresh_base(prefix)}:sold"


def listed_key(prefix: str) -> str:
    """Return the sorted set of items listed live (score: arrival sequence)."""
    return f"{fresh_base(prefix)}:listed"


def listing_key(prefix: str, item_id: int) -> str:
    """Return the key of one live listing's record."""
    return f"{fresh_base(prefix)}:listing:{int(item_id)}"


def sequence_key(prefix: str) -> str:
    """Return the arrival counter that scores the sold and listed sets."""
    return f"{fresh_base(prefix)}:seq"


def events_log_key(prefix: str, partition: int) -> str:
    """Return the Redis stream of one partition of the event log."""
    return f"{check_name(prefix, 'prefix')}:log:events:{int(partition)}"


def events_quarantine_key(prefix: str) -> str:
    """Return the stream of log entries the updater could not decode (with the reason)."""
    return f"{check_name(prefix, 'prefix')}:log:events-quarantine"


# --------------------------------------------------------------------------- decoding


def decode_recent(value: bytes | None) -> np.ndarray:
    """A user's recent events as a structured array (empty when the user has none)."""
    if not value:
        return np.zeros(0, USER_ENTRY)
    usable = len(value) - len(value) % USER_ENTRY.itemsize
    return np.frombuffer(value[:usable], USER_ENTRY)


@dataclass(frozen=True)
class ItemDay:
    """One item's counters of one day, decoded."""

    base: tuple[int, int, int]
    base_second: int
    slots: tuple[tuple[int, int, int, int], ...]  # (second, impressions, clicks, saves)

    def as_of(self, cutoff_second: int) -> tuple[int, int, int] | None:
        """The counts of the events before ``cutoff_second`` (None: not knowable exactly)."""
        if self.base_second >= cutoff_second:
            return None
        counts = list(self.base)
        for second, *values in self.slots:
            if 0 <= second < cutoff_second:
                counts = [a + b for a, b in zip(counts, values, strict=True)]
        return counts[0], counts[1], counts[2]


EMPTY_ITEM_DAY = ItemDay((0, 0, 0), -1, ())


def decode_item_day(value: bytes | None) -> ItemDay:
    """An item's day counters (an absent key: nothing counted)."""
    if not value:
        return EMPTY_ITEM_DAY
    fields = ITEM_DAY.unpack(value[: ITEM_DAY.size])
    slots = tuple(
        (fields[4 + 4 * s], fields[5 + 4 * s], fields[6 + 4 * s], fields[7 + 4 * s])
        for s in range(SLOTS)
    )
    return ItemDay((fields[0], fields[1], fields[2]), fields[3], slots)


def encode_item_day(day: ItemDay) -> bytes:
    """The bytes of an item's day counters (tests and tools; the updater writes them in Lua)."""
    slots = list(day.slots) + [(-1, 0, 0, 0)] * (SLOTS - len(day.slots))
    return ITEM_DAY.pack(*day.base, day.base_second, *[v for slot in slots for v in slot])

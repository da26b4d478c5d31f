"""Land the event log as raw drops, so the nightly ingest sees the events the stream carried.

``rankflow stream --land`` reads the log in a group of its own (``landing``). Each batch
becomes one part file per kind and UTC day, ``<raw>/<kind>/ds=<day>/stream-<backend><p>-
<first>-<last>.jsonl`` (the batch's first and last log positions; written aside under a hidden
name, then renamed, so ingest never reads half a file), before the batch is acknowledged. A
restart skips the entries at or before the partition's last landed position (the highest
position in its part files' names), so a crash between the rename and the acknowledgement
lands nothing twice.

A day closes once every partition's landing has read past (in log time: when the log took an
entry) the day's end plus
``stream.max_event_age_seconds`` (the oldest event ``POST /v1/events`` takes) plus
``stream.land_grace_seconds``: the day's parts are compacted into ``stream.jsonl`` with one line
per event id (a producer's retry logged twice lands once; items: one line per item id), the
parts deleted, and ``_SUCCESS`` written — the drop contract of docs/raw-format.md. A record
of a closed day (only a producer writing to the log past the API's age check can send one) is
kept aside in ``<home>/data/quarantine/stream/`` and counted, never landed into a complete drop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.quality.live import Listing, LiveEvent, decode_record
from rankflow.quality.raw import EVENT_TYPES
from rankflow.store.fresh import fresh_base

if TYPE_CHECKING:
    import redis

    from rankflow.stream.log import Entry, PartitionReader

log = logging.getLogger("rankflow.stream")
LANDING_GROUP = "landing"
COMPACTED = "stream.jsonl"
DAY_MS = 86_400_000
KEYS = {"events": "event_id", "items": "item_id"}  # a drop's line per key once a day


def iso_ms(ts_ms: int) -> str:
    """A time as the raw drops write it: ISO-8601 UTC with milliseconds and ``Z``."""
    moment = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def raw_line(record: LiveEvent | Listing) -> tuple[str, date, dict[str, Any]]:
    """A record's drop kind, UTC day and JSON object (docs/raw-format.md)."""
    if isinstance(record, LiveEvent):
        line = {
            "event_id": record.event_id, "event_type": EVENT_TYPES[record.event_type],
            "ts": iso_ms(record.ts_ms), "user_id": record.user_id, "item_id": record.item_id,
            "surface": record.surface, "session_id": record.session_id,
            "position": record.position,
        }  # fmt: skip
        return "events", day_of(record.ts_ms), line
    listing = {
        "item_id": record.item_id, "seller_id": record.seller_id,
        "listed_ts": iso_ms(record.listed_ts_ms), "category": record.category,
        "brand": record.brand, "condition": record.condition, "price": record.price,
        "style": record.style, "size": record.size, "seller_rating": record.seller_rating,
    }  # fmt: skip
    return "items", day_of(record.listed_ts_ms), {k: v for k, v in listing.items() if v is not None}


def day_of(ts_ms: int) -> date:
    """The UTC day of a time."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date()


def position_text(position: tuple[int, int]) -> str:
    """A log position in a file name (``1765000000000.3``)."""
    return f"{position[0]}.{position[1]}"


def part_prefix(source: str) -> str:
    """What a partition's part files start with (``stream-redis0-``)."""
    return f"stream-{source}-"


def parse_position(text: str) -> tuple[int, int]:
    """A position written by :func:`position_text`."""
    hi, _, lo = text.partition(".")
    return int(hi), int(lo)


def write_atomically(path: Path, lines: Iterable[str]) -> None:
    """Write a file under a hidden name, then rename it (ingest skips hidden files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hidden = path.with_name(f".{path.name}.tmp")
    with hidden.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")
    hidden.replace(path)


@dataclass
class Landed:
    """What a lander did so far."""

    entries: int = 0
    lines: int = 0
    skipped: int = 0
    quarantined: int = 0
    late: int = 0  # records of a day whose drop had closed: kept aside, not landed
    files: int = 0
    closed: list[str] = field(default_factory=list)


def part_order(path: Path) -> tuple[str, int, int]:
    """A part's place in log order: its source, then its first position (numerically)."""
    if path.name == COMPACTED:
        return ("", -1, -1)  # what an interrupted compaction already merged comes first
    source, _, positions = path.name[len("stream-") : -len(".jsonl")].partition("-")
    hi, _, lo = positions.split("-", 1)[0].partition(".")
    return (source, int(hi), int(lo))


def compact_day(folder: Path, key: str) -> int:
    """Merge a day's part files into ``stream.jsonl``, one line per ``key``; return its lines.

    Lines are streamed (only the keys seen are held); the first line of a key in log order is
    kept. Idempotent: a retry after a crash merges what the last run left — the compacted file
    and the parts not yet deleted — into the same result, then deletes the parts and writes
    ``_SUCCESS``.
    """
    sources = sorted([*folder.glob("stream-*.jsonl"), *folder.glob(COMPACTED)], key=part_order)
    seen: set[Any] = set()
    hidden = folder / f".{COMPACTED}.tmp"
    with hidden.open("w", encoding="utf-8") as out:
        for path in sources:
            with path.open(encoding="utf-8") as lines:
                for text in lines:
                    text = text.rstrip("\n")
                    if not text:
                        continue
                    identity = json.loads(text)[key]
                    if identity not in seen:
                        seen.add(identity)
                        out.write(text + "\n")
    hidden.replace(folder / COMPACTED)
    for path in sources:
        if path.name != COMPACTED:
            path.unlink(missing_ok=True)
    (folder / "_SUCCESS").touch()
    return len(seen)


class Lander:
    """One landing process's loop over its reader (its partitions), until stopped."""

    def __init__(
        self,
        client: redis.Redis,
        reader: PartitionReader,
        raw: Path,
        prefix: str,
        *,
        late: Path | None = None,
        partitions: int,
        close_after_ms: int,
        batch: int = 2000,
        block_ms: int = 200,
    ) -> None:
        self.client = client
        self.reader = reader
        self.raw = raw
        self.late = late or raw.parent / "quarantine" / "stream"
        self.prefix = prefix
        self.partitions = partitions
        self.close_after_ms = close_after_ms
        self.batch = batch
        self.block_ms = block_ms
        self.totals = Landed()
        self.positions: dict[int, tuple[int, int] | None] = {}
        self.stopping = False

    def source(self, partition: int) -> str:
        """A partition's name in file names (``redis0``)."""
        return f"{self.reader.backend}{partition}"

    def positions_key(self) -> str:
        """Per source, the position of the last batch whose every file was renamed in."""
        return f"{fresh_base(self.prefix)}:land:position"

    def landed(self, partition: int) -> tuple[int, int] | None:
        """The partition's last landed position (read from Redis once)."""
        if partition not in self.positions:
            stored = self.client.hget(self.positions_key(), self.source(partition))
            text = stored.decode() if isinstance(stored, bytes) else stored
            self.positions[partition] = parse_position(text) if text else None
        return self.positions[partition]

    def watermark_key(self) -> str:
        """Per partition, the log time every landing has read past (ms)."""
        return f"{fresh_base(self.prefix)}:land:watermark"

    def step(self, now_ms: int | None = None) -> int:
        """Land one batch, acknowledge it, record the watermarks, close the days now complete."""
        entries = self.reader.read(self.batch, self.block_ms)
        by_partition: dict[int, list[Entry]] = {}
        for entry in entries:
            by_partition.setdefault(entry.partition, []).append(entry)
        for partition, part in by_partition.items():
            self.land(partition, part)
            self.reader.ack(part)
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        caught_up = self.reader.at_end(len(entries) < self.batch)
        marks = {}
        for partition in self.reader.partitions:
            seen = [e.appended_ms for e in by_partition.get(partition, [])]
            marks[str(partition)] = now if caught_up else (max(seen) if seen else None)
        marks = {p: m for p, m in marks.items() if m is not None}
        if marks:
            self.client.hset(self.watermark_key(), mapping=marks)  # type: ignore[arg-type]
        self.close_days()
        return len(entries)

    def land(self, partition: int, entries: Sequence[Entry]) -> None:
        """Write a partition's batch as part files (one per kind and day)."""
        done = self.landed(partition)
        fresh = [e for e in entries if done is None or e.position > done]
        self.totals.entries += len(entries)
        self.totals.skipped += len(entries) - len(fresh)
        if not fresh:
            return
        files: dict[tuple[str, date], list[str]] = {}
        for entry in fresh:
            try:
                record = decode_record(entry.payload)
            except Exception:  # the updater quarantines it with the reason; nothing to land
                self.totals.quarantined += 1
                continue
            kind, day, line = raw_line(record)
            files.setdefault((kind, day), []).append(json.dumps(line, separators=(",", ":")))
        first, last = position_text(fresh[0].position), position_text(fresh[-1].position)
        name = f"{part_prefix(self.source(partition))}{first}-{last}.jsonl"
        for (kind, day), lines in sorted(files.items()):
            folder = self.raw / kind / f"ds={day.isoformat()}"
            if (folder / "_SUCCESS").exists():  # a producer past the contract: kept aside
                write_atomically(self.late / kind / folder.name / name, lines)
                self.totals.late += len(lines)
                log.warning("%d %s of the closed day %s kept aside in %s", len(lines), kind,
                            day, self.late)  # fmt: skip
                continue
            write_atomically(folder / name, lines)
            self.totals.files += 1
            self.totals.lines += len(lines)
        # only now is the whole batch landed: a crash before this re-lands it (the same lines,
        # merged away at compaction), a crash after skips it
        self.client.hset(self.positions_key(), self.source(partition), last)
        self.positions[partition] = fresh[-1].position

    def complete_before_ms(self) -> int | None:
        """The log time every partition's landing has read past (None: one never reported)."""
        fields = [str(p) for p in range(self.partitions)]
        marks = self.client.hmget(self.watermark_key(), fields)
        missing = [f for f, mark in zip(fields, marks, strict=True) if mark is None]
        if missing:
            log.info("stream landing: partitions %s have not reported; no day closes", missing)
            return None
        return min(int(mark) for mark in marks if mark is not None)

    def close_days(self) -> None:
        """Compact and mark complete every open day whose events can no longer arrive.

        A closed day of events gets its items drop too (empty when nothing was listed), as
        ingest needs every kind of a day complete.
        """
        complete = self.complete_before_ms()
        if complete is None:
            return
        days = {
            folder.name
            for kind in KEYS
            for folder in (self.raw / kind).glob("ds=*")
            if not (folder / "_SUCCESS").exists()
            and (any(folder.glob("stream-*.jsonl")) or (folder / COMPACTED).exists())
        }
        for name in sorted(days):
            try:
                day = date.fromisoformat(name[3:])
            except ValueError:
                continue  # not a day folder of ours
            start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
            if complete < start + DAY_MS + self.close_after_ms:
                continue
            for kind, key in KEYS.items():
                self.close(kind, key, self.raw / kind / name)

    def close(self, kind: str, key: str, folder: Path) -> None:
        """Compact one day folder under a Redis lock (as the sold-item repair takes its own)."""
        from redis.exceptions import LockError

        lock = self.client.lock(
            f"{fresh_base(self.prefix)}:land:closing:{kind}:{folder.name}", timeout=600
        )
        if not lock.acquire(blocking=False):
            return  # another lander is closing it
        try:
            if (folder / "_SUCCESS").exists():
                return  # closed while we waited for the lock
            folder.mkdir(parents=True, exist_ok=True)
            lines = compact_day(folder, key)
        finally:
            with contextlib.suppress(LockError):  # expired and taken: theirs to release
                lock.release()
        self.totals.closed.append(f"{kind}/{folder.name}")
        log.info("landed %s %s: %d lines", kind, folder.name, lines)

    def run(self) -> Landed:
        """Loop until :meth:`stop` (an outage of Redis or the broker is retried every second)."""
        from rankflow.stream.updater import retried_errors

        while not self.stopping:
            try:
                self.step()
            except retried_errors() as problem:
                log.warning("stream landing: %s; retrying in a second", problem)
                time.sleep(1.0)
        return self.totals

    def stop(self) -> None:
        """Finish the batch in hand and stop."""
        self.stopping = True


def close_after_ms(config: dict[str, Any]) -> int:
    """How long after a day's end its drop closes: the oldest event taken, plus the grace."""
    seconds = float(config["max_event_age_seconds"]) + float(config["land_grace_seconds"])
    return int(timedelta(seconds=seconds).total_seconds() * 1000)

"""Replay a simulated day's morning into the event log, now, at a chosen speed.

The generator writes whole days as raw drops; the stream half needs them live. A replay reads a
day's raw events and listings of its first hours, checks each line with the live rules (those of
``POST /v1/events``), re-stamps it to the moment it is sent — ``start + offset / speed``, its
offset from the day's midnight compressed — and appends it to the event log (the configured
backend) when that moment comes. Sessions, new listings and sales (purchase events) arrive in
their order, as the app would send them; event ids get a prefix, so a replay never collides
with the day the drops were generated for. ``rankflow replay`` runs it; ``make demo`` replays a
morning to show today's behaviour reaching the ranking service.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rankflow.quality.live import LogRecord, Window, checked_record, listing, live_event

if TYPE_CHECKING:
    from rankflow.config import Settings
    from rankflow.stream.log import EventLog

DAY_MS = 86_400_000
SEND_BATCH = 500  # records per append at most


@dataclass(frozen=True)
class Timed:
    """A raw record of the replayed day: its offset from midnight (ms), kind and checked fields."""

    offset_ms: int
    kind: str  # events | items
    fields: dict[str, object]


@dataclass
class Replayed:
    """What a replay sent."""

    events: int = 0
    listings: int = 0
    purchases: int = 0
    refused: int = 0  # raw lines the live rules refuse (counted, never sent)
    seconds: float = 0.0


def midnight_ms(day: date) -> int:
    """The day's first millisecond (UTC)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def morning(raw: Path, day: date, hours: float, max_line_bytes: int = 65_536) -> list[Timed]:
    """The day's raw events and listings of its first ``hours``, checked, in time order.

    Lines the live rules refuse are left out and counted by :func:`replay` (as ``refused``).
    """
    start = midnight_ms(day)
    end = start + int(hours * 3_600_000)
    window = Window(1, start + DAY_MS - 1)  # the first drop also lists the older catalogue
    timed: list[Timed] = []
    for kind, moment in (("events", "ts"), ("items", "listed_ts")):
        for path in sorted((raw / kind / f"ds={day.isoformat()}").glob("*.jsonl")):
            with path.open("rb") as lines:
                for line in lines:
                    if not line.strip():
                        continue
                    checked = checked_record(kind, line.rstrip(b"\n"), max_line_bytes, window)
                    if isinstance(checked, str):
                        timed.append(Timed(-1, kind, {"reason": checked}))
                        continue
                    if start <= checked[moment] < end:
                        timed.append(Timed(int(checked[moment]) - start, kind, checked))
    timed.sort(key=lambda t: (t.offset_ms, t.kind != "items"))  # a listing before its events
    return timed


def restamped(item: Timed, at_ms: int, prefix: str) -> LogRecord:
    """The record as the app would send it at ``at_ms``."""
    if item.kind == "items":
        return listing({**item.fields, "listed_ts": at_ms})
    return live_event(
        {**item.fields, "ts": at_ms, "event_id": f"{prefix}{item.fields['event_id']}"}
    )


def schedule(
    timed: Sequence[Timed], start_ms: int, speed: float
) -> Iterator[tuple[int, list[Timed]]]:
    """Group the records by the moment each is due (ms), at most :data:`SEND_BATCH` a group."""
    group: list[Timed] = []
    due = start_ms
    for item in timed:
        if item.offset_ms < 0:
            continue
        at = start_ms + int(item.offset_ms / speed)
        if group and (at != due or len(group) >= SEND_BATCH):
            yield due, group
            group = []
        if not group:
            due = at
        group.append(item)
    if group:
        yield due, group


def replay(
    log: EventLog, timed: Sequence[Timed], speed: float, *, prefix: str | None = None
) -> Replayed:
    """Append the records to the log, each re-stamped, when its compressed moment comes.

    A group that falls behind (the log slower than the replay) is sent at once, stamped with
    its due moment: the replay never drops or reorders records to keep up. Event ids get
    ``prefix`` (by default ``replay-<start ms>-``: a second replay the same day is new events,
    not duplicates of the first).
    """
    if speed <= 0:
        raise ValueError(f"the replay speed must be positive, got {speed}")
    done = Replayed(refused=sum(1 for t in timed if t.offset_ms < 0))
    began = time.monotonic()
    start_ms = time.time_ns() // 1_000_000
    prefix = prefix if prefix is not None else f"replay-{start_ms}-"
    for due, group in schedule(timed, start_ms, speed):
        wait = (due - time.time_ns() // 1_000_000) / 1000.0
        if wait > 0:
            time.sleep(wait)
        log.append([restamped(item, due, prefix) for item in group])
        for item in group:
            if item.kind == "items":
                done.listings += 1
            else:
                done.events += 1
                done.purchases += item.fields["event_type"] == "purchase"
    done.seconds = time.monotonic() - began
    return done


def replay_morning(settings: Settings, day: date, hours: float, speed: float) -> Replayed:
    """Replay ``day``'s first ``hours`` of raw drops into the configured event log."""
    from rankflow.stream.log import event_log

    timed = morning(
        settings.paths.raw, day, hours, int(settings.pipeline["ingest"]["max_line_bytes"])
    )
    log = event_log(settings)
    try:
        return replay(log, timed, speed)
    finally:
        log.close()

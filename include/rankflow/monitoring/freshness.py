"""Is the stream keeping today's features fresh? The updaters' progress against its bounds.

Two figures per log partition, both written by the updaters into the fresh state
(``rankflow.store.fresh``): how long ago the partition was last caught up (the end of the log
reached: a dead or far-behind updater lets it grow), and the event-to-visible lags of its last
minute of events (``FreshnessMeter``: the app's clock to the fresh state). The stream watch
(``dags/rankflow_stream_watch.py``) checks them every few minutes and fails, hence alerts, when a
partition is behind ``stream.alert_behind_seconds`` or its p99 lag is over
``stream.alert_freshness_seconds``; the Ranking page shows them. The ranking service needs no
alert to be safe: it drops the stream features itself once ``stream.stale_after_seconds`` pass.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rankflow.store.fresh import decode_progress, freshness_key, progress_key

if TYPE_CHECKING:
    import redis

    from rankflow.config import Settings


SUMMARY_MAX_AGE_SECONDS = 300  # older lag summaries (a quiet partition's) are shown, not judged


class StreamBehind(RuntimeError):
    """A partition of the event log is behind its bound (the message says which and by how much)."""


@dataclass(frozen=True)
class PartitionFreshness:
    """One partition's figures (None: never reported)."""

    partition: str
    behind_seconds: float | None  # since an updater last reached the end of the partition
    last_event_at_ms: int | None  # the newest event applied (its own time)
    events: int | None  # events of the last lag summary
    p50_seconds: float | None
    p99_seconds: float | None
    max_seconds: float | None
    summary_age_seconds: float | None  # how old that summary is


@dataclass(frozen=True)
class StreamFreshness:
    """Every configured partition's figures, and the bounds they are checked against."""

    backend: str
    checked_at_ms: int
    alert_behind_seconds: float
    alert_freshness_seconds: float
    partitions: list[PartitionFreshness]

    @property
    def reported(self) -> bool:
        """Whether an updater ever reported on any partition (a stream runs at all)."""
        return any(p.behind_seconds is not None for p in self.partitions)

    def faults(self) -> dict[str, str]:
        """What is wrong with each partition at fault (empty: all is well)."""
        faults = {}
        for p in self.partitions:
            if p.behind_seconds is None:
                faults[p.partition] = "no updater ever reported"
            elif p.behind_seconds > self.alert_behind_seconds:
                faults[p.partition] = (
                    f"last caught up {p.behind_seconds:.0f} s ago "
                    f"(bound {self.alert_behind_seconds:.0f} s)"
                )
            elif (
                p.p99_seconds is not None
                and p.p99_seconds > self.alert_freshness_seconds
                and (p.summary_age_seconds or 0.0) <= SUMMARY_MAX_AGE_SECONDS
            ):
                faults[p.partition] = (
                    f"p99 event-to-visible {p.p99_seconds:.1f} s over its last {p.events} "
                    f"events (bound {self.alert_freshness_seconds:.0f} s)"
                )
        return faults

    def problems(self) -> list[str]:
        """Why the stream is not fresh, one line per partition at fault."""
        return [f"{partition}: {fault}" for partition, fault in self.faults().items()]

    def as_record(self) -> dict[str, Any]:
        """The figures and the verdict as JSON-ready values (the watch task's return value)."""
        return {**asdict(self), "problems": self.problems()}


def read_freshness(
    client: redis.Redis, settings: Settings, now_ms: int | None = None
) -> StreamFreshness:
    """Read every configured partition's progress and last lag summary (two ``HMGET``)."""
    stream = settings.pipeline["stream"]
    backend = str(stream["backend"])
    prefix = settings.redis.key_prefix
    fields = [f"{backend}:{p}" for p in range(int(stream["partitions"]))]
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    progress: list[bytes | None] = client.hmget(progress_key(prefix), fields)  # type: ignore[assignment]
    summaries: list[bytes | None] = client.hmget(freshness_key(prefix), fields)  # type: ignore[assignment]
    partitions = []
    for field, mark, summary in zip(fields, progress, summaries, strict=True):
        caught_up, event_ms = decode_progress(mark) if mark else (0, 0)
        lags = json.loads(summary) if summary else {}
        partitions.append(
            PartitionFreshness(
                partition=field,
                behind_seconds=(now - caught_up) / 1000.0 if caught_up else None,
                last_event_at_ms=event_ms or None,
                events=lags.get("events"),
                p50_seconds=_seconds(lags.get("p50_ms")),
                p99_seconds=_seconds(lags.get("p99_ms")),
                max_seconds=_seconds(lags.get("max_ms")),
                summary_age_seconds=(now - lags["at_ms"]) / 1000.0 if lags else None,
            )
        )
    return StreamFreshness(
        backend=backend,
        checked_at_ms=now,
        alert_behind_seconds=float(stream["alert_behind_seconds"]),
        alert_freshness_seconds=float(stream["alert_freshness_seconds"]),
        partitions=partitions,
    )


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else float(ms) / 1000.0


def check_stream(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """The watch: the figures when all is well; raise when a partition is behind its bounds.

    A deployment whose updaters never ran (no partition ever reported) is not checked: it has
    no stream to be behind (the ranking service then treats stream features as missing).

    Raises:
        StreamBehind: a partition is behind or too slow; the message names each.
    """
    freshness = read_freshness(client, settings)
    record = freshness.as_record()
    if freshness.reported and record["problems"]:
        raise StreamBehind("the event stream is not fresh: " + "; ".join(record["problems"]))
    return record


def watch_stream(settings: Settings) -> dict[str, Any]:
    """:func:`check_stream` on the configured Redis (the stream watch DAG's one task)."""
    from rankflow.store.client import checked_client

    client = checked_client(settings.redis.url, "The stream was not checked.", socket_timeout=10)
    try:
        return check_stream(client, settings)
    finally:
        client.close()

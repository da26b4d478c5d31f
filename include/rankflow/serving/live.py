"""What the stream updater knows that the nightly snapshot does not: sales, listings, freshness.

A background thread asks Redis, a few times a second, for the items sold since its last look
(``ZRANGEBYSCORE`` on the arrival sequence of ``{prefix}:fresh:sold``: only what is new) and
swaps in a sorted array; every answer of the service leaves those items out, so a sale is gone
from the answers within a poll interval of the updater applying it. The updater keeps the latest
``stream.max_live_sales``; the service reads the set whole again when it loads a new feature
version (whose snapshot marks the older sales), so its copy stays as small.

The same poll reads the listings that arrived (``{prefix}:fresh:listed``, then their records):
each one the served snapshot does not hold gets the item features training gives a listing its
feature day lacks (:mod:`rankflow.features.listings`), computed once on arrival, in a side table
shaped like the snapshot (:attr:`LiveCatalogue.listed`) that the ranker looks in after the
snapshot; a new feature version rebuilds it against its own context and drops what it holds.

The same poll reads the updaters' progress (``{prefix}:fresh:progress``): when a partition has
not been caught up with its log for ``stale_after_ms``, or none ever reported, the fresh state is
stale and the service gives the model NaN for every stream feature (missing, as training saw
for sessions it had no events of) instead of silently old values.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np

from rankflow.store.fresh import (
    decode_progress,
    listed_key,
    listing_key,
    progress_key,
    sold_key,
)

if TYPE_CHECKING:
    import redis

    from rankflow.quality.live import Listing
    from rankflow.serving.snapshot import ItemSnapshot, Listed

log = logging.getLogger("rankflow.serving")


RECORDS_PER_CALL = 1_000  # listing records per MGET when the whole set is read again


class LiveCatalogue:
    """The items sold and listed live, polled from Redis; the updaters' progress."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        poll_seconds: float,
        *,
        stale_after_ms: int = 5_000,
        partitions: int = 1,
        backend: str = "redis",
    ) -> None:
        self.client = client
        self.key = sold_key(prefix)
        self.progress = progress_key(prefix)
        self.stale_after_ms = stale_after_ms
        self.partitions = partitions
        self.backend = backend
        self.caught_up_ms: int | None = None  # the least recent partition's, at the last poll
        self.poll_seconds = poll_seconds
        self.sold = np.zeros(0, np.int64)
        self.seen_up_to = 0.0  # the highest arrival sequence read
        self.listed_key = listed_key(prefix)
        self.prefix = prefix
        self.listed_up_to = 0.0
        self.snapshot: ItemSnapshot | None = None  # what the listings are ranked against
        self.listed: Listed = ()  # live listings the snapshot lacks
        self.failures = 0
        self._lock = threading.Lock()  # one poll or resync at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rankflow-live-sales", daemon=True)

    def stale(self, now_ms: int | None = None) -> bool:
        """Whether the fresh state may be missing events (an updater behind, or none running)."""
        import time

        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        return self.caught_up_ms is None or now - self.caught_up_ms > self.stale_after_ms

    def poll_progress(self) -> None:
        """Read when each partition was last caught up; keep the least recent."""
        fields = [f"{self.backend}:{p}" for p in range(self.partitions)]
        marks: list[bytes | None] = self.client.hmget(self.progress, fields)  # type: ignore[assignment]
        if any(mark is None for mark in marks):
            self.caught_up_ms = None  # a partition no updater ever reported
            return
        self.caught_up_ms = min(decode_progress(mark)[0] for mark in marks if mark is not None)

    def poll(self) -> int:
        """Read the sales that arrived since the last poll; return how many were new."""
        reply: list[tuple[bytes, float]] = self.client.zrangebyscore(  # type: ignore[assignment]
            self.key, f"({self.seen_up_to}", "+inf", withscores=True
        )
        if not reply:
            return 0
        ids = np.array([int(member) for member, _ in reply], np.int64)
        self.seen_up_to = max(float(score) for _, score in reply)
        self.sold = np.union1d(self.sold, ids)
        return len(ids)

    def poll_listings(self) -> int:
        """Read the listings that arrived since the last poll into the side table."""
        reply: list[tuple[bytes, float]] = self.client.zrangebyscore(  # type: ignore[assignment]
            self.listed_key, f"({self.listed_up_to}", "+inf", withscores=True
        )
        if not reply:
            return 0
        self.listed_up_to = max(float(score) for _, score in reply)
        found = self.read_listings([int(member) for member, _ in reply])
        self.add_listings(found)
        return len(found)

    def read_listings(self, item_ids: list[int]) -> list[Listing]:
        """The listing records of ``item_ids`` (expired or unreadable ones are left out)."""
        from rankflow.quality.live import Listing, decode_record
        from rankflow.store.commands import _bytes

        found: list[Listing] = []
        for start in range(0, len(item_ids), RECORDS_PER_CALL):
            chunk = item_ids[start : start + RECORDS_PER_CALL]
            keys = [listing_key(self.prefix, i) for i in chunk]
            for value in self.client.mget(keys):  # type: ignore[union-attr]
                raw = _bytes(value)
                try:
                    record = decode_record(raw) if raw is not None else None
                except ValueError:  # the updater checked it; a hand-written key is skipped
                    continue
                if isinstance(record, Listing):
                    found.append(record)
        return found

    def add_listings(self, listings: list[Listing]) -> None:
        """Give new listings their features against the snapshot and swap the side table in."""
        from rankflow.serving.snapshot import with_listings

        snapshot = self.snapshot
        if snapshot is None or snapshot.context is None:
            return  # read again by follow() once a snapshot with a listing context is served
        self.listed = with_listings(self.listed_for(snapshot), snapshot, listings)

    def follow(self, snapshot: ItemSnapshot) -> None:
        """Rank live listings against a new feature version; read both sets whole again."""
        with self._lock:
            self.snapshot = snapshot
            self.resync()

    def resync(self) -> None:
        """Read both sets whole again (a new feature version: older items may have left them)."""
        self.sold, self.seen_up_to = np.zeros(0, np.int64), 0.0
        self.poll()
        self.listed, self.listed_up_to = (), 0.0
        self.poll_listings()

    def listed_for(self, snapshot: ItemSnapshot) -> Listed:
        """The live listings ranked against ``snapshot`` (none: another version's, or none yet)."""
        listed = self.listed
        return listed if listed and listed[0].version == snapshot.version else ()

    def remove_sold(self, items: np.ndarray) -> np.ndarray:
        """The items that have not sold live (order kept)."""
        sold = self.sold
        if not len(sold) or not len(items):
            return items
        return items[~np.isin(items, sold, assume_unique=False)]

    def start(self) -> None:
        """Poll once, then every ``poll_seconds`` in the background."""
        self._poll_quietly()
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(2.0)

    def _poll_quietly(self) -> None:
        try:
            with self._lock:
                self.poll()
                self.poll_listings()
                self.poll_progress()
            self.failures = 0
        except Exception as problem:  # Redis away: keep what we know, say so once a minute
            self.failures += 1
            if self.failures == 1 or self.failures % 120 == 0:
                log.warning("could not read the live sales: %s", problem)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._poll_quietly()

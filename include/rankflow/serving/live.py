"""What the stream updater knows that the nightly snapshot does not: sales, listings, freshness.

A background thread asks Redis, a few times a second, for the items sold since its last look
(``ZRANGEBYSCORE`` on the arrival sequence of ``{prefix}:fresh:sold``: only what is new) and
swaps in a sorted array; every answer of the service leaves those items out, so a sale is gone
from the answers within a poll interval of the updater applying it. The updater keeps the latest
``stream.max_live_sales``; the service reads the set whole again when it loads a new feature
version (whose snapshot marks the older sales), so its copy stays as small.

The same poll reads the listings that arrived (``{prefix}:fresh:listed``, then their records):
each one the served snapshot does not hold gets the item features training gives a listing its
feature day lacks (:mod:`rankflow.features.listings`), computed once on arrival, in side tables
shaped like the snapshot (:attr:`LiveCatalogue.listed`) that the ranker looks in after the
snapshot; a new feature version rebuilds them against its own context, before it is served.

The same poll reads the updaters' progress (``{prefix}:fresh:progress``): when a partition has
not been caught up with its log for ``stale_after_ms``, or none ever reported, the fresh state is
stale and the service gives the model NaN for every stream feature (missing, as training saw
for sessions it had no events of) instead of silently old values.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
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


PAGE = 10_000  # set members per ZRANGEBYSCORE (a whole set is read again in pages)
RECORDS_PER_CALL = 1_000  # listing records per MGET


class LiveCatalogue:
    """The items sold and listed live, polled from Redis; the updaters' progress.

    Three readers, each its own step of a poll so one failing leaves the others current:
    progress first (a stale updater must be noticed even when the sets cannot be read), then
    sales, then listings. Both sets are read by arrival sequence, in pages; a cursor moves only
    after what it covers was read and applied, so a failed read is read again by the next poll.
    A new feature version (:meth:`follow`) reads both sets whole into new state that replaces the
    old at once: sales never come back and listings are never missing while it reads.
    """

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
        self.prefix = prefix
        self.sold_key = sold_key(prefix)
        self.listed_key = listed_key(prefix)
        self.progress = progress_key(prefix)
        self.stale_after_ms = stale_after_ms
        self.partitions = partitions
        self.backend = backend
        self.caught_up_ms: int | None = None  # the least recent partition's, at the last poll
        self.poll_seconds = poll_seconds
        self.sold = np.zeros(0, np.int64)
        self.seen_up_to = 0.0  # the highest arrival sequence of the sales read
        self.listed_up_to = 0.0  # ... of the listings read
        self.wanted: ItemSnapshot | None = None  # the snapshot listings are to be ranked against
        self.snapshot: ItemSnapshot | None = None  # ... and the one they are ranked against
        self.listed: Listed = ()  # live listings the snapshot lacks
        self.failures = 0
        self._lock = threading.Lock()  # one poll or resync at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rankflow-live", daemon=True)

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

    def arrived(self, key: str, after: float) -> Iterator[tuple[list[int], float]]:
        """The members of a set scored after ``after``, in pages, each with its last score."""
        while True:
            reply: list[tuple[bytes, float]] = self.client.zrangebyscore(  # type: ignore[assignment]
                key, f"({after}", "+inf", start=0, num=PAGE, withscores=True
            )
            if not reply:
                return
            after = float(reply[-1][1])
            yield [int(member) for member, _ in reply], after
            if len(reply) < PAGE:
                return

    def poll(self) -> int:
        """Read the sales that arrived since the last poll; return how many were new."""
        new = 0
        for ids, last in self.arrived(self.sold_key, self.seen_up_to):
            self.sold = np.union1d(self.sold, np.array(ids, np.int64))
            self.seen_up_to, new = last, new + len(ids)
        return new

    def poll_listings(self) -> int:
        """Add the listings that arrived since the last poll to the side tables."""
        from rankflow.serving.snapshot import with_listings

        snapshot, new = self.snapshot, 0
        if snapshot is None or snapshot.context is None:
            return 0  # nothing to rank them against: read whole by follow() when there is
        for ids, last in self.arrived(self.listed_key, self.listed_up_to):
            self.listed = with_listings(self.listed, snapshot, self.read_listings(ids))
            self.listed_up_to, new = last, new + len(ids)
        return new

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

    def follow(self, snapshot: ItemSnapshot) -> None:
        """Rank live listings against a new feature version: read both sets whole again.

        Called before the version is served; the new state replaces the old in one step. On a
        failure the old state stays and the poll thread tries again.
        """
        self.wanted = snapshot
        with self._lock:
            self.resync(snapshot)

    def resync(self, snapshot: ItemSnapshot) -> None:
        """Read both sets whole into new state, then swap it in (older items may have left)."""
        from rankflow.serving.snapshot import with_listings

        sold, seen_up_to = np.zeros(0, np.int64), 0.0
        for ids, last in self.arrived(self.sold_key, 0.0):
            sold, seen_up_to = np.union1d(sold, np.array(ids, np.int64)), last
        listed: Listed = ()
        listed_up_to = 0.0
        if snapshot.context is not None:  # a snapshot from before live listings ranks none
            for ids, last in self.arrived(self.listed_key, 0.0):
                listed, listed_up_to = (
                    with_listings(listed, snapshot, self.read_listings(ids)),
                    last,
                )
        self.sold, self.seen_up_to = sold, seen_up_to
        self.listed, self.listed_up_to, self.snapshot = listed, listed_up_to, snapshot

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
        """One poll: progress, sales, listings (or a whole read for a version not yet followed)."""
        wanted = self.wanted
        steps: list[tuple[str, Callable[[], object]]] = [("progress", self.poll_progress)]
        if wanted is not None and wanted is not self.snapshot:
            steps.append(("sales and listings", lambda: self.resync(wanted)))
        else:
            steps += [("sales", self.poll), ("listings", self.poll_listings)]
        failed = []
        with self._lock:
            for name, step in steps:
                try:
                    step()
                except Exception as problem:  # Redis away: keep what we know
                    failed.append(f"{name}: {problem}")
        if not failed:
            self.failures = 0
            return
        self.failures += 1  # said once a minute
        if self.failures == 1 or self.failures % 120 == 0:
            log.warning("could not read the live state (%s)", "; ".join(failed))

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._poll_quietly()

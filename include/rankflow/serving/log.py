"""The serving log: every answer of the ranking service, appended asynchronously to a Redis stream.

The request path only builds a compact record and queues it; a background thread sends the
queue in pipelined ``XADD`` batches (one round trip per batch) to ``{prefix}:log:served``,
connected as the logger user, which may append to the ``log:`` streams and do nothing else.
For a stable hash sample of users (``serving.log_vectors_percent``) the record also carries
every scored candidate's model input row and score, which the nightly skew check
(:mod:`rankflow.monitoring.skew`) rebuilds offline and re-scores. The ``drain_served`` step
(:mod:`rankflow.stream.drain`) moves the stream into the ``bronze/served`` Delta table.

When Redis is away the queue holds up to ``serving.log_queue`` records and retries; beyond that
records are dropped and counted (``rankflow_serving_log_records_total{outcome="dropped"}``), never
blocking an answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

if TYPE_CHECKING:
    import redis

log = logging.getLogger("rankflow.serving")
RECORD_FIELD = b"r"  # the stream entry's one field: the record, MessagePack
_MASK64 = (1 << 64) - 1


class ServedRecord(msgspec.Struct, array_like=True, frozen=True):
    """One answer of ``POST /v1/rank`` as logged (ids u32le, scores and inputs f32le)."""

    request_id: str
    ts_ms: int
    user_id: int
    surface: str
    k: int
    candidates: bytes  # the request's candidates in request order (empty: none were sent)
    item_ids: bytes  # the answer, in order
    scores: bytes  # the scores of the answer's scored head (the rest had no score)
    model_version: str | None
    feature_version: str | None
    fallback: bool
    reason: str | None
    scored_ids: bytes = b""  # sampled users: every scored candidate, in model input row order
    scored_scores: bytes = b""  # ... its score
    inputs: bytes = b""  # ... its model input row (rows x model inputs, the model's order)
    stream_cutoff_ms: int = 0  # ... its stream features as of this time (0: none were read)


def ids_bytes(ids: np.ndarray | list[int]) -> bytes:
    """Item ids as the log stores them (uint32 little-endian)."""
    return np.asarray(ids, dtype="<u4").tobytes()


def floats_bytes(values: np.ndarray | list[float]) -> bytes:
    """Scores or model inputs as the log stores them (float32 little-endian)."""
    return np.asarray(values, dtype="<f4").tobytes()


def vectors_sampled(user_id: int, percent: float, seed: int) -> bool:
    """Whether a user's answers log their full model inputs: a stable hash sample (splitmix64)."""
    z = (user_id + seed * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z % 1_000_000) < percent * 10_000


class ServingLog:
    """A bounded queue of records and the thread that appends them to the stream."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        max_queue: int,
        max_stream_length: int,
        batch: int = 256,
        flush_seconds: float = 0.25,
        on_count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.max_queue = max_queue
        self.max_stream_length = max_stream_length
        self.batch = batch
        self.flush_seconds = flush_seconds
        self._flushed_at = time.monotonic()
        self.on_count = on_count  # (outcome, records): "logged", "dropped", "queued" (depth)
        self.logged = 0
        self.dropped = 0
        self.failures = 0
        self._queue: deque[ServedRecord] = deque()
        self._ready = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="rankflow-serving-log", daemon=True)

    def append(self, record: ServedRecord) -> None:
        """Queue one record (never blocks; a full queue drops it and counts the drop)."""
        with self._ready:
            if len(self._queue) >= self.max_queue:
                self._count("dropped", 1)
                return
            self._queue.append(record)
            if len(self._queue) >= self.batch:
                self._ready.notify()

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (within ``timeout``) and stop."""
        with self._ready:
            self._stop = True
            self._ready.notify()
        self._thread.join(timeout)

    def _count(self, outcome: str, records: int) -> None:
        if outcome == "logged":
            self.logged += records
        elif outcome == "dropped":
            self.dropped += records
        if self.on_count is not None and (records or outcome == "queued"):
            self.on_count(outcome, records)

    def pending(self) -> int:
        """Records queued and not yet appended."""
        return len(self._queue)

    def _take(self) -> list[ServedRecord]:
        """The next batch, once ``flush_seconds`` passed since the last (or a batch is full).

        Few, larger pipelines: each wake-up of this thread takes the GIL and the core's caches
        from the request path, so it wakes a few times a second, not once per answer.
        """
        with self._ready:
            due = self._flushed_at + self.flush_seconds
            while len(self._queue) < self.batch and not self._stop:
                left = due - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            self._flushed_at = time.monotonic()
            return [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]

    def _give_back(self, records: list[ServedRecord]) -> None:
        with self._ready:
            room = self.max_queue - len(self._queue)
            kept = records[:room]
            self._count("dropped", len(records) - len(kept))
            self._queue.extendleft(reversed(kept))

    def _send(self, records: list[ServedRecord]) -> None:
        encode = msgspec.msgpack.encode
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            pipe.xadd(
                self.stream,
                {RECORD_FIELD: encode(record)},
                maxlen=self.max_stream_length,
                approximate=True,
            )
        pipe.execute()

    def _run(self) -> None:
        while True:
            records = self._take()
            if not records:
                if self._stop:
                    return
                continue
            try:
                self._send(records)
            except Exception as problem:  # Redis away: keep the records, retry in a second
                self.failures += 1
                if self.failures == 1 or self.failures % 60 == 0:
                    log.warning("serving log: %d records not appended: %s", len(records), problem)
                self._give_back(records)
                if self._stop:
                    self._count("dropped", len(self._queue))
                    return
                time.sleep(1.0)
            else:
                self._count("logged", len(records))
            self._count("queued", len(self._queue))


def decode_record(payload: bytes) -> ServedRecord:
    """Decode one stream entry's record."""
    return msgspec.msgpack.decode(payload, type=ServedRecord)


def append_refusal(client: redis.Redis, stream: str, refusal: dict[str, str]) -> None:
    """Record a refused model in the refusals log, which the nightly run counts and alerts on."""
    client.xadd(stream, dict(refusal), maxlen=10_000, approximate=True)  # type: ignore[arg-type]


def refusals_between(
    client: redis.Redis, stream: str, start_ms: int, end_ms: int
) -> list[dict[str, str]]:
    """The refusals recorded in ``[start_ms, end_ms)`` (a handful a day at most)."""
    entries: list[Any] = client.xrange(stream, f"{start_ms}-0", f"({end_ms}-0") or []
    return [
        {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode() if isinstance(v, bytes) else str(v)
            )
            for k, v in fields.items()
        }
        for _, fields in entries
        if fields
    ]

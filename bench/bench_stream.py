"""The stream updater's throughput and event-to-feature latency: ``make bench-stream``.

On each backend (Redis Streams always; Kafka when ``make kafka-up`` runs, or ``--backend``),
in a prefix and topic of its own:

(1) throughput: ``--events`` events (users and items drawn like the demo's) appended to the log,
    then one updater process (``rankflow stream``'s loop, in this process) applies them;
    events/s from its first read to the last entry applied, median of ``--runs`` runs with the
    range. The reference, measured in the same run, is the log alone: the same entries read
    and acknowledged by the same reader with nothing applied; the ratio says what the fresh
    state costs on top of reading the log.
(2) latency: a producer appends one event every 2 ms for ``--seconds`` while the updater runs;
    each event's latency is from its append (the log's own timestamp: the Redis entry id's
    milliseconds, the Kafka message's create time) to the moment the script that applied it
    returned, i.e. when a reader of Redis sees it. p50 / p99 / max over all events.

It is a benchmark, not a test: it prints the figures and the targets (p99 <= 500 ms on Redis
Streams and <= 2 s on Kafka; >= 20,000 events/s per process on Redis Streams) and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from rankflow.config import load_settings
from rankflow.quality.live import LiveEvent
from rankflow.store.client import redis_client
from rankflow.stream.log import Entry, RedisStreamsLog, RedisStreamsReader
from rankflow.stream.updater import Updater, UpdaterConfig

TARGET_P99_MS = {"redis": 500.0, "kafka": 2000.0}
TARGET_RATE = {"redis": 20_000.0}


def say(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="latency run length")
    parser.add_argument("--backend", choices=["redis", "kafka", "both"], default="both")
    return parser.parse_args(argv)


def drawn_events(n: int, seed: int, start_ms: int) -> list[LiveEvent]:
    """Events of 50k users on 100k items, types in the demo's proportions, in time order."""
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.3, n) % 50_000 + 1
    items = rng.zipf(1.2, n) % 100_000 + 1
    kinds = rng.choice(6, n, p=[0.80, 0.12, 0.03, 0.03, 0.015, 0.005])
    ts = start_ms + np.sort(rng.integers(0, 600_000, n))
    tag = uuid.uuid4().hex[:6]
    return [
        LiveEvent(f"{tag}-{i}", int(kinds[i]), int(ts[i]), int(users[i]), int(items[i]),
                  "home", f"s{users[i]}", 1)
        for i in range(n)
    ]  # fmt: skip


class Backend:
    """A log and readers on one backend, under a prefix (and topic) of this run's own."""

    def __init__(self, name: str, settings: Any, client: Any) -> None:
        self.name = name
        self.settings = settings
        self.client = client
        self.prefix = f"rfbench{uuid.uuid4().hex[:6]}"
        self.topic = f"rankflow-bench-{self.prefix}"
        self.partitions = 1
        if name == "kafka":
            from confluent_kafka.admin import AdminClient, NewTopic

            bootstrap = settings.pipeline["stream"]["kafka"]["bootstrap_servers"]
            self.bootstrap = bootstrap
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic(self.topic, 1, 1)])[self.topic].result(30)

    def log(self) -> Any:
        if self.name == "redis":
            return RedisStreamsLog(self.client, self.prefix, self.partitions, 10_000_000)
        from rankflow.stream.kafka import KafkaLog

        return KafkaLog(self.bootstrap, self.topic, linger_ms=2)

    def reader(self, group: str) -> Any:
        if self.name == "redis":
            return RedisStreamsReader(self.client, self.prefix, [0], group, "bench")
        from rankflow.stream.kafka import KafkaReader

        return KafkaReader(self.bootstrap, self.topic, group, None)

    def cleanup(self) -> None:
        from rankflow.store.commands import scan_keys

        batch = list(scan_keys(self.client, f"{self.prefix}:*"))
        for i in range(0, len(batch), 1000):
            self.client.unlink(*batch[i : i + 1000])
        if self.name == "kafka":
            from confluent_kafka.admin import AdminClient

            AdminClient({"bootstrap.servers": self.bootstrap}).delete_topics([self.topic])


def config_for(prefix: str, settings: Any) -> UpdaterConfig:
    stream = dict(settings.pipeline["stream"])
    return UpdaterConfig.of(prefix, stream)


def read_all(reader: Any, n: int, batch: int) -> float:
    """Seconds to read and acknowledge ``n`` entries with nothing applied (the reference)."""
    got = 0
    started = time.perf_counter()
    while got < n:
        entries = reader.read(batch, 100)
        reader.ack(entries)
        got += len(entries)
    return time.perf_counter() - started


def apply_all(updater: Updater, n: int) -> float:
    """Seconds for the updater to apply ``n`` entries from its first read."""
    started = time.perf_counter()
    done = 0
    while done < n:
        done += updater.step()
    return time.perf_counter() - started


def throughput(
    name: str, settings: Any, client: Any, events: int, runs: int
) -> tuple[list[float], list[float]]:
    """Events/s of the updater and of the bare log reader, ``runs`` runs each (interleaved).

    Each run has a log and a fresh state of its own (a new prefix): a run on an earlier run's
    state would find its entries' positions applied and skip them.
    """
    applied, bare = [], []
    for run in range(runs):
        backend = Backend(name, settings, client)
        try:
            config = config_for(backend.prefix, settings)
            drawn = drawn_events(events, run, 1_765_000_000_000)
            backend.log().append(drawn)
            reference = backend.reader(f"bare-{run}")
            bare.append(events / read_all(reference, events, config.batch))
            updater = Updater(backend.client, backend.reader(f"apply-{run}"), config)
            applied.append(events / apply_all(updater, events))
            if updater.totals.applied + updater.totals.duplicates != events:
                raise RuntimeError(f"the updater applied {updater.totals} of {events} events")
        finally:
            backend.cleanup()
        say(f"    run {run + 1}: updater {applied[-1]:,.0f} events/s, log alone "
            f"{bare[-1]:,.0f} events/s")  # fmt: skip
    return applied, bare


def latency(backend: Backend, seconds: float) -> np.ndarray:
    """Append-to-applied milliseconds of events sent one every 2 ms while the updater runs."""
    config = config_for(backend.prefix, backend.settings)
    reader = backend.reader("latency")
    stamps: list[float] = []

    class Timed(Updater):
        def step(self) -> int:
            entries = self.reader.read(self.config.batch, self.config.block_ms)
            if not entries:
                return 0
            from rankflow.stream.updater import apply_entries

            apply_entries(self.client, entries, self.config, partition="bench:0",
                          caught_up=True)  # fmt: skip
            now = time.time() * 1000
            stamps.extend(now - appended_ms(backend, e) for e in entries)
            self.reader.ack(entries)
            return len(entries)

    updater = Timed(backend.client, reader, config)
    thread = threading.Thread(target=updater.run, daemon=True)
    thread.start()
    log = backend.log()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        now_ms = time.time_ns() // 1_000_000
        log.append([LiveEvent(f"lat-{backend.prefix}-{n}", 1, now_ms, 1 + n % 500, 1 + n % 900,
                              "home", "s", 1)])  # fmt: skip
        n += 1
        time.sleep(0.002)
    deadline = time.monotonic() + 10
    while len(stamps) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    updater.stop()
    thread.join(5)
    return np.array(stamps)


def appended_ms(backend: Backend, entry: Entry) -> float:
    """When the log took an entry (the Redis id's milliseconds, the Kafka message's time)."""
    return float(entry.appended_ms)


def run_backend(name: str, args: argparse.Namespace) -> None:
    """Measure one backend and print its figures against the targets."""
    settings = load_settings()
    client = redis_client(settings.redis.admin_url or settings.redis.url)
    try:
        say(f"== {name}: {args.events:,} events x {args.runs} runs, one updater process")
        applied, bare = throughput(name, settings, client, args.events, args.runs)
        rate, reference = statistics.median(applied), statistics.median(bare)
        say(f"(1) updater {rate:,.0f} events/s [{min(applied):,.0f} .. {max(applied):,.0f}]; "
            f"the log alone {reference:,.0f} events/s [{min(bare):,.0f} .. {max(bare):,.0f}]; "
            f"ratio {rate / reference:.2f}")  # fmt: skip
        if name in TARGET_RATE:
            verdict = "met" if rate >= TARGET_RATE[name] else "NOT MET"
            say(f"    target >= {TARGET_RATE[name]:,.0f} events/s per process: {verdict}")
        quiet = Backend(name, settings, client)  # a log of its own: only the paced events
        try:
            stamps = latency(quiet, args.seconds)
        finally:
            quiet.cleanup()
        p50, p99 = np.percentile(stamps, [50, 99])
        say(f"(2) event to feature, {len(stamps):,} events one every 2 ms: p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms, max {stamps.max():.1f} ms")  # fmt: skip
        verdict = "met" if p99 <= TARGET_P99_MS[name] else "NOT MET"
        say(f"    target p99 <= {TARGET_P99_MS[name]:,.0f} ms: {verdict}")
    finally:
        client.close()


def main(argv: Sequence[str]) -> int:
    """Run the chosen backends; exit 0 once measured."""
    args = parse_args(argv)
    names = ["redis", "kafka"] if args.backend == "both" else [args.backend]
    for name in names:
        if name == "kafka":
            from rankflow.ops.services import listening

            if not listening("127.0.0.1", 9092) and args.backend == "both":
                say("== kafka: no broker on 127.0.0.1:9092 (make kafka-up); skipped")
                continue
        run_backend(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

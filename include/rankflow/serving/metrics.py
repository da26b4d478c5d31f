"""The ranking service's Prometheus metrics: requests, fallbacks, latency, serving log, events."""

from __future__ import annotations

import os
import time


class Metrics:
    """The service's Prometheus metrics, per process or summed over the workers.

    With several workers (``rankflow serve --workers N``) each process writes its values under
    ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` aggregates them (prometheus_client's
    multiprocess mode), so a scrape of any worker shows the whole service.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rankflow_rank_requests", "Rank requests by outcome", ["status"], registry=self.registry
        )
        self.fallbacks = Counter(
            "rankflow_rank_fallbacks", "Fallback answers by reason", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "rankflow_rank_seconds",
            "Time to answer POST /v1/rank",
            buckets=(0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=self.registry,
        )
        self.unknown = Counter(
            "rankflow_rank_unknown_candidates",
            "Candidates neither the item snapshot nor the live listings know",
            registry=self.registry,
        )  # fmt: skip
        self.served = Gauge(
            "rankflow_served_info", "What is served (value 1)",
            ["model_version", "feature_version"], registry=self.registry,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.serving: tuple[str, str] | None = None
        self.live_listings = Gauge(
            "rankflow_live_listings", "Live listings the served snapshot lacks, ranked as new",
            registry=self.registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.refused = Counter(
            "rankflow_model_refusals", "Models refused (trained on another feature schema)",
            registry=self.registry,
        )  # fmt: skip
        self.log_records = Counter(
            "rankflow_serving_log_records", "Serving log records by outcome (logged, dropped)",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.events = Counter(
            "rankflow_events_received", "Records of POST /v1/events by outcome",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.log_queued = Gauge(
            "rankflow_serving_log_queued", "Serving log records waiting to be appended",
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.gc_pauses = Histogram(
            "rankflow_gc_pause_seconds", "Python garbage collections (every request waits)",
            ["generation"], buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )  # fmt: skip
        self._gc_started = 0.0

    def watch_gc(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` hook: time each collection (the GIL is held; requests wait)."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.labels(str(info.get("generation", -1))).observe(
                time.perf_counter() - self._gc_started
            )

    def count_log(self, outcome: str, records: int) -> None:
        """The serving log's counts: records logged or dropped, or the queue's depth."""
        if outcome == "queued":
            self.log_queued.set(records)
        else:
            self.log_records.labels(outcome).inc(records)

    def show_served(self, model_version: str, feature_version: str) -> None:
        """Mark the pair served now (the previous pair drops to 0)."""
        pair = (model_version, feature_version)
        if pair != self.serving:
            if self.serving is not None:
                self.served.labels(*self.serving).set(0)
            self.served.labels(*pair).set(1)
            self.serving = pair

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's metrics, or every worker's summed."""
        from prometheus_client import CollectorRegistry, generate_latest

        if not self.multiprocess:
            return bytes(generate_latest(self.registry))
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return bytes(generate_latest(registry))

    def close(self) -> None:
        """Drop this worker's live gauges from the aggregate (a worker stopping)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())

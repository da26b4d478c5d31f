"""The stream processes ``rankflow stream`` runs: the updater, or the landing, until stopped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rankflow.config import Settings
    from rankflow.stream.landing import Landed, Lander
    from rankflow.stream.updater import Applied, Updater


def checked_partitions(settings: Settings, text: str | None) -> list[int] | None:
    """The partitions named on the command line (None: all), each within ``stream.partitions``."""
    count = int(settings.pipeline["stream"]["partitions"])
    partitions = [int(p) for p in text.split(",")] if text else None
    wrong = [p for p in partitions or [] if not 0 <= p < count]
    if wrong:
        raise ValueError(f"partitions {wrong} are outside 0..{count - 1} (stream.partitions)")
    return partitions


def stream_worker(
    settings: Settings,
    partitions: Sequence[int] | None,
    consumer: str | None,
    *,
    land: bool,
    metrics_port: int | None = None,
) -> Updater | Lander:
    """The updater (event log -> fresh state), or with ``land`` the landing (-> raw drops).

    With ``metrics_port`` the updater serves Prometheus metrics there (``/metrics``).
    """
    from rankflow.store.client import checked_client
    from rankflow.stream.landing import LANDING_GROUP, Lander, close_after_ms
    from rankflow.stream.log import partition_reader
    from rankflow.stream.updater import FreshnessMeter, Updater, UpdaterConfig

    config = settings.pipeline["stream"]
    client = checked_client(settings.redis.url, "The stream process did not start.")
    if land:
        return Lander(
            client,
            partition_reader(settings, partitions, consumer, group=LANDING_GROUP),
            settings.paths.raw,
            settings.redis.key_prefix,
            partitions=int(config["partitions"]),
            close_after_ms=close_after_ms(config),
        )
    reader = partition_reader(settings, partitions, consumer)
    prefix = settings.redis.key_prefix
    meter = FreshnessMeter(prefix, histogram=lag_histogram(metrics_port))
    return Updater(client, reader, UpdaterConfig.of(prefix, config), freshness=meter)


def lag_histogram(port: int | None) -> object | None:
    """The updater's freshness histogram, served on ``port`` (None: no metrics server)."""
    if port is None:
        return None
    from prometheus_client import Histogram, start_http_server

    start_http_server(port)
    return Histogram(
        "rankflow_stream_event_visible_seconds",
        "Event time to the event being visible in the fresh online state (the app's clock)",
        ["partition"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    )


def run_until_stopped(worker: Updater | Lander) -> Applied | Landed:
    """Run a stream process until SIGTERM or Ctrl-C; return what it did."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        return worker.run()
    except KeyboardInterrupt:
        return worker.totals


def run_stream(
    settings: Settings,
    partitions_text: str | None,
    consumer: str | None,
    land: bool,
    metrics_port: int | None,
) -> None:
    """``rankflow stream``: say what it holds, run until stopped, print what it did."""
    from rankflow.stream.landing import Landed

    partitions = checked_partitions(settings, partitions_text)
    worker = stream_worker(settings, partitions, consumer, land=land, metrics_port=metrics_port)
    held = ",".join(map(str, partitions)) if partitions else "all"
    what = "landing into " + str(settings.paths.raw) if land else "updating"
    name = consumer or "a name of this process"
    print(f"rankflow stream: partitions {held} as {name}, {what}", flush=True)
    done = run_until_stopped(worker)
    if isinstance(done, Landed):
        closed = ", ".join(done.closed) or "none"
        print(f"rankflow stream: {done.lines} lines in {done.files} files, {done.skipped} "
              f"skipped, {done.late} late, days closed: {closed}", flush=True)  # fmt: skip
    else:
        print(f"rankflow stream: applied {done.applied}, duplicates {done.duplicates}, "
              f"replayed {done.replayed}, listings {done.listings}, quarantined "
              f"{done.quarantined}, sold {len(done.sold)}", flush=True)  # fmt: skip

"""What a Spark application did, from its event log: rows, shuffle, spill and peak memory.

Spark writes one JSON event a line when ``spark.eventLog.enabled`` is set
(``spark.eventLog.compress=false`` keeps it plain text; Spark 4 rolls it into a folder per
application). This module reads such a log with no
Spark at all and sums the tasks' metrics; with ``spark.eventLog.logStageExecutorMetrics`` (and
``spark.executor.processTreeMetrics.enabled`` for the resident sizes) it also takes the peak of
every executor's memory, the driver's included (in ``local[*]`` the driver is the executor).
The nightly benchmark reads one log per step (each step is its own application).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# executor metrics kept at their peak (bytes)
PEAK_METRICS = (
    "JVMHeapMemory",
    "JVMOffHeapMemory",
    "ProcessTreeJVMRSSMemory",
    "ProcessTreePythonRSSMemory",
)


@dataclass
class AppSummary:
    """One application's totals over its tasks and peaks over its executors."""

    name: str = ""
    app_id: str = ""
    seconds: float = 0.0  # application start to end, as Spark logged them
    tasks: int = 0
    failed_tasks: int = 0
    records_read: int = 0
    bytes_read: int = 0
    records_written: int = 0
    bytes_written: int = 0
    shuffle_bytes_written: int = 0
    shuffle_bytes_read: int = 0
    memory_bytes_spilled: int = 0
    disk_bytes_spilled: int = 0
    peak_execution_memory: int = 0  # the largest of one task's
    peaks: dict[str, int] = field(default_factory=dict)  # executor metric -> peak bytes
    executors: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (executors as a sorted list)."""
        return {**asdict(self), "executors": sorted(self.executors)}


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of one plain-text event log (a line that is not JSON is skipped)."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a log cut short by a crash ends with a partial line


def summarise(events: Iterable[dict[str, Any]]) -> AppSummary:
    """Sum the task metrics and take the executor memory peaks of one application's events."""
    app = AppSummary()
    started = ended = 0
    for event in events:
        kind = event.get("Event")
        if kind == "SparkListenerApplicationStart":
            app.name, app.app_id = str(event.get("App Name", "")), str(event.get("App ID", ""))
            started = int(event.get("Timestamp", 0))
        elif kind == "SparkListenerApplicationEnd":
            ended = int(event.get("Timestamp", 0))
        elif kind == "SparkListenerTaskEnd":
            add_task(app, event)
        elif kind == "SparkListenerStageExecutorMetrics":
            app.executors.add(str(event.get("Executor ID", "")))
            add_peaks(app, event.get("Executor Metrics") or {})
        elif kind == "SparkListenerExecutorMetricsUpdate":  # the driver's peaks, at the end
            app.executors.add(str(event.get("Executor ID", "")))
            for update in event.get("Executor Metrics Updated") or []:
                add_peaks(app, update.get("Executor Metrics") or {})
    app.seconds = max(ended - started, 0) / 1000.0
    return app


def add_task(app: AppSummary, event: dict[str, Any]) -> None:
    """Add one finished task's metrics to the application's totals."""
    app.tasks += 1
    reason = (event.get("Task End Reason") or {}).get("Reason", "Success")
    if reason != "Success":
        app.failed_tasks += 1
    metrics = event.get("Task Metrics") or {}
    read = metrics.get("Input Metrics") or {}
    written = metrics.get("Output Metrics") or {}
    shuffle_out = metrics.get("Shuffle Write Metrics") or {}
    shuffle_in = metrics.get("Shuffle Read Metrics") or {}
    app.records_read += int(read.get("Records Read", 0))
    app.bytes_read += int(read.get("Bytes Read", 0))
    app.records_written += int(written.get("Records Written", 0))
    app.bytes_written += int(written.get("Bytes Written", 0))
    app.shuffle_bytes_written += int(shuffle_out.get("Shuffle Bytes Written", 0))
    app.shuffle_bytes_read += int(shuffle_in.get("Remote Bytes Read", 0)) + int(
        shuffle_in.get("Local Bytes Read", 0)
    )
    app.memory_bytes_spilled += int(metrics.get("Memory Bytes Spilled", 0))
    app.disk_bytes_spilled += int(metrics.get("Disk Bytes Spilled", 0))
    app.peak_execution_memory = max(
        app.peak_execution_memory, int(metrics.get("Peak Execution Memory", 0))
    )


def add_peaks(app: AppSummary, metrics: dict[str, Any]) -> None:
    """Keep the peak of each executor memory metric (over stages and executors)."""
    for name in PEAK_METRICS:
        if name in metrics:
            app.peaks[name] = max(app.peaks.get(name, 0), int(metrics[name]))


def log_events(entry: Path) -> Iterator[dict[str, Any]]:
    """One application's events: a single file, or a rolling log's folder of ``events_*`` parts."""
    if entry.is_file():
        yield from read_events(entry)
        return
    parts = [p for p in entry.glob("events_*") if p.is_file()]
    for part in sorted(parts, key=lambda p: int(p.name.split("_")[1])):  # events_<n>_<app id>
        yield from read_events(part)


def summarise_logs(folder: Path) -> list[AppSummary]:
    """Every application logged in ``folder``, by application id (the order they started in)."""
    found = [summarise(log_events(entry)) for entry in folder.iterdir()]
    return sorted((app for app in found if app.app_id), key=lambda app: app.app_id)

"""Spark event logs summed per application: rows, shuffle, spill, failed tasks, memory peaks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rankflow.monitoring.spark_events import summarise_logs


def task_end(
    records: int, shuffle: int, spilled: int, peak: int, ok: bool = True
) -> dict[str, Any]:
    """A task-end event shaped as Spark 4 writes it (the fields the summary reads)."""
    return {
        "Event": "SparkListenerTaskEnd",
        "Task End Reason": {"Reason": "Success" if ok else "ExceptionFailure"},
        "Task Metrics": {
            "Peak Execution Memory": peak,
            "Memory Bytes Spilled": spilled,
            "Disk Bytes Spilled": spilled // 4,
            "Shuffle Read Metrics": {"Remote Bytes Read": 0, "Local Bytes Read": shuffle // 2},
            "Shuffle Write Metrics": {"Shuffle Bytes Written": shuffle},
            "Input Metrics": {"Bytes Read": 10 * records, "Records Read": records},
            "Output Metrics": {"Bytes Written": records, "Records Written": records // 2},
        },
    }


def memory(heap: int, python_rss: int) -> dict[str, int]:
    """Executor metrics with a heap and a Python resident size."""
    return {"JVMHeapMemory": heap, "ProcessTreePythonRSSMemory": python_rss, "MinorGCCount": 3}


def write_log(path: Path, events: list[dict[str, Any]]) -> None:
    """Write events one JSON object a line, as Spark does."""
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_a_rolling_log_and_a_single_file_are_summed_per_application(tmp_path: Path) -> None:
    start = {"Event": "SparkListenerApplicationStart", "App Name": "rankflow-score"}
    rolling = tmp_path / "eventlog_v2_local-2"
    rolling.mkdir()
    (rolling / "appstatus_local-2").write_text("")
    write_log(
        rolling / "events_1_local-2",
        [
            {**start, "App ID": "local-2", "Timestamp": 1_000},
            task_end(100, 4_000, 0, 50),
            {
                "Event": "SparkListenerStageExecutorMetrics",
                "Executor ID": "driver",
                "Executor Metrics": memory(700, 90),
            },
        ],
    )
    write_log(
        rolling / "events_2_local-2",
        [
            task_end(300, 6_000, 800, 70, ok=False),
            {
                "Event": "SparkListenerExecutorMetricsUpdate",
                "Executor ID": "driver",
                "Executor Metrics Updated": [
                    {"Stage ID": -1, "Executor Metrics": memory(500, 120)}
                ],
            },
            {"Event": "SparkListenerApplicationEnd", "Timestamp": 13_500},
        ],
    )
    other = tmp_path / "local-1"
    write_log(other, [{**start, "App Name": "rankflow-ingest", "App ID": "local-1"}])
    with other.open("a") as log:
        log.write('{"Event": "SparkListenerTaskEnd", "Task Metr')  # cut short by a crash
    first, second = summarise_logs(tmp_path)
    assert (first.name, first.tasks) == ("rankflow-ingest", 0)
    assert second.name == "rankflow-score"
    assert second.seconds == 12.5
    assert (second.tasks, second.failed_tasks) == (2, 1)
    assert (second.records_read, second.records_written) == (400, 200)
    assert second.shuffle_bytes_written == 10_000
    assert second.shuffle_bytes_read == 5_000
    assert (second.memory_bytes_spilled, second.disk_bytes_spilled) == (800, 200)
    assert second.peak_execution_memory == 70
    assert second.peaks == {"JVMHeapMemory": 700, "ProcessTreePythonRSSMemory": 120}
    assert second.as_dict()["executors"] == ["driver"]

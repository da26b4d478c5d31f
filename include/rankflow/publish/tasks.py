"""Spark tasks over a list of files: dealt by cost, one task per core, no shuffle.

Publishers read the lake's files with pyarrow on the executors (no row through the JVM); the
driver only deals the files to tasks and collects one acknowledgement row per file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

Unit = TypeVar("Unit")
TaskFunction = Callable[[Iterator["pa.RecordBatch"]], Iterator["pa.RecordBatch"]]


def deal(units: Sequence[Unit], slots: int, size: Callable[[Unit], float]) -> list[list[Unit]]:
    """Units dealt to at most ``slots`` tasks, largest first to the least loaded task."""
    tasks: list[list[Unit]] = [[] for _ in range(max(slots, 1))]
    loads = [0.0] * len(tasks)
    for unit in sorted(units, key=size, reverse=True):
        least = loads.index(min(loads))
        tasks[least].append(unit)
        loads[least] += max(size(unit), 1)
    return [task for task in tasks if task]


def run_tasks(
    spark: SparkSession, tasks: list[Any], function: TaskFunction, schema: str
) -> list[Any]:
    """Run ``function`` once per task (it gets the task's index as ``id``); collect its rows.

    ``range`` with one id per partition starts every task in one stage: no shuffle, and no
    two tasks' work left to one core (a round-robin ``repartition`` of a few rows may do that).
    """
    if not tasks:
        return []
    ids = spark.range(0, len(tasks), 1, len(tasks))  # one id, so one task, per partition
    return ids.mapInArrow(function, schema).collect()

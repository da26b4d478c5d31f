"""Task progress for a watcher: one JSON line per task instance that finishes, when asked for.

An Airflow listener. When ``RANKFLOW_PROGRESS_FILE`` names a file in the environment of the
process that runs the tasks, every task that ran appends ``{"task", "map_index", "state",
"seconds"}`` to it as it ends (success, skipped, failed, up for retry), and the DAG run appends
``{"dag_run", "state"}`` when it ends; without the variable it does nothing, so the scheduler and
its workers are unaffected. ``rankflow demo`` sets it for its
``airflow dags test`` run and prints one line per task from the file
(:func:`rankflow.ops.progress.follow`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

PROGRESS_FILE_VAR = "RANKFLOW_PROGRESS_FILE"
_started: dict[tuple[str, int], float] = {}  # task instance -> monotonic start, in this process


def _key(task_instance: Any) -> tuple[str, int]:
    """The task instance's task id and map index (-1 when not mapped)."""
    map_index = getattr(task_instance, "map_index", None)
    return str(task_instance.task_id), -1 if map_index is None else int(map_index)


def _append(line: dict[str, Any]) -> None:
    """Append one line to the progress file, if one is asked for."""
    path = os.environ.get(PROGRESS_FILE_VAR)
    if path:
        with open(path, "a", encoding="utf-8") as progress:
            progress.write(json.dumps(line) + "\n")


def _report(task_instance: Any, state: str) -> None:
    """Report a finished task instance with the seconds since it started running."""
    task, map_index = _key(task_instance)
    began = _started.pop((task, map_index), None)
    seconds = None if began is None else round(time.monotonic() - began, 1)
    _append({"task": task, "map_index": map_index, "state": state, "seconds": seconds})


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    """Remember when the task started."""
    _started[_key(task_instance)] = time.monotonic()


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    """Report a task that succeeded."""
    _report(task_instance, "success")


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    """Report a task that skipped itself (e.g. a promotion the gate rejected)."""
    _report(task_instance, "skipped")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    """Report a task that failed (its retry, if any, reports again)."""
    state = getattr(task_instance, "state", None) or "failed"
    _report(task_instance, str(getattr(state, "value", state)))  # "up_for_retry" or "failed"


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    """Report the run's end (the watcher stops here)."""
    _append({"dag_run": str(dag_run.run_id), "state": "success"})


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    """Report the run's failure."""
    _append({"dag_run": str(dag_run.run_id), "state": "failed"})


class RankflowProgressPlugin(AirflowPlugin):
    """Registers this module as a task-instance listener."""

    name = "rankflow_progress"
    listeners = [sys.modules[__name__]]  # noqa: RUF012 (Airflow's plugin attribute)

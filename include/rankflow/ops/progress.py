"""What a person sees while a long command runs: bars, one line per DAG task, logs kept aside.

Third-party output (Ivy's resolution chatter, Great Expectations' INFO lines, Airflow's task logs)
goes to a log file; the terminal gets a bar per stage and one line per finished DAG task with its
key figure, read from the task's run record. ``--verbose`` sends everything to the terminal too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import IO, Any

from rankflow.config import Settings
from rankflow.runs import run_record_path

BAR_WIDTH = 30


class Bar:
    """A one-line progress bar, redrawn in place on a terminal and printed once elsewhere."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stdout
        self.began = time.monotonic()
        self.interactive = self.stream.isatty()

    def update(self, done: int, total: int, unit: str = "") -> None:
        """Redraw the bar at ``done`` of ``total`` (only on a terminal)."""
        if self.interactive:
            self.stream.write("\r" + self.render(done, total, unit))
            self.stream.flush()

    def render(self, done: int, total: int, unit: str = "") -> str:
        """The bar's text: label, bar, count and elapsed seconds."""
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        seconds = time.monotonic() - self.began
        return f"{self.label:<14} [{bar}] {done}/{total} {unit} {seconds:4.0f}s".rstrip()

    def finish(self, text: str) -> None:
        """End the bar's line with what the stage produced."""
        if self.interactive:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"{self.label:<14} {text}\n")
        self.stream.flush()


def run_logged(
    command: Sequence[str],
    log: IO[str],
    *,
    verbose: bool,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    while_running: Callable[[], None] | None = None,
) -> int:
    """Run a command with its output in the log (and on the terminal when verbose); its status.

    ``while_running`` is called about twice a second until the command ends, and once after.
    """
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    process = subprocess.Popen(
        list(command),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE if verbose else log,
        stderr=subprocess.STDOUT,
        text=verbose,
    )
    copier = None
    if verbose:
        copier = threading.Thread(target=_tee, args=(process, log), daemon=True)
        copier.start()
    while process.poll() is None:
        if while_running is not None:
            while_running()
        time.sleep(0.5)
    if copier is not None:
        copier.join()
    if while_running is not None:
        while_running()
    return process.returncode


def _tee(process: subprocess.Popen[str], log: IO[str]) -> None:
    """Copy a child's output to the log and to the terminal, line by line."""
    assert process.stdout is not None
    for line in process.stdout:
        log.write(line)
        sys.stdout.write(line)
    log.flush()


class TaskLines:
    """Prints one line per DAG task from the progress file the Airflow listener appends to."""

    def __init__(
        self, settings: Settings, ds: date, surface: str, path: Path, stream: IO[str] | None = None
    ) -> None:
        self.settings = settings
        self.ds = ds
        self.surface = surface
        self.path = path
        self.stream = stream or sys.stdout
        self.offset = 0
        self.run_state: str | None = None  # the DAG run's, once it ended

    def poll(self) -> None:
        """Print a line for every task that finished since the last poll."""
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as progress:
            progress.seek(self.offset)
            text = progress.read()
        complete = text[: text.rfind("\n") + 1]  # a line still being written waits
        self.offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            event = json.loads(line)
            if "dag_run" in event:
                self.run_state = event["state"]
                continue
            self.stream.write(task_line(self.settings, self.ds, self.surface, event) + "\n")
        self.stream.flush()


def task_line(settings: Settings, ds: date, surface: str, event: dict[str, Any]) -> str:
    """One finished task: its id, state, seconds and key figure (from its run record)."""
    seconds = event.get("seconds")
    took = "" if seconds is None else f"{seconds:6.1f}s"
    figure = key_figure(settings, ds, surface, event["task"]) if event["state"] == "success" else ""
    return f"  {event['task']:<20} {event['state']:<12} {took:>7}  {figure}".rstrip()


def _record(settings: Settings, ds: date, name: str) -> dict[str, Any] | None:
    """A step's run record, or None when it wrote none."""
    path = run_record_path(settings, ds, name)
    return json.loads(path.read_text()) if path.exists() else None


def key_figure(settings: Settings, ds: date, surface: str, task: str) -> str:
    """The figure that says what a nightly task did (empty when its record has none)."""
    names = {
        "candidates": "candidates",
        "train": "train",
        "evaluate": "evaluation",
        "score": f"score-{surface}",
        "publish_s3": f"publish-s3-{surface}",
        "publish_redis": f"publish-redis-{surface}",
        "monitor": f"monitor-{surface}",
    }
    record = _record(settings, ds, names[task]) if task in names else None
    if record is None:
        return ""
    if task == "train":
        return (
            f"{record.get('train_rows', 0):,} training rows, model v{record.get('model_version')}"
        )
    if task == "evaluate":
        gate = record["gate"]
        verdict = "promoted" if gate["promote"] else "rejected"
        return f"{gate['metric']} {gate['challenger']:.4f} on {record['rows']:,} rows, {verdict}"
    if task == "publish_redis":
        return f"{record['users']:,} users, version {record['version']}"
    if task == "monitor":
        return f"{record['figures']} figures, {len(record['breaches'])} breached"
    if "users" in record:
        return f"{record['users']:,} users"
    return ""

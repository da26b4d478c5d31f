"""The run records every step leaves under ``runs/ds=<day>/``: one place lays out that folder."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from rankflow.config import Settings


def run_record_path(settings: Settings, ds: date, name: str) -> Path:
    """Return where a step of the run for ``ds`` records its small JSON result."""
    return settings.paths.home / "runs" / f"ds={ds.isoformat()}" / f"{name}.json"


def write_run_record(settings: Settings, ds: date, name: str, record: dict[str, Any]) -> Path:
    """Atomically write a step's JSON result (read by later steps and the demo)."""
    path = run_record_path(settings, ds, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def read_run_record(settings: Settings, ds: date, name: str) -> dict[str, Any]:
    """Read a step's JSON result, with a clear error when the step has not run."""
    path = run_record_path(settings, ds, name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the '{name}' step for {ds} first")
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def results_dir(settings: Settings, ds: date) -> Path:
    """Return where the validation results of one day are kept."""
    return settings.paths.home / "runs" / f"ds={ds.isoformat()}" / "quality"


def repairs_log(settings: Settings, surface: str) -> Path:
    """Return the JSON Lines history of a surface's repairs (one line per repair)."""
    return settings.paths.home / "runs" / "repairs" / f"{surface}.jsonl"

"""What a trained model was built from: code version, dependency lock, data versions."""

from __future__ import annotations

import hashlib
import os
import subprocess
from typing import Any

from rankflow.config import Settings, repo_root
from rankflow.features.registry import schema_hash
from rankflow.model.fit import FittedRanker, TrainingWindow, model_bytes


def code_version() -> str:
    """Return the git commit of the code (``RANKFLOW_CODE_VERSION`` wins), marked if dirty."""
    if os.environ.get("RANKFLOW_CODE_VERSION"):
        return os.environ["RANKFLOW_CODE_VERSION"]
    root = repo_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def lock_hash() -> str:
    """SHA-256 (16 hex) of ``requirements.lock``: the exact dependency set, for the lineage."""
    lock = repo_root() / "requirements.lock"
    if not lock.exists():
        return "missing"
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:16]


def lineage_of(
    settings: Settings,
    fitted: FittedRanker,
    table_versions: dict[str, int],
    window: TrainingWindow,
    train_rows: int,
    validation_rows: int,
) -> dict[str, Any]:
    """Everything needed to rebuild a model byte for byte, and to say how it was made."""
    import platform

    import xgboost as xgb

    return {
        "code_version": code_version(),
        "config_hash": settings.pipeline_hash,
        "config_version": settings.pipeline["version"],
        "training_config": settings.pipeline["training"],
        "requirements_lock_hash": lock_hash(),
        "xgboost_version": xgb.__version__,
        "python_version": platform.python_version(),
        "feature_schema_hash": schema_hash(),
        "table_versions": table_versions,
        "window": {k: v.isoformat() for k, v in vars(window).items()},
        "train_rows": train_rows,
        "validation_rows": validation_rows,
        "best_iteration": fitted.best_iteration,
        "model_sha256": hashlib.sha256(model_bytes(fitted.booster)).hexdigest(),
    }

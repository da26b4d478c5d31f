"""Settings for the Spark tests (the one local Spark session is in tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rankflow.config import Settings, load_settings


@pytest.fixture
def lake_settings(tmp_path: Path) -> Settings:
    """Settings whose raw drops and lake live in this test's own folder."""
    env = {
        **os.environ,
        "RANKFLOW_HOME": str(tmp_path / "home"),
        "RANKFLOW_SHUFFLE_PARTITIONS": "2",
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # mlflow.set_tracking_uri exports it to the process
    return load_settings(env)

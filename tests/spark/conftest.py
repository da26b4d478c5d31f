"""One local Spark session with Delta Lake for every Spark test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rankflow.config import Settings, load_settings


@pytest.fixture(scope="session")
def spark_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spark-home")


@pytest.fixture(scope="session")
def spark(spark_home: Path) -> Iterator[object]:
    from rankflow.lake.session import get_session

    env = {**os.environ, "RANKFLOW_HOME": str(spark_home), "RANKFLOW_SPARK_MASTER": "local[2]"}
    env["RANKFLOW_SHUFFLE_PARTITIONS"] = "2"
    session = get_session(load_settings(env), "rankflow-tests")
    yield session
    session.stop()


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

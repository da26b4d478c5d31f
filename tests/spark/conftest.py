"""Settings for the Spark tests (the one local Spark session is in tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rankflow.config import Settings, load_settings
from tiny_lake import ACTIVE_USER_DAYS, SNAPSHOT_PARTITIONS, TINY_DAY, TINY_START, set_conf


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


@pytest.fixture(scope="session")
def lake(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a home holding 5 tiny simulated days, ingested into bronze (one per session)."""
    from rankflow.sim.marketplace import GeneratorConfig, generate_marketplace
    from rankflow.steps.ingest import run_ingest

    # Delta replays its log with 50 tasks by default: far too many for tables this small
    previous = spark.conf.get(SNAPSHOT_PARTITIONS, None)
    spark.conf.set(SNAPSHOT_PARTITIONS, "2")
    home = tmp_path_factory.mktemp("tiny-home")
    settings = load_settings({**os.environ, "RANKFLOW_HOME": str(home)})
    candidates = {**settings.pipeline["candidates"], "active_user_days": ACTIVE_USER_DAYS}
    settings = replace(settings, pipeline={**settings.pipeline, "candidates": candidates})
    generate_marketplace(GeneratorConfig.preset("tiny", days=5), settings.paths.raw)
    run_ingest(spark, settings, TINY_START, TINY_DAY)
    yield settings
    set_conf(spark, SNAPSHOT_PARTITIONS, previous)


@pytest.fixture(scope="session")
def feature_versions(spark: Any, lake: Settings) -> dict[str, int]:
    """Run the features step for the tiny day once; return each face's Delta version."""
    from rankflow.lake.tables import FEATURE_TABLES, table_version
    from rankflow.steps.features import run_features

    run_features(spark, lake, TINY_DAY)
    return {face: table_version(spark, lake.paths.table(t)) for face, t in FEATURE_TABLES.items()}

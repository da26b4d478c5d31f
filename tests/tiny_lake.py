"""The tiny simulated marketplace the Spark tests share (fixtures in tests/spark/conftest.py)."""

from __future__ import annotations

from datetime import date
from typing import Any

TINY_START = date(2026, 10, 1)  # the tiny preset's first day
TINY_DAY = date(2026, 10, 5)  # its last day: the day featurised, scored and materialised
SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"
# 5 days of data cannot tell a 28-day activity window from "ever": 2 days leaves some users out
ACTIVE_USER_DAYS = 2


def set_conf(spark: Any, key: str, value: str | None) -> None:
    """Set a Spark conf, or unset it for ``None`` (restores what a test changed)."""
    if value is None:
        spark.conf.unset(key)
    else:
        spark.conf.set(key, value)

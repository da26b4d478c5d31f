"""Step ``training_set``: labelled impressions joined with their features as of the day before."""

from __future__ import annotations

import argparse
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.days import days, in_days
from rankflow.lake.tables import bronze, read_table

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_training_set(
    spark: SparkSession, settings: Settings, start: date, end: date
) -> dict[str, int]:
    """Build the labelled training rows of each day in ``[start, end]``."""
    from rankflow.days import days_where
    from rankflow.lake.tables import replace_partition
    from rankflow.transforms.training_set import build_training_set

    events, items, users = bronze(spark, settings)
    path = settings.paths.table("silver/training_set")
    built = build_training_set(events, items, users, days(start, end), settings.pipeline)
    # a table from before the stream features gains their columns (null in its older days)
    replace_partition(built, path, days_where(start, end), options={"mergeSchema": "true"})
    written = read_table(spark, settings, "silver/training_set").where(in_days(start, end))
    return {
        row["ds"].isoformat(): int(row["count"]) for row in written.groupBy("ds").count().collect()
    }


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``training_set`` step for a job's parsed arguments (``jobs/training_set.py``)."""
    return run_training_set(spark, settings, args.start or args.ds, args.ds)

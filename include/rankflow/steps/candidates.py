"""Step ``candidates``: candidate items per active user as of ``ds``."""

from __future__ import annotations

import argparse
from datetime import date
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from rankflow.config import Settings
from rankflow.days import day
from rankflow.lake.tables import read_features, read_partition

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_candidates(spark: SparkSession, settings: Settings, ds: date) -> dict[str, int]:
    """Generate the candidates of every active user as of ``ds``."""
    from rankflow.lake.tables import write_partition
    from rankflow.runs import write_run_record
    from rankflow.transforms.candidates import generate_candidates

    candidates = generate_candidates(
        read_features(spark, settings, ds), ds, settings.pipeline["candidates"]
    )
    path = settings.paths.table("silver/candidates")
    write_partition(candidates.withColumn("ds", day(ds)), path, ds)
    written = read_partition(spark, settings, "silver/candidates", ds)
    stats = written.agg(
        F.count("*").alias("rows"), F.countDistinct("user_id").alias("users")
    ).first()
    record = {"rows": int(stats["rows"]), "users": int(stats["users"])} if stats else {}
    write_run_record(settings, ds, "candidates", record)
    return record


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``candidates`` step for a job's parsed arguments (``jobs/candidates.py``)."""
    return run_candidates(spark, settings, args.ds)

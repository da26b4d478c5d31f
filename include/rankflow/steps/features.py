"""Step ``features``: item and user features as of ``ds`` to silver Delta."""

from __future__ import annotations

import argparse
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.lake.tables import FEATURE_TABLES, bronze, read_partition

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_features(spark: SparkSession, settings: Settings, ds: date) -> dict[str, int]:
    """Compute the features as of the end of ``ds`` and write the three silver tables."""
    from pyspark import StorageLevel

    from rankflow.features.batch import build_features
    from rankflow.lake.tables import write_features
    from rankflow.quality.gates import gate
    from rankflow.quality.suites import feature_suite
    from rankflow.runs import write_run_record

    events, items, users = bronze(spark, settings)
    frames = build_features(events, items, users, [ds], settings.pipeline)
    max_null_share = float(settings.pipeline["quality"]["max_null_share"])
    built = {
        face: getattr(frames, face).withColumnRenamed("as_of", "ds") for face in FEATURE_TABLES
    }
    # the validated faces are read twice (gate, then write): compute them once
    validated = ("items", "users")
    for face in validated:
        built[face] = built[face].persist(StorageLevel.MEMORY_AND_DISK)
    try:
        for face in validated:
            suite = feature_suite(face, ds, max_null_share)
            gate(settings, ds, built[face], f"{face}_features", suite)
        versions = write_features(built, settings, ds)
        counts = {
            face: read_partition(spark, settings, table, ds).count()
            for face, table in FEATURE_TABLES.items()
        }
    finally:
        for face in validated:
            built[face].unpersist()
    # the commits materialise_features publishes (a later write would be another version)
    write_run_record(settings, ds, "features", {"rows": counts, "delta_versions": versions})
    return counts


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``features`` step for a job's parsed arguments (``jobs/features.py``)."""
    return run_features(spark, settings, args.ds)

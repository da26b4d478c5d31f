"""Step ``publish_s3``: export the gold lists of ``ds`` to S3, manifest last."""

from __future__ import annotations

import argparse
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.lake.ledger import record_event
from rankflow.lake.tables import read_ranked
from rankflow.store.keys import publication_version

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_publish_s3(
    spark: SparkSession, settings: Settings, ds: date, surface: str, run_id: str
) -> dict[str, Any]:
    """Export the gold lists of ``ds`` to S3 (parts, then manifest, then pointer).

    Safe to retry after a crash at any point: a complete export is kept and pointed at again
    (:func:`~rankflow.publish.s3.export_rankings`), the ledger event is recorded once, and the
    run record is written last.
    """
    from dataclasses import asdict

    from rankflow.lake.gold import GoldSnapshot, check_unchanged
    from rankflow.publish.s3 import export_rankings
    from rankflow.runs import read_run_record, write_run_record

    scored = read_run_record(settings, ds, f"score-{surface}")
    check_unchanged(GoldSnapshot.from_record(scored["gold"]), ds, surface)
    version = publication_version(scored, run_id)
    ranked = read_ranked(spark, settings, ds, surface).select("user_id", "item_ids", "scores")
    meta = {"model_version": scored["model_version"], "top_k": scored["top_k"]}
    started = time.monotonic()
    result = asdict(export_rankings(ranked, settings.s3, surface, ds, version, meta))
    result["seconds"] = round(time.monotonic() - started, 3)
    record_event(
        spark,
        settings,
        "publish_s3",
        ds=ds,
        surface=surface,
        model_version=str(scored["model_version"]),
        airflow_run_id=run_id,
        redis_version=version,
        s3_prefix=f"s3://{settings.s3.bucket}/{result['prefix']}",
    )
    write_run_record(settings, ds, f"publish-s3-{surface}", result)  # last: the step is done
    return result


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``publish_s3`` step for a job's parsed arguments (``jobs/publish_s3.py``)."""
    return run_publish_s3(
        spark, settings, args.ds, args.surface or settings.default_surface, args.run_id
    )

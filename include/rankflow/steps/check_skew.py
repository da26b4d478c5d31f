"""Step ``check_skew``: replay the sampled answers the ranking service logged on ``ds``."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.runs import write_run_record

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_check_skew(spark: SparkSession, settings: Settings, ds: date) -> dict[str, Any]:
    """Rebuild the served model inputs offline, re-score them, record the figures for monitor."""
    from rankflow.lake.tables import read_partition, table_exists
    from rankflow.monitoring.skew import SkewReport, check_skew
    from rankflow.stream.drain import SERVED_TABLE

    started = time.monotonic()
    refusals = day_refusals(settings, ds)
    if table_exists(spark, settings.paths.table(SERVED_TABLE)):
        report = check_skew(spark, settings, read_partition(spark, settings, SERVED_TABLE, ds))
    else:  # no service has ever logged an answer
        report = SkewReport()
    record = {
        "ds": ds.isoformat(),
        **asdict(report),
        "model_refusals": refusals,
        "seconds": round(time.monotonic() - started, 3),
    }
    write_run_record(settings, ds, "skew-check", record)
    return record


def day_refusals(settings: Settings, ds: date) -> list[dict[str, str]]:
    """The models ranking services refused on ``ds`` (their refusals log)."""
    from datetime import timedelta

    from rankflow.serving.log import refusals_between
    from rankflow.store.client import checked_client
    from rankflow.store.keys import refusals_log_key
    from rankflow.stream.drain import day_start_ms

    client = checked_client(settings.redis.url, "The skew check did not run.")
    try:
        return refusals_between(
            client,
            refusals_log_key(settings.redis.key_prefix),
            day_start_ms(ds),
            day_start_ms(ds + timedelta(days=1)),
        )
    finally:
        client.close()


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``check_skew`` step (``jobs/check_skew.py``)."""
    return run_check_skew(spark, settings, args.ds)

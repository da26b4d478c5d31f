"""Step ``drain_served``: the serving log of ``ds`` from its Redis stream into ``bronze/served``."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from rankflow.config import Settings
from rankflow.days import day
from rankflow.runs import write_run_record

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_drain_served(spark: SparkSession, settings: Settings, ds: date) -> dict[str, Any]:
    """Replace the day's partition with the stream's entries of ``ds``, then trim the stream.

    Safe to retry: the stream keeps ``serving.log_retention_days`` days, and a day the stream
    no longer holds whole keeps the partition an earlier run wrote.
    """
    from pyspark import StorageLevel

    from rankflow.days import days_where
    from rankflow.lake.tables import read_partition, replace_partition, table_exists
    from rankflow.store.client import checked_client
    from rankflow.store.keys import served_log_key
    from rankflow.stream.drain import (
        QUARANTINE_TABLE,
        SERVED_TABLE,
        day_start_ms,
        served_frame,
        stream_state,
        trim_before,
    )

    started = time.monotonic()
    config = settings.pipeline["serving"]
    stream = served_log_key(settings.redis.key_prefix)
    client = checked_client(settings.redis.url, "The serving log was not drained.")
    state = stream_state(client, stream)
    path = settings.paths.table(SERVED_TABLE)
    record: dict[str, Any] = {"ds": ds.isoformat(), "stream": stream}
    trimmed_into_day = state.max_deleted_ms >= day_start_ms(ds)
    if trimmed_into_day and table_exists(spark, path):
        kept = read_partition(spark, settings, SERVED_TABLE, ds).count()
        if kept:
            record |= {"status": "kept", "rows": kept, "seconds": time.monotonic() - started}
            write_run_record(settings, ds, "drain-served", record)
            return record
    entries = served_frame(spark, settings.redis.url, stream, ds, int(config["log_slices"]))
    entries = entries.withColumn("ds", day(ds)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        good = entries.where(F.col("error").isNull()).drop("error", "payload")
        bad = entries.where(F.col("error").isNotNull()).select("stream_id", "ts", "error",
                                                                "payload", "ds")  # fmt: skip
        # a table drained before the log recorded stream cutoffs gains the column (null there)
        replace_partition(good, path, days_where(ds), options={"mergeSchema": "true"})
        replace_partition(bad, settings.paths.table(QUARANTINE_TABLE), days_where(ds))
        counts = entries.agg(
            F.count(F.when(F.col("error").isNull(), 1)).alias("rows"),
            F.count(F.when(F.col("error").isNotNull(), 1)).alias("quarantined"),
            F.count(F.when(F.col("inputs").isNotNull(), 1)).alias("sampled"),
            F.count(F.when(F.col("fallback"), 1)).alias("fallbacks"),
        ).first()
    finally:
        entries.unpersist()
    day_over = datetime.now(UTC) >= datetime(ds.year, ds.month, ds.day, tzinfo=UTC) + timedelta(
        days=1
    )
    trimmed = trim_before(client, stream, ds, int(config["log_retention_days"]))
    record |= {
        "status": "drained",
        **(counts.asDict() if counts is not None else {}),
        # entries of the day a MAXLEN trim deleted before they were drained
        "incomplete": trimmed_into_day,
        "day_over": day_over,
        "trimmed_entries": trimmed,
        "stream_length": stream_state(client, stream).length,
        "seconds": round(time.monotonic() - started, 3),
    }
    client.close()
    write_run_record(settings, ds, "drain-served", record)
    return record


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``drain_served`` step (``jobs/drain_served.py``)."""
    return run_drain_served(spark, settings, args.ds)

"""Step ``ingest``: raw drops of a day (or a range) to bronze Delta, malformed rows quarantined."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from pyspark.sql import Window
from pyspark.sql import functions as F

from rankflow.config import Settings
from rankflow.days import days_where
from rankflow.lake.tables import replace_partition
from rankflow.quality.raw import raw_day_path
from rankflow.transforms.bronze import (
    IngestError,
    MalformedShareError,
    accepted_rows,
    parse_lines,
    quarantined_rows,
    validate,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class IngestStats:
    """Counts of one kind of drop for one day."""

    kind: str
    ds: str
    rows: int
    accepted: int
    quarantined: int

    @property
    def quarantine_share(self) -> float:
        """Share of the day's rows that went to quarantine."""
        return self.quarantined / self.rows if self.rows else 0.0


def read_raw_lines(
    spark: SparkSession, settings: Settings, kind: str, start: date, end: date
) -> DataFrame:
    """Read the non-blank lines of complete drops in ``[start, end]``, with their ``ds``."""
    folders = []
    for offset in range((end - start).days + 1):
        folder = raw_day_path(settings, kind, start + timedelta(days=offset))
        if not (folder / "_SUCCESS").exists():
            raise IngestError(
                f"the {kind} drop for {folder.name[3:]} is not complete: {folder}/_SUCCESS is "
                "missing (land the day's files, then the _SUCCESS marker, and retry)"
            )
        folders.append(str(folder / "*.jsonl*"))
    day = F.regexp_extract(F.col("_metadata.file_path"), r"ds=(\d{4}-\d{2}-\d{2})", 1)
    return (
        spark.read.text(folders)
        .where(F.length(F.trim("value")) > 0)
        .select("value", day.cast("date").alias("ds"))
    )


def ingest_range(
    spark: SparkSession, settings: Settings, kind: str, start: date, end: date
) -> list[IngestStats]:
    """Ingest the drops of one kind for ``[start, end]`` in one pass; quarantine first, then check.

    Raises:
        IngestError: a drop is incomplete, or a day's malformed share exceeds the limit (bronze
            is then left as it was for the whole range).
    """
    from rankflow.lake.tables import write_partitions

    lines = read_raw_lines(spark, settings, kind, start, end)
    max_line_bytes = int(settings.pipeline["ingest"]["max_line_bytes"])
    validated = validate(parse_lines(lines, kind), kind, max_line_bytes)
    validated = validated.cache()
    counts = validated.groupBy("ds").agg(
        F.count("*").alias("rows"), F.count("reason").alias("quarantined")
    )
    stats = [
        IngestStats(
            kind,
            row["ds"].isoformat(),
            row["rows"],
            row["rows"] - row["quarantined"],
            row["quarantined"],
        )
        for row in counts.orderBy("ds").collect()
    ]
    quarantine_path = settings.paths.table("bronze/quarantine")
    replace_partition(
        quarantined_rows(validated, kind),
        quarantine_path,
        f"{days_where(start, end)} AND source = '{kind}'",
        ["ds", "source"],
    )
    limit = float(settings.pipeline["ingest"]["max_quarantine_share"])
    if kind == "events":
        try:
            raw_events_gate(spark, settings, validated, stats, start, end)
        except Exception:
            validated.unpersist()
            raise
    failed = [s for s in stats if s.quarantine_share > limit]
    if failed:
        validated.unpersist()
        worst = max(failed, key=lambda s: s.quarantine_share)
        raise MalformedShareError(
            f"{worst.quarantined} of {worst.rows} {kind} rows for {worst.ds} are malformed "
            f"({worst.quarantine_share:.1%} > limit {limit:.1%}); bronze was not updated for "
            f"{start}..{end}. Inspect them in {quarantine_path} (ds={worst.ds}, source={kind}) "
            "and fix the drop."
        )
    write_partitions(
        accepted_rows(validated, kind), settings.paths.table(f"bronze/{kind}"), start, end
    )
    validated.unpersist()
    return stats


def recent_event_counts(
    spark: SparkSession, settings: Settings, start: date, window: int
) -> dict[date, int]:
    """Return bronze's accepted event rows per day for the ``window`` days before ``start``."""
    from rankflow.lake.tables import table_exists

    path = settings.paths.table("bronze/events")
    if not table_exists(spark, path):
        return {}
    first = start - timedelta(days=window)
    counts = (
        spark.read.format("delta")
        .load(path)
        .where(F.col("ds").between(F.lit(first).cast("date"), F.lit(start - timedelta(days=1))))
        .groupBy("ds")
        .count()
        .collect()
    )
    return {row["ds"]: int(row["count"]) for row in counts}


def raw_events_gate(
    spark: SparkSession,
    settings: Settings,
    validated: DataFrame,
    stats: list[IngestStats],
    start: date,
    end: date,
) -> None:
    """Run the raw-events data-quality gate on the parsed drops of ``[start, end]``.

    Raises:
        DataQualityError: a critical check failed; bronze is left as it was.
    """
    from rankflow.quality.gates import gate
    from rankflow.quality.suites import raw_events_suite, row_count_outcomes

    quality = settings.pipeline["quality"]
    row_count = quality["row_count"]
    window = int(row_count["window_days"])
    counts = recent_event_counts(spark, settings, start, window)
    counts.update({date.fromisoformat(s.ds): s.accepted for s in stats})
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    extra = row_count_outcomes(
        counts, days, float(row_count["low_ratio"]), float(row_count["high_ratio"]), window
    )
    impression = Window.partitionBy("ds", "event_type", "session_id", "item_id", "position")
    frame = (
        validated.drop("reason")
        .withColumn(
            "seconds_into_day",
            F.col("ts").cast("long") - F.col("ds").cast("timestamp").cast("long"),
        )
        .withColumn(
            "impression_copies",
            F.when(
                F.col("event_type") == "impression",
                F.size(F.collect_set("event_id").over(impression)),
            ),
        )
    )
    mostly = 1.0 - float(settings.pipeline["ingest"]["max_quarantine_share"])
    gate(settings, end, frame, "raw_events", raw_events_suite(mostly), extra)


def run_ingest(
    spark: SparkSession, settings: Settings, start: date, end: date
) -> list[dict[str, Any]]:
    """Ingest every raw drop kind for each day in ``[start, end]``."""
    from dataclasses import asdict

    from rankflow.quality.raw import RAW_KINDS

    results = []
    for kind in RAW_KINDS:
        for stats in ingest_range(spark, settings, kind, start, end):
            results.append({**asdict(stats), "quarantine_share": stats.quarantine_share})
    return results


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``ingest`` step for a job's parsed arguments (``jobs/ingest.py``)."""
    return run_ingest(spark, settings, args.start or args.ds, args.ds)

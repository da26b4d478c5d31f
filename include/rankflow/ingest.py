"""Raw drops (JSON Lines, docs/raw-format.md) -> bronze Delta tables, with a quarantine.

Every line is parsed against an explicit schema and checked; a line that fails any rule goes to
``bronze/quarantine`` with the first failing reason and its original text, never silently away.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from rankflow.config import Settings
from rankflow.quality import DataQualityError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

RAW_KINDS = ("users", "items", "events")
EVENT_TYPES = ("impression", "click", "like", "save", "add_to_bag", "purchase")
MAX_ID = 2**32 - 1
CORRUPT = "_corrupt_record"


class IngestError(RuntimeError):
    """A raw drop cannot be ingested (missing, or too many malformed rows)."""


class MalformedShareError(IngestError, DataQualityError):
    """Too many of a day's rows are malformed: a data-quality block, not worth a retry."""


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


def raw_schema(kind: str) -> StructType:
    """Return the explicit raw schema of a drop kind (plus the corrupt-record column)."""
    from pyspark.sql import types as T

    fields = {
        "users": [
            T.StructField("user_id", T.LongType()),
            T.StructField("signup_ts", T.TimestampType()),
            T.StructField("country", T.StringType()),
            T.StructField("size", T.StringType()),
        ],
        "items": [
            T.StructField("item_id", T.LongType()),
            T.StructField("seller_id", T.LongType()),
            T.StructField("listed_ts", T.TimestampType()),
            T.StructField("category", T.StringType()),
            T.StructField("brand", T.StringType()),
            T.StructField("style", T.StringType()),
            T.StructField("size", T.StringType()),
            T.StructField("condition", T.StringType()),
            T.StructField("price", T.DoubleType()),
            T.StructField("seller_rating", T.DoubleType()),
        ],
        "events": [
            T.StructField("event_id", T.StringType()),
            T.StructField("event_type", T.StringType()),
            T.StructField("ts", T.TimestampType()),
            T.StructField("user_id", T.LongType()),
            T.StructField("item_id", T.LongType()),
            T.StructField("surface", T.StringType()),
            T.StructField("session_id", T.StringType()),
            T.StructField("position", T.IntegerType()),
        ],
    }[kind]
    return T.StructType([*fields, T.StructField(CORRUPT, T.StringType())])


def required_fields(kind: str) -> tuple[str, ...]:
    """Return the fields a row of ``kind`` must carry (docs/raw-format.md)."""
    return {
        "users": ("user_id", "signup_ts", "country"),
        "items": ("item_id", "seller_id", "listed_ts", "category", "brand", "condition", "price"),
        "events": (
            "event_id",
            "event_type",
            "ts",
            "user_id",
            "item_id",
            "surface",
            "session_id",
            "position",
        ),
    }[kind]


def raw_day_path(settings: Settings, kind: str, ds: date) -> Path:
    """Return the folder of one day's drop of one kind."""
    return settings.paths.raw / kind / f"ds={ds.isoformat()}"


def parse_lines(lines: DataFrame, kind: str) -> DataFrame:
    """Parse JSON lines (``value, ds``) against the explicit schema, keeping the line as ``raw``."""
    from pyspark.sql import functions as F

    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    parsed = F.from_json(F.col("value"), raw_schema(kind), options)
    return lines.select(F.col("value").alias("raw"), "ds", parsed.alias("r")).select(
        "raw", "ds", "r.*"
    )


def rejection_reason(kind: str) -> Column:
    """Return a column holding the first rule a parsed row breaks, or null if it is valid."""
    from pyspark.sql import functions as F

    rules: list[tuple[Column, str]] = [(F.col(CORRUPT).isNotNull(), "malformed JSON or wrong type")]
    rules += [(F.col(name).isNull(), f"missing {name}") for name in required_fields(kind)]
    id_cols = {
        "users": ["user_id"],
        "items": ["item_id", "seller_id"],
        "events": ["user_id", "item_id"],
    }
    rules += [
        ((F.col(c) < 1) | (F.col(c) > MAX_ID), f"{c} outside 1..2^32-1") for c in id_cols[kind]
    ]
    if kind == "events":
        rules += [
            (~F.col("event_type").isin(*EVENT_TYPES), "unknown event_type"),
            (F.col("position") < 1, "position < 1"),
            (F.to_date("ts") != F.col("ds"), "timestamp outside the drop's day"),
        ]
    if kind == "items":
        rules += [(F.col("price") <= 0, "price <= 0")]
    reason = F.lit(None).cast("string")
    for condition, text in reversed(rules):
        reason = F.when(condition, F.lit(text)).otherwise(reason)
    return reason


def with_duplicate_reason(df: DataFrame, key: str) -> DataFrame:
    """Mark every copy but the first (by raw text) of a key repeated within a day."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    window = Window.partitionBy("ds", key).orderBy("raw")
    duplicate = F.col(key).isNotNull() & (F.row_number().over(window) > 1)
    return df.withColumn(
        "reason",
        F.when(F.col("reason").isNull() & duplicate, F.lit(f"duplicate {key}")).otherwise(
            F.col("reason")
        ),
    )


def validate(parsed: DataFrame, kind: str) -> DataFrame:
    """Attach the rejection ``reason`` of every parsed row (null for accepted rows)."""
    key = {"users": "user_id", "items": "item_id", "events": "event_id"}[kind]
    return parsed.withColumn("reason", rejection_reason(kind)).transform(
        lambda df: with_duplicate_reason(df, key)
    )


def accepted_rows(validated: DataFrame, kind: str) -> DataFrame:
    """Select the accepted rows in the bronze schema of ``kind`` (the output contract)."""
    from pyspark.sql import functions as F

    columns = [f.name for f in raw_schema(kind).fields if f.name != CORRUPT]
    return validated.where(F.col("reason").isNull()).select(*columns, "ds")


def quarantined_rows(validated: DataFrame, kind: str) -> DataFrame:
    """Select the rejected rows with their reason and original line."""
    from pyspark.sql import functions as F

    return validated.where(F.col("reason").isNotNull()).select(
        F.lit(kind).alias("source"), "reason", "raw", "ds"
    )


def read_raw_lines(
    spark: SparkSession, settings: Settings, kind: str, start: date, end: date
) -> DataFrame:
    """Read the non-blank lines of complete drops in ``[start, end]``, with their ``ds``."""
    from pyspark.sql import functions as F

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
    from pyspark.sql import functions as F

    from rankflow.spark import write_partitions

    validated = validate(parse_lines(read_raw_lines(spark, settings, kind, start, end), kind), kind)
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
    window = f"ds >= DATE'{start.isoformat()}' AND ds <= DATE'{end.isoformat()}'"
    quarantine_path = settings.paths.table("bronze/quarantine")
    (
        quarantined_rows(validated, kind)
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"{window} AND source = '{kind}'")
        .partitionBy("ds", "source")
        .save(quarantine_path)
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
    from pyspark.sql import functions as F

    from rankflow.spark import table_exists

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
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from rankflow.quality import gate, raw_events_suite, row_count_outcomes

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

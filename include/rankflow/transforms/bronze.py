"""Raw drops (JSON Lines, docs/raw-format.md) -> bronze Delta tables, with a quarantine.

Every line is parsed against an explicit schema and checked; a line that fails any rule goes to
``bronze/quarantine`` with the first failing reason and its original text, never silently away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from rankflow.quality.gates import DataQualityError
from rankflow.quality.raw import CORRUPT, EVENT_TYPES, MAX_ID, raw_schema, required_fields

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


class IngestError(RuntimeError):
    """A raw drop cannot be ingested (missing, or too many malformed rows)."""


class MalformedShareError(IngestError, DataQualityError):
    """Too many of a day's rows are malformed: a data-quality block, not worth a retry."""


def parse_lines(lines: DataFrame, kind: str) -> DataFrame:
    """Parse JSON lines (``value, ds``) against the explicit schema, keeping the line as ``raw``."""
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    parsed = F.from_json(F.col("value"), raw_schema(kind), options)
    return lines.select(F.col("value").alias("raw"), "ds", parsed.alias("r")).select(
        "raw", "ds", "r.*"
    )


def non_finite(column: str) -> Column:
    """True where a double is NaN or +-Infinity (JSON's lenient tokens, or strings Spark reads)."""
    return F.isnan(column) | F.col(column).isin(float("inf"), float("-inf"))


def duplicate_keys(raw: str) -> Column:
    """True where the line's object repeats a top-level key (the parsers disagree on the winner)."""
    keys = F.json_object_keys(raw)
    return F.size(keys) != F.size(F.array_distinct(keys))


def rejection_reason(kind: str, max_line_bytes: int) -> Column:
    """Return a column holding the first rule a parsed row breaks, or null if it is valid.

    The line itself is checked first (length, UTF-8, duplicate keys), then its parse (Spark's
    PERMISSIVE reader flags truncated lines, nesting past its limit and wrong types), then each
    field against docs/raw-format.md.
    """
    rules: list[tuple[Column, str]] = [
        (F.octet_length("raw") > max_line_bytes, f"line over {max_line_bytes} bytes"),
        (~F.is_valid_utf8("raw"), "invalid UTF-8"),
        (duplicate_keys("raw"), "duplicate JSON key"),
        (F.col(CORRUPT).isNotNull(), "malformed JSON or wrong type"),
    ]
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
        rules += [
            (non_finite("price"), "price not finite (NaN or Infinity)"),
            (F.col("price") <= 0, "price <= 0"),
            (non_finite("seller_rating"), "seller_rating not finite (NaN or Infinity)"),
        ]
    reason = F.lit(None).cast("string")
    for condition, text in reversed(rules):
        reason = F.when(condition, F.lit(text)).otherwise(reason)
    return reason


def with_duplicate_reason(df: DataFrame, key: str) -> DataFrame:
    """Mark every copy but the first (by raw text) of a key repeated within a day."""
    window = Window.partitionBy("ds", key).orderBy("raw")
    duplicate = F.col(key).isNotNull() & (F.row_number().over(window) > 1)
    return df.withColumn(
        "reason",
        F.when(F.col("reason").isNull() & duplicate, F.lit(f"duplicate {key}")).otherwise(
            F.col("reason")
        ),
    )


def validate(parsed: DataFrame, kind: str, max_line_bytes: int) -> DataFrame:
    """Attach the rejection ``reason`` of every parsed row (null for accepted rows)."""
    key = {"users": "user_id", "items": "item_id", "events": "event_id"}[kind]
    return parsed.withColumn("reason", rejection_reason(kind, max_line_bytes)).transform(
        lambda df: with_duplicate_reason(df, key)
    )


def accepted_rows(validated: DataFrame, kind: str) -> DataFrame:
    """Select the accepted rows in the bronze schema of ``kind`` (the output contract)."""
    columns = [f.name for f in raw_schema(kind).fields if f.name != CORRUPT]
    return validated.where(F.col("reason").isNull()).select(*columns, "ds")


def quarantined_rows(validated: DataFrame, kind: str) -> DataFrame:
    """Select the rejected rows with their reason and original line."""
    return validated.where(F.col("reason").isNotNull()).select(
        F.lit(kind).alias("source"), "reason", "raw", "ds"
    )

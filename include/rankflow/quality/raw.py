"""The raw-drop contract (docs/raw-format.md): kinds, event types, schemas, folders."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rankflow.config import Settings

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

RAW_KINDS = ("users", "items", "events")
EVENT_TYPES = ("impression", "click", "like", "save", "add_to_bag", "purchase")
MAX_ID = 2**32 - 1
MAX_PRICE = 1e9  # EUR; no listing costs more, and the bound refuses NaN/Infinity in Spark checks
CORRUPT = "_corrupt_record"


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


SALES_KIND = "sales"


def sales_hour_dir(raw: Path, moment: datetime) -> Path:
    """Return the folder of the sales drop of the hour starting at ``moment`` (UTC)."""
    return raw / SALES_KIND / f"ds={moment.date().isoformat()}" / f"hour={moment.hour:02d}"


def sales_quarantine_dir(settings: Settings) -> Path:
    """Return the folder of the sales drops' rejected lines (one file per hour, by day)."""
    return settings.paths.raw.parent / "quarantine" / SALES_KIND


def sales_quarantine_path(settings: Settings, hour: datetime) -> Path:
    """Return the file holding the rejected lines (and reasons) of one hour's sales drop."""
    day = f"ds={hour.date().isoformat()}"
    return sales_quarantine_dir(settings) / day / f"hour={hour.hour:02d}.jsonl"

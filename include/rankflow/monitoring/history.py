"""The monitoring history table: figures of every night, read back for thresholds and the page."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.days import day, days_where
from rankflow.monitoring.rules import ROW_FIELDS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
MONITORING_TABLE = "ops/monitoring"


def history_rows(
    settings: Settings,
    surface: str,
    since: date | None = None,
    until: date | None = None,
) -> list[dict[str, Any]]:
    """Read the monitoring rows of a surface (optionally of ``[since, until]``), oldest first."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    filters: list[tuple[str, str, Any]] = [("surface", "=", surface)]
    if since is not None:
        filters.append(("ds", ">=", since))
    if until is not None:
        filters.append(("ds", "<=", until))
    try:
        table = DeltaTable(settings.paths.table(MONITORING_TABLE))
    except TableNotFoundError:
        return []
    frame = table.to_pyarrow_table(filters=filters).to_pandas()
    frame = frame.sort_values(["ds", "group", "metric", "subject"], kind="stable")
    rows: list[dict[str, Any]] = [
        {k: _plain(v) for k, v in record.items()} for record in frame.to_dict("records")
    ]
    return rows


def _plain(value: Any) -> Any:
    """Turn pandas/NumPy scalars into JSON-friendly Python values (NaN and NaT become None)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def latest_day(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Return the rows of the most recent day in ``rows``."""
    if not rows:
        return []
    last = max(row["ds"] for row in rows)
    return [row for row in rows if row["ds"] == last]


def history(
    spark: SparkSession, settings: Settings, ds: date, surface: str
) -> list[dict[str, Any]]:
    """The monitoring rows of the calibration window before ``ds`` (a few hundred rows a day)."""
    from pyspark.sql import functions as F

    from rankflow.lake.tables import table_exists

    path = settings.paths.table(MONITORING_TABLE)
    if not table_exists(spark, path):
        return []
    days = int(settings.pipeline["monitoring"]["calibration"]["window_days"])
    start = (ds - timedelta(days=days)).isoformat()
    rows = (
        spark.read.format("delta")
        .load(path)
        .where(
            (F.col("surface") == surface)
            & (F.col("ds") >= F.lit(start).cast("date"))
            & (F.col("ds") < day(ds))
        )
        .collect()
    )
    return [row.asDict() for row in rows]


def write_history(
    spark: SparkSession, settings: Settings, rows: list[dict[str, Any]], ds: date, surface: str
) -> None:
    """Replace the rows of (``ds``, ``surface``) in the monitoring table, in one transaction."""
    from pyspark.sql import functions as F

    from rankflow.lake.tables import replace_partition  # Spark: its readers stay Spark-free

    schema = ", ".join(f"`{name}` {kind}" for name, kind in ROW_FIELDS)
    frame = spark.createDataFrame(
        [tuple(row[name] for name, _ in ROW_FIELDS) for row in rows], schema
    ).select(day(ds).alias("ds"), F.lit(surface).alias("surface"), "*")
    replace_partition(
        frame, settings.paths.table(MONITORING_TABLE), f"{days_where(ds)} AND surface = '{surface}'"
    )

"""The days of the lake: a partition's ``ds`` as a Spark literal, a Delta predicate, a range.

Every table is partitioned by ``ds`` (a DATE); these are the only spellings of a day the library
uses, in Spark columns and in the SQL of Delta's ``replaceWhere``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column


def days(start: date, end: date) -> list[date]:
    """Return every day from ``start`` to ``end`` inclusive."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def day(ds: date) -> Column:
    """The day as a Spark DATE literal (to compare with, or to set, a ``ds`` column)."""
    from pyspark.sql import functions as F

    return F.lit(ds.isoformat()).cast("date")


def in_days(start: date, end: date, column: str = "ds") -> Column:
    """A Spark filter keeping the rows whose ``column`` lies in ``[start, end]``."""
    from pyspark.sql import functions as F

    return F.col(column).between(day(start), day(end))


def sql_day(ds: date) -> str:
    """The day as a SQL DATE literal (for Delta's ``replaceWhere``)."""
    return f"DATE'{ds.isoformat()}'"


def days_where(start: date, end: date | None = None, column: str = "ds") -> str:
    """A SQL predicate on ``column``: the day ``start``, or the days ``[start, end]``."""
    if end is None or end == start:
        return f"{column} = {sql_day(start)}"
    return f"{column} >= {sql_day(start)} AND {column} <= {sql_day(end)}"

"""The gold ranked lists: one ``(ds, surface)`` partition per scoring run, and its exact files.

Scoring records which Parquet files its Delta commit added and how many rows each holds (a
:class:`GoldSnapshot`, kept in the score run record). Publishers then read exactly those files
and check the counts, without a Spark query to list the table, and refuse if a later commit
changed the partition in between.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.days import days_where
from rankflow.lake.delta_log import (
    Commit,
    changes_since,
    find_commit,
    partition_files,
    table_file,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


class GoldChangedError(RuntimeError):
    """Raised when the gold partition changed after it was scored; re-run scoring."""


@dataclass(frozen=True)
class GoldSnapshot:
    """The files of one scored partition: table location, Delta commit and (file, rows) pairs."""

    table: str
    commit: int
    files: tuple[tuple[str, int], ...]

    @property
    def users(self) -> int:
        """Return the number of ranked lists (one row per user)."""
        return sum(rows for _, rows in self.files)

    def locations(self) -> list[tuple[str, int]]:
        """Return (full file location, rows) pairs, for readers outside Spark."""
        return [(table_file(self.table, path), rows) for path, rows in self.files]

    def as_record(self) -> dict[str, Any]:
        """Return the snapshot as JSON-ready data for the run record."""
        return {"table": self.table, "commit": self.commit, "files": [list(f) for f in self.files]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GoldSnapshot:
        """Rebuild a snapshot from :meth:`as_record` data."""
        files = tuple((str(path), int(rows)) for path, rows in record["files"])
        return cls(str(record["table"]), int(record["commit"]), files)


def partition_values(ds: date, surface: str) -> dict[str, str]:
    """Return the gold partition of a day and surface as Delta writes it in the log."""
    return {"ds": ds.isoformat(), "surface": surface}


def snapshot_of(table: str, commit: Commit, ds: date, surface: str) -> GoldSnapshot:
    """Return the files the commit added to the ``(ds, surface)`` partition.

    Raises:
        DeltaLogError: a file lacks its row count or carries a deletion vector, so its rows
            cannot be read and checked without Spark.
    """
    added = partition_files(table, commit, partition_values(ds, surface), "gold")
    files = [(f.path, int(f.rows or 0)) for f in added]
    return GoldSnapshot(table, commit.version, tuple(files))  # in path order


def write_gold(ranked: DataFrame, table: str, ds: date, surface: str) -> GoldSnapshot:
    """Replace the ``(ds, surface)`` partition of the gold table and return what was written."""
    from rankflow.lake.tables import replace_partition  # Spark: its readers stay Spark-free

    token = f"rankflow-score:{ds.isoformat()}:{surface}:{uuid.uuid4().hex}"
    replace_partition(
        ranked,
        table,
        f"{days_where(ds)} AND surface = '{surface}'",
        ["ds", "surface"],
        # mergeSchema: additive columns (e.g. items_u32le) join older tables
        {"userMetadata": token, "mergeSchema": "true"},
    )
    return snapshot_of(table, find_commit(table, token), ds, surface)


def check_unchanged(snapshot: GoldSnapshot, ds: date, surface: str) -> None:
    """Raise :class:`GoldChangedError` if a commit after the snapshot changed its partition."""
    later = changes_since(snapshot.table, snapshot.commit, partition_values(ds, surface))
    if later:
        raise GoldChangedError(
            f"gold lists of {ds} / {surface} changed after scoring (commits {later}); "
            "re-run the score task before publishing"
        )

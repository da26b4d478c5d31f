"""Delta reads and writes of the lake: tables, partitions of a day, table versions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from rankflow.config import Settings
from rankflow.days import day, days_where
from rankflow.features.batch import FeatureFrames
from rankflow.lake.delta_log import (
    DeltaLogError,
    find_commit,
    partition_files,
    read_commit,
    table_file,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def replace_partition(
    df: DataFrame,
    path: str,
    where: str,
    partition_by: Sequence[str] = ("ds",),
    options: Mapping[str, str] | None = None,
) -> None:
    """Replace exactly the rows ``where`` selects in a Delta table, in one transaction.

    Creates the table (partitioned by ``partition_by``) if needed. Rows of ``df`` outside
    ``where`` make Delta refuse the write, so a step can never touch another day's data; a
    retry replaces what a failed attempt wrote.
    """
    writer = df.write.format("delta").mode("overwrite").option("replaceWhere", where)
    for key, value in (options or {}).items():
        writer = writer.option(key, value)
    writer.partitionBy(*partition_by).save(path)


def write_partition(df: DataFrame, path: str, ds: date, partition_col: str = "ds") -> None:
    """Replace exactly the ``ds`` partition of a Delta table, creating the table if needed."""
    replace_partition(df, path, days_where(ds, column=partition_col), [partition_col])


def write_partitions(df: DataFrame, path: str, start: date, end: date) -> None:
    """Replace the ``ds`` partitions in ``[start, end]`` of a Delta table in one transaction."""
    replace_partition(df, path, days_where(start, end))


def delta_path(path: str) -> str:
    """Return the SQL identifier of the Delta table at ``path`` (delta.`path`)."""
    return "delta.`" + path.replace("`", "``") + "`"


def table_exists(spark: SparkSession, path: str) -> bool:
    """Tell whether a Delta table exists at ``path`` (in SQL: works on Spark Connect too)."""
    from pyspark.errors import AnalysisException

    try:
        spark.sql(f"DESCRIBE DETAIL {delta_path(path)}").select("format").first()
    except AnalysisException:
        return False
    return True


def table_version(spark: SparkSession, path: str) -> int:
    """Return the latest Delta version of a table (recorded as model lineage)."""
    row = spark.sql(f"DESCRIBE HISTORY {delta_path(path)} LIMIT 1").select("version").first()
    return int(row[0]) if row else -1


FEATURE_TABLES = {
    "items": "silver/item_features",
    "users": "silver/user_features",
    "seen": "silver/seen_pairs",
}
FEATURES_COMMIT = "rankflow-features"  # the features step's commits: userMetadata prefix
INPUT_TABLES = ("bronze/events", "bronze/items", "bronze/users", "silver/training_set")


def read_table(
    spark: SparkSession, settings: Settings, name: str, version: int | None = None
) -> DataFrame:
    """Read a Delta table of the lake, at ``version`` if given (Delta time travel).

    A missing table gets a clear error: its upstream step has not run.
    """
    path = settings.paths.table(name)
    if not table_exists(spark, path):
        raise FileNotFoundError(f"Delta table {name} does not exist at {path}: run its step first")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def read_partition(
    spark: SparkSession, settings: Settings, name: str, ds: date, version: int | None = None
) -> DataFrame:
    """Read one ``ds`` partition of a Delta table (without the ``ds`` column)."""
    return read_table(spark, settings, name, version).where(F.col("ds") == day(ds)).drop("ds")


def bronze(spark: SparkSession, settings: Settings) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Return the bronze events, items and users tables."""
    return (
        read_table(spark, settings, "bronze/events"),
        read_table(spark, settings, "bronze/items"),
        read_table(spark, settings, "bronze/users"),
    )


def read_features(
    spark: SparkSession, settings: Settings, ds: date, versions: Mapping[str, int] | None = None
) -> FeatureFrames:
    """Read the features as of ``ds`` written by the features step (keyed by ``as_of``).

    ``versions`` (face -> Delta version) reads the commits a step recorded, not the latest.
    """

    def face(name: str) -> DataFrame:
        version = versions[name] if versions is not None else None
        frame = read_partition(spark, settings, FEATURE_TABLES[name], ds, version)
        return frame.withColumn("as_of", day(ds))

    return FeatureFrames(items=face("items"), users=face("users"), seen=face("seen"))


def write_features(built: Mapping[str, DataFrame], settings: Settings, ds: date) -> dict[str, int]:
    """Replace ``ds`` in each feature table, one tagged commit per face; return face -> version.

    The tag (``userMetadata``) lets :func:`feature_files` name exactly the files a commit of
    the features step wrote, for readers outside Spark.
    """
    versions = {}
    for face, name in FEATURE_TABLES.items():
        frame = by_user_and_item(built[face], ds) if face == "seen" else built[face]
        path = settings.paths.table(name)
        token = f"{FEATURES_COMMIT}:{ds.isoformat()}:{face}:{uuid.uuid4().hex}"
        replace_partition(frame, path, days_where(ds), ["ds"], {"userMetadata": token})
        versions[face] = find_commit(path, token).version
    return versions


def by_user_and_item(seen: DataFrame, ds: date) -> DataFrame:
    """The seen pairs of ``ds`` sorted by user and item within their partitions (no shuffle).

    One long key (user in the high bits) lets Spark radix-sort; ``ds`` as a literal lets the
    write keep the order (it would otherwise sort by its partition column). Readers check the
    order and sort themselves when it is not there (e.g. user ids of 2^31 or more).
    """
    pair = F.shiftleft(F.col("user_id"), 32).bitwiseOR(F.col("item_id"))
    ordered = seen.withColumn("ds", day(ds)).withColumn("_pair", pair)
    return ordered.sortWithinPartitions("_pair").drop("_pair")


@dataclass(frozen=True)
class DataFile:
    """One data file of a commit: its full location, rows and bytes (from the Delta log)."""

    location: str
    rows: int
    size: int


def feature_files(settings: Settings, face: str, ds: date, version: int) -> list[DataFile]:
    """The files the features step's commit ``version`` of ``face`` wrote for ``ds``.

    Read from the log, so Spark tasks can read them with pyarrow (as gold files are).

    Raises:
        DeltaLogError: the commit is not the features step's write of ``ds``, or a file lacks
            its row count or carries a deletion vector.
    """
    table = settings.paths.table(FEATURE_TABLES[face])
    commit = read_commit(table, version)
    written_by = f"{FEATURES_COMMIT}:{ds.isoformat()}:{face}:"
    if not (commit.user_metadata or "").startswith(written_by):
        raise DeltaLogError(
            f"commit {version} of {table} is not the features step's write of {ds} "
            f"(userMetadata {commit.user_metadata!r}): re-run the features step for {ds}"
        )
    added = partition_files(table, commit, {"ds": ds.isoformat()}, f"{face} features")
    return [DataFile(table_file(table, f.path), int(f.rows or 0), f.size) for f in added if f.rows]


def table_versions(spark: SparkSession, settings: Settings) -> dict[str, int]:
    """Return the Delta version of every input table (model lineage)."""
    return {name: table_version(spark, settings.paths.table(name)) for name in INPUT_TABLES}


def scoring_input(
    spark: SparkSession,
    settings: Settings,
    ds: date,
    users: DataFrame | None = None,
    rows: int = 0,
    *,
    user_item_features: bool = True,
) -> DataFrame:
    """Join the candidates of ``ds`` (of ``users`` only, if given) with the features as of ``ds``.

    This is the serving face of the features; restricting the users first keeps a sample cheap.
    The rows come out placed by user (:func:`join_features_by_user`): a per-user reducer needs
    no other shuffle. ``rows`` (the candidates', when known) sizes the partitions
    (:func:`user_partitions`). With ``user_item_features=False`` the user x item features are
    left to the caller (the scorer computes them in its own pass): the rows then hold the other
    model features and what the user x item ones are computed from.
    """
    from rankflow.features.on_demand import CROSS_INPUTS, add_cross_features, join_features_by_user
    from rankflow.features.registry import CROSS_FEATURES, MODEL_FEATURES, feature_vector
    from rankflow.lake.session import user_partitions

    features = read_features(spark, settings, ds)
    candidates = read_partition(spark, settings, "silver/candidates", ds).select(
        day(ds).alias("as_of"), "user_id", "item_id"
    )
    if users is not None:
        candidates = candidates.join(F.broadcast(users), "user_id")
    joined = join_features_by_user(candidates, features, user_partitions(spark, rows))
    if not user_item_features:
        others = [name for name in MODEL_FEATURES if name not in CROSS_FEATURES]
        return joined.select(
            "as_of", "user_id", "item_id", *dict.fromkeys([*others, *CROSS_INPUTS])
        )
    return add_cross_features(joined).select("user_id", "item_id", *feature_vector())


def read_ranked(spark: SparkSession, settings: Settings, ds: date, surface: str) -> DataFrame:
    """Read the gold ranked lists of one day and surface."""
    return read_partition(spark, settings, "gold/rankings", ds).where(F.col("surface") == surface)

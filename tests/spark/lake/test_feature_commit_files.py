"""The features step's commits name their files to readers outside Spark, each with whole users."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq
import pytest

from rankflow.config import Settings
from tiny_lake import TINY_DAY

pytestmark = pytest.mark.spark


def test_each_seen_file_of_the_features_commit_holds_whole_users_in_order(
    spark: Any, lake: Settings, feature_versions: dict[str, int]
) -> None:
    from rankflow.lake.tables import feature_files, read_partition

    files = feature_files(lake, "seen", TINY_DAY, feature_versions["seen"])
    seen = read_partition(spark, lake, "silver/seen_pairs", TINY_DAY).toPandas()
    assert sum(f.rows for f in files) == len(seen)
    owners: dict[int, str] = {}
    for file in files:
        location = file.location
        table = pq.read_table(location, columns=["user_id", "item_id"]).to_pandas()
        assert len(table) == file.rows
        pairs = list(zip(table.user_id, table.item_id, strict=True))
        assert pairs == sorted(pairs), f"{location} is not sorted by user and item"
        for user in set(table.user_id):
            assert owners.setdefault(int(user), location) == location, f"user {user} in 2 files"
    assert len(owners) == seen.user_id.nunique()


def test_a_commit_the_features_step_did_not_write_is_refused_with_the_fix(
    spark: Any, lake_settings: Settings
) -> None:
    from pyspark.sql import functions as F

    from rankflow.lake.delta_log import DeltaLogError
    from rankflow.lake.tables import feature_files, table_version, write_partition

    path = lake_settings.paths.table("silver/seen_pairs")
    rows = spark.range(40).select(
        (F.col("id") % 7).alias("user_id"),
        F.col("id").alias("item_id"),
        F.lit(TINY_DAY).alias("ds"),
    )
    write_partition(rows.repartition(3), path, TINY_DAY)  # not tagged
    with pytest.raises(DeltaLogError, match="not the features step's write"):
        feature_files(lake_settings, "seen", TINY_DAY, table_version(spark, path))

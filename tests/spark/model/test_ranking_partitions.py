"""The spark training engine's rows: what SparkXGBRanker's own preparation hands to XGBoost."""

from __future__ import annotations

import random

import pytest
from pyspark.sql import functions as F

from rankflow.model.spark_engine import QUERY_INDEX, ranking_partitions

pytestmark = pytest.mark.spark


def xgboost_view(frame):
    """What SparkXGBRanker._prepare_input does to rows that need no repartition (xgboost 3.2)."""
    return frame.select(
        F.col("x").cast("float").alias("x"), F.col(QUERY_INDEX).alias("qid"), "position"
    ).sortWithinPartitions("qid", ascending=True)


def order_check():
    """A mapInPandas function (pickled by value: the server cannot import this module)."""

    def in_group_then_shown_order(batches):
        """One partition: groups contiguous and ascending, each group's rows by position."""
        import pandas as pd

        frames = list(batches)
        rows = pd.concat(frames) if frames else pd.DataFrame({"qid": [], "position": []})
        qid_step = rows["qid"].diff().fillna(1)
        position_step = rows["position"].diff().fillna(1)
        ordered = bool(((qid_step > 0) | ((qid_step == 0) & (position_step > 0))).all())
        yield pd.DataFrame({"ordered": [ordered], "rows": [len(rows)]})

    return in_group_then_shown_order


def test_xgboost_reads_each_group_in_shown_order(spark) -> None:
    rng = random.Random(7)
    rows = [(g, p, rng.random()) for g in range(500) for p in range(1, 21)]
    rng.shuffle(rows)
    frame = spark.createDataFrame(rows, f"{QUERY_INDEX} long, position int, x double")
    partitioned = ranking_partitions(frame.repartition(4), 2, ["position"])
    try:
        seen = xgboost_view(partitioned).mapInPandas(order_check(), "ordered boolean, rows long")
        checked = seen.collect()
    finally:
        partitioned.unpersist()
    assert sum(row["rows"] for row in checked) == len(rows)
    assert all(row["ordered"] for row in checked), checked


def test_without_the_cache_the_optimizer_would_drop_the_shown_order(spark) -> None:
    """Why ranking_partitions persists: the same sort, uncached, is eliminated under XGBoost's."""
    rng = random.Random(7)
    rows = [(g, p, rng.random()) for g in range(500) for p in range(1, 21)]
    rng.shuffle(rows)
    frame = spark.createDataFrame(rows, f"{QUERY_INDEX} long, position int, x double")
    uncached = frame.repartition(4).repartition(2, QUERY_INDEX)
    uncached = uncached.sortWithinPartitions(QUERY_INDEX, "position")
    seen = xgboost_view(uncached).mapInPandas(order_check(), "ordered boolean, rows long")
    assert not all(row["ordered"] for row in seen.collect())

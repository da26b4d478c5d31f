"""Step ``score``: score the candidates with a model, top-K lists per user to gold."""

from __future__ import annotations

import argparse
from datetime import date
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from rankflow.config import Settings
from rankflow.days import day
from rankflow.lake.tables import read_features, read_partition, scoring_input

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def run_score(
    spark: SparkSession, settings: Settings, ds: date, surface: str, top_k: int, model: str
) -> dict[str, Any]:
    """Score every candidate with ``model`` (alias or version) and write top-K lists to gold."""
    from pyspark import StorageLevel

    from rankflow.lake.gold import write_gold
    from rankflow.lake.session import user_partitions
    from rankflow.model.registry import load_model
    from rankflow.model.scoring import fallback_list, score_candidates
    from rankflow.publish.redis import placed_by_bucket
    from rankflow.runs import write_run_record

    model_raw, model_version = load_model(settings, model)
    users, rows = candidate_counts(spark, settings, ds)
    ranked = score_candidates(
        scoring_input(spark, settings, ds, rows=rows, user_item_features=False),
        model_raw,
        f"v{model_version}",
        top_k,
        placed_by_user=True,
        cross_features=True,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        ranked_lists_gate(spark, settings, ds, ranked, top_k, users)
        placed = placed_by_bucket(ranked, ranked.count(), user_partitions(spark, rows))
        gold = (
            placed.withColumn("model_version", F.lit(model_version))
            .withColumn("surface", F.lit(surface))
            .withColumn("ds", day(ds))
        )
        snapshot = write_gold(gold, settings.paths.table("gold/rankings"), ds, surface)
    finally:
        ranked.unpersist()
    fallback = fallback_list(read_features(spark, settings, ds).items, top_k)
    record = {
        "ds": ds.isoformat(),
        "surface": surface,
        "model_version": model_version,
        "top_k": top_k,
        "users": snapshot.users,
        "fallback": fallback,
        "gold": snapshot.as_record(),
    }
    write_run_record(settings, ds, f"score-{surface}", record)
    return record


def list_statistics(ranked: DataFrame, items: DataFrame) -> DataFrame:
    """Return one row per list: its length, distinct, sold and unknown items (for the gate)."""
    catalogue = items.select(
        "item_id", F.col("is_sold").cast("int").alias("sold"), F.lit(1).alias("known")
    )
    entries = ranked.select("user_id", F.explode("item_ids").alias("item_id")).join(
        F.broadcast(catalogue), "item_id", "left"
    )
    per_list = entries.groupBy("user_id").agg(
        F.coalesce(F.sum("sold"), F.lit(0)).alias("sold_items"),
        F.sum(F.when(F.col("known").isNull(), 1).otherwise(0)).alias("unknown_items"),
    )
    lengths = ranked.select(
        "user_id",
        F.size("item_ids").alias("list_length"),
        F.size(F.array_distinct("item_ids")).alias("distinct_items"),
    )
    return lengths.join(per_list, "user_id", "left").fillna(0, ["sold_items", "unknown_items"])


def candidate_counts(spark: SparkSession, settings: Settings, ds: date) -> tuple[int, int]:
    """How many users have candidates on ``ds`` (each gets a list), and how many candidates."""
    counts = (
        read_partition(spark, settings, "silver/candidates", ds)
        .agg(F.countDistinct("user_id").alias("users"), F.count(F.lit(1)).alias("rows"))
        .first()
    )
    return (int(counts["users"]), int(counts["rows"])) if counts else (0, 0)


def ranked_lists_gate(
    spark: SparkSession,
    settings: Settings,
    ds: date,
    ranked: DataFrame,
    top_k: int,
    users_with_candidates: int,
) -> None:
    """Refuse lists that are short, repeat an item, hold sold or unknown items, or miss users.

    Raises:
        DataQualityError: a critical check failed; gold is left as it was.
    """
    import math

    from rankflow.quality.gates import gate
    from rankflow.quality.suites import ranked_lists_suite

    quality = settings.pipeline["quality"]
    min_users = math.ceil(float(quality["min_list_coverage"]) * users_with_candidates)
    statistics = list_statistics(ranked, read_features(spark, settings, ds).items)
    suite = ranked_lists_suite(top_k, min_users, float(quality["lists_full_share"]))
    gate(settings, ds, statistics, "ranked_lists", suite)


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``score`` step for a job's parsed arguments (``jobs/score.py``)."""
    return run_score(
        spark,
        settings,
        args.ds,
        args.surface or settings.default_surface,
        args.top_k or settings.default_top_k,
        args.model,
    )

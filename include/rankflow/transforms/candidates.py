"""Candidate generation: a few hundred available items per active user from several sources."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from pyspark.sql import Window
from pyspark.sql import functions as F

from rankflow.features.batch import FeatureFrames
from rankflow.features.registry import by_popularity

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def available_items(items: DataFrame) -> DataFrame:
    """Keep the listings a user can still buy (not sold)."""
    return items.where(~F.col("is_sold"))


def active_users(users: DataFrame, as_of: date, days: int) -> DataFrame:
    """Keep users with any event in the ``days`` days ending with ``as_of``."""
    since = F.lit((as_of - timedelta(days=days - 1)).isoformat()).cast("timestamp")
    return users.where(F.col("last_event_ts") >= since)


def top_by_popularity(items: DataFrame, n: int, partition: list[str]) -> DataFrame:
    """Keep the ``n`` most popular items of each partition (newest first on ties)."""
    order = Window.partitionBy(*partition).orderBy(*by_popularity())
    return items.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= n)


def from_affinity(
    users: DataFrame, items: DataFrame, attribute: str, strongest: int, per_value: int, source: str
) -> DataFrame:
    """The ``per_value`` most popular items of each of a user's ``strongest`` affinity values.

    ``attribute`` is an item column with a ``<attribute>_affinity`` map on the user (category,
    brand); ties in affinity go to the smaller value, so the choice is deterministic.
    """
    strongest_values = (
        users.select("user_id", F.explode(f"{attribute}_affinity").alias(attribute, "share"))
        .withColumn(
            "r",
            F.row_number().over(
                Window.partitionBy("user_id").orderBy(F.col("share").desc(), F.col(attribute))
            ),
        )
        .where(F.col("r") <= strongest)
    )
    popular = top_by_popularity(items, per_value, [attribute])
    return strongest_values.join(popular, on=attribute, how="inner").select(
        "user_id", "item_id", F.lit(source).alias("source")
    )


def from_top_categories(users: DataFrame, items: DataFrame, config: dict[str, Any]) -> DataFrame:
    """Popular items of each user's strongest categories."""
    return from_affinity(
        users,
        items,
        "category",
        int(config["top_categories"]),
        int(config["per_category"]),
        "category",
    )


def from_similar(users: DataFrame, items: DataFrame, config: dict[str, Any]) -> DataFrame:
    """Popular items of each user's strongest brands."""
    return from_affinity(
        users, items, "brand", int(config["top_brands"]), int(config["similar"]), "similar"
    )


def from_global(users: DataFrame, items: DataFrame, n: int, order: str, source: str) -> DataFrame:
    """The same ``n`` items for every user, by ``order`` (a descending column)."""
    top = items.orderBy(F.col(order).desc(), F.col("item_id")).limit(n).select("item_id")
    return users.select("user_id").crossJoin(F.broadcast(top)).withColumn("source", F.lit(source))


def generate_candidates(features: FeatureFrames, as_of: date, config: dict[str, Any]) -> DataFrame:
    """Return ``user_id, item_id, sources, prior`` for every active user, capped per user.

    Sold items are never candidates (a purchase makes an item sold, so this also drops what the
    user bought); ``prior`` (number of sources, then popularity) decides which survive the cap.
    """
    items = available_items(features.items.drop("as_of")).cache()
    users = active_users(features.users.drop("as_of"), as_of, int(config["active_user_days"]))
    union = (
        from_top_categories(users, items, config)
        .unionByName(from_similar(users, items, config))
        .unionByName(from_global(users, items, int(config["popular"]), "popularity", "popular"))
        .unionByName(from_global(users, items, int(config["fresh"]), "listed_ts", "fresh"))
    )
    merged = union.groupBy("user_id", "item_id").agg(
        F.array_sort(F.collect_set("source")).alias("sources")
    )
    prior = F.size("sources").cast("double") + F.log1p(F.col("popularity"))
    capped = (
        merged.join(items.select("item_id", "popularity"), on="item_id", how="inner")
        .withColumn("prior", prior)
        .withColumn(
            "r",
            F.row_number().over(
                Window.partitionBy("user_id").orderBy(F.col("prior").desc(), F.col("item_id"))
            ),
        )
        .where(F.col("r") <= int(config["max_per_user"]))
    )
    return capped.select("user_id", "item_id", "sources", "prior")

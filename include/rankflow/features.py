"""Item, user and user x item features as of the end of a day: one definition, two faces.

The training set calls :func:`build_features` with ``as_of = ds - 1`` for the impressions of
``ds``; the nightly features job and batch scoring call it with ``as_of = ds``. Both read only
events of days ``<= as_of`` (enforced by :func:`events_until`), so no feature can see its label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

POSITIVE_TYPES = ("like", "save", "add_to_bag", "purchase")
COUNTED_TYPES = {
    "impressions": ("impression",),
    "clicks": ("click",),
    "saves": ("like", "save"),
    "bags": ("add_to_bag",),
    "purchases": ("purchase",),
}
AFFINITY_DIMENSIONS = ("category", "brand", "style", "size")

# Model inputs, in order. Both the training set and the scorer select exactly these columns.
ITEM_FEATURES = [
    *[f"item_{name}_{w}d" for w in (1, 7, 28) for name in ("impressions", "clicks", "saves")],
    *[f"item_{name}_28d" for name in ("bags", "purchases")],
    "item_ctr_1d",
    "item_ctr_7d",
    "item_ctr_28d",
    "item_age_days",
    "item_price",
    "item_price_rel_category",
    "item_condition_rank",
    "seller_rating",
]
USER_FEATURES = [
    "user_impressions_28d",
    "user_clicks_28d",
    "user_positives_28d",
    "user_active_days_28d",
    "user_days_since_signup",
    "user_log_price_mean",
]
CROSS_FEATURES = [
    "aff_category",
    "aff_brand",
    "aff_style",
    "aff_size",
    "size_fit",
    "price_distance",
    "seen_before",
    "clicked_before",
]
MODEL_FEATURES = ITEM_FEATURES + USER_FEATURES + CROSS_FEATURES
CONDITION_RANK = {"new_with_tags": 4, "very_good": 3, "good": 2, "satisfactory": 1}


@dataclass(frozen=True)
class FeatureFrames:
    """The three faces of the features as of one day."""

    as_of: date
    items: DataFrame
    users: DataFrame
    seen: DataFrame


def day_end(as_of: date) -> Column:
    """Return the timestamp at which ``as_of`` ends (00:00 UTC of the next day)."""
    from pyspark.sql import functions as F

    return F.lit((as_of + timedelta(days=1)).isoformat()).cast("timestamp")


def events_until(events: DataFrame, as_of: date, days: int) -> DataFrame:
    """Keep the events of the ``days`` days ending with ``as_of`` (never later ones)."""
    from pyspark.sql import functions as F

    start = as_of - timedelta(days=days - 1)
    return events.where(
        (F.col("ds") >= F.lit(start.isoformat()).cast("date"))
        & (F.col("ds") <= F.lit(as_of.isoformat()).cast("date"))
    )


def items_listed_by(items: DataFrame, as_of: date) -> DataFrame:
    """Keep the listings that were live by the end of ``as_of``."""
    from pyspark.sql import functions as F

    return items.where(F.col("ds") <= F.lit(as_of.isoformat()).cast("date")).drop("ds")


def sold_items(events: DataFrame, as_of: date) -> DataFrame:
    """Return ``item_id, sold_ts`` of every item purchased by the end of ``as_of``."""
    from pyspark.sql import functions as F

    return (
        events.where(
            (F.col("event_type") == "purchase") & (F.col("ds") <= F.lit(as_of.isoformat()))
        )
        .groupBy("item_id")
        .agg(F.min("ts").alias("sold_ts"))
    )


def item_counts(events: DataFrame, as_of: date, windows: list[int]) -> DataFrame:
    """Count each item's impressions, clicks, saves, bags and purchases over every window."""
    from pyspark.sql import functions as F

    recent = events_until(events, as_of, max(windows))
    aggs = []
    for window in windows:
        start = F.lit((as_of - timedelta(days=window - 1)).isoformat()).cast("date")
        for name, types in COUNTED_TYPES.items():
            hit = (F.col("ds") >= start) & F.col("event_type").isin(*types)
            aggs.append(F.sum(hit.cast("long")).alias(f"item_{name}_{window}d"))
    return recent.groupBy("item_id").agg(*aggs)


def with_smoothed_ctr(items: DataFrame, windows: list[int], prior_weight: float) -> DataFrame:
    """Add click-through rates shrunk towards the catalogue rate (stable for new items)."""
    from pyspark.sql import functions as F

    out = items
    for window in windows:
        impressions, clicks = f"item_impressions_{window}d", f"item_clicks_{window}d"
        totals = out.agg(F.sum(clicks).alias("c"), F.sum(impressions).alias("i")).first()
        prior = (totals["c"] or 0) / max(totals["i"] or 0, 1)
        out = out.withColumn(
            f"item_ctr_{window}d",
            (F.col(clicks) + F.lit(prior * prior_weight)) / (F.col(impressions) + prior_weight),
        )
    return out


def item_features(
    items: DataFrame,
    events: DataFrame,
    sold: DataFrame,
    as_of: date,
    listed_by: date,
    config: dict[str, Any],
) -> DataFrame:
    """Return one row per listing live by ``listed_by``: attributes, counts as of ``as_of``, sold.

    ``listed_by`` may be a day after ``as_of``: an impression day shows listings created that
    day, whose attributes are known at listing time while their counts are zero.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    windows = [int(w) for w in config["windows_days"]]
    listed = items_listed_by(items, listed_by)
    counts = item_counts(events, as_of, windows)
    count_cols = [c for c in counts.columns if c != "item_id"]
    condition_rank = F.create_map(*[F.lit(x) for kv in CONDITION_RANK.items() for x in kv])
    category_window = Window.partitionBy("category")
    joined = (
        listed.join(counts, on="item_id", how="left")
        .fillna(0, subset=count_cols)
        .join(sold, on="item_id", how="left")
    )
    return (
        joined.transform(
            lambda df: with_smoothed_ctr(df, windows, float(config["ctr_prior_weight"]))
        )
        .withColumn(
            "item_age_days",
            F.greatest(
                F.lit(0.0),
                (day_end(as_of).cast("double") - F.col("listed_ts").cast("double")) / 86400.0,
            ),
        )
        .withColumn("item_price", F.col("price"))
        .withColumn(
            "item_price_rel_category",
            F.col("price") / F.percentile_approx("price", 0.5).over(category_window),
        )
        .withColumn("item_condition_rank", F.element_at(condition_rank, F.col("condition")))
        .withColumn("is_sold", F.col("sold_ts").isNotNull())
        .withColumn("popularity", F.col("item_clicks_7d") + 2.0 * F.col("item_saves_7d"))
        .select(
            "item_id",
            "seller_id",
            "category",
            "brand",
            "style",
            "size",
            "listed_ts",
            "is_sold",
            "popularity",
            *ITEM_FEATURES,
        )
    )


def user_interactions(events: DataFrame, items: DataFrame, gains: dict[str, float]) -> DataFrame:
    """Return each click or positive action weighted by its gain, with the item's attributes."""
    from pyspark.sql import functions as F

    weight = F.create_map(*[F.lit(x) for kv in gains.items() for x in kv])
    return (
        events.where(F.col("event_type").isin(*gains.keys()))
        .withColumn("weight", F.element_at(weight, F.col("event_type")).cast("double"))
        .join(
            items.select("item_id", "category", "brand", "style", "size", "price"),
            on="item_id",
            how="inner",
        )
    )


def affinity_map(interactions: DataFrame, dimension: str) -> DataFrame:
    """Return ``user_id, {dimension}_affinity``: each value's share of the user's weight."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    per_value = (
        interactions.where(F.col(dimension).isNotNull())
        .groupBy("user_id", dimension)
        .agg(F.sum("weight").alias("w"))
    )
    share = F.col("w") / F.sum("w").over(Window.partitionBy("user_id"))
    return (
        per_value.withColumn("share", share)
        .groupBy("user_id")
        .agg(
            F.map_from_entries(F.collect_list(F.struct(dimension, "share"))).alias(
                f"{dimension}_affinity"
            )
        )
    )


def user_features(
    users: DataFrame, events: DataFrame, items: DataFrame, as_of: date, config: dict[str, Any]
) -> DataFrame:
    """Return one row per user signed up by ``as_of``: activity, price band and affinities."""
    from pyspark.sql import functions as F

    recent = events_until(events, as_of, int(config["history_days"]))
    known = users.where(F.col("ds") <= F.lit(as_of.isoformat()).cast("date")).drop("ds")
    activity = recent.groupBy("user_id").agg(
        F.sum((F.col("event_type") == "impression").cast("long")).alias("user_impressions_28d"),
        F.sum((F.col("event_type") == "click").cast("long")).alias("user_clicks_28d"),
        F.sum(F.col("event_type").isin(*POSITIVE_TYPES).cast("long")).alias("user_positives_28d"),
        F.countDistinct("ds").alias("user_active_days_28d"),
        F.max("ts").alias("last_event_ts"),
    )
    interactions = user_interactions(recent, items, config["gains"]).cache()
    price_band = interactions.groupBy("user_id").agg(
        F.mean(F.log(F.col("price"))).alias("user_log_price_mean")
    )
    out = (
        known.withColumnRenamed("size", "declared_size")
        .join(activity, on="user_id", how="left")
        .fillna(
            0,
            subset=[
                "user_impressions_28d",
                "user_clicks_28d",
                "user_positives_28d",
                "user_active_days_28d",
            ],
        )
        .join(price_band, on="user_id", how="left")
        .withColumn(
            "user_days_since_signup",
            (day_end(as_of).cast("double") - F.col("signup_ts").cast("double")) / 86400.0,
        )
    )
    for dimension in AFFINITY_DIMENSIONS:
        out = out.join(affinity_map(interactions, dimension), on="user_id", how="left")
    return out.select(
        "user_id",
        "country",
        "declared_size",
        "last_event_ts",
        *USER_FEATURES,
        *[f"{d}_affinity" for d in AFFINITY_DIMENSIONS],
    )


def seen_pairs(events: DataFrame, as_of: date, history_days: int) -> DataFrame:
    """Return ``user_id, item_id, seen_before, clicked_before`` counts over the history."""
    from pyspark.sql import functions as F

    return (
        events_until(events, as_of, history_days)
        .where(F.col("event_type").isin("impression", "click"))
        .groupBy("user_id", "item_id")
        .agg(
            F.sum((F.col("event_type") == "impression").cast("long")).alias("seen_before"),
            F.sum((F.col("event_type") == "click").cast("long")).alias("clicked_before"),
        )
    )


def build_features(
    events: DataFrame,
    items: DataFrame,
    users: DataFrame,
    as_of: date,
    config: dict[str, Any],
    listed_by: date | None = None,
) -> FeatureFrames:
    """Build item, user and seen-pair features from bronze tables as of the end of ``as_of``."""
    features_config = {**config["features"], "gains": config["labels"]["gains"]}
    history = events_until(events, as_of, max(int(w) for w in features_config["windows_days"]))
    return FeatureFrames(
        as_of=as_of,
        items=item_features(
            items, history, sold_items(events, as_of), as_of, listed_by or as_of, features_config
        ),
        users=user_features(users, history, items, as_of, features_config),
        seen=seen_pairs(history, as_of, int(features_config["history_days"])),
    )


def with_cross_features(pairs: DataFrame, features: FeatureFrames) -> DataFrame:
    """Join user and item features to ``user_id, item_id`` pairs and derive the cross features."""
    from pyspark.sql import functions as F

    def affinity(dimension: str) -> Column:
        return F.coalesce(
            F.element_at(F.col(f"{dimension}_affinity"), F.col(dimension)), F.lit(0.0)
        )

    return (
        pairs.join(features.items, on="item_id", how="left")
        .join(features.users, on="user_id", how="left")
        .join(features.seen, on=["user_id", "item_id"], how="left")
        .fillna(0, subset=["seen_before", "clicked_before"])
        .withColumn("aff_category", affinity("category"))
        .withColumn("aff_brand", affinity("brand"))
        .withColumn("aff_style", affinity("style"))
        .withColumn("aff_size", affinity("size"))
        .withColumn(
            "size_fit",
            ((F.col("size") == F.col("declared_size")) | (F.col("size") == "one_size")).cast(
                "double"
            ),
        )
        .withColumn(
            "price_distance", F.abs(F.log(F.col("item_price")) - F.col("user_log_price_mean"))
        )
    )


def feature_vector(df: DataFrame) -> list[Column]:
    """Return the model input columns, in order, as doubles (null stays null -> NaN)."""
    from pyspark.sql import functions as F

    return [F.col(name).cast("double").alias(name) for name in MODEL_FEATURES]

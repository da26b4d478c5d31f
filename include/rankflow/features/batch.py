"""Item, user and user x item features as of the end of a day: one definition, two faces.

Features are computed for a set of ``as_of`` days at once (every frame carries an ``as_of``
column): the training set asks for ``ds - 1`` of each impression day, the nightly features job
and batch scoring for ``ds`` itself. Each day's aggregates only ever read events of days
``<= as_of`` (see :func:`history_for`), so no feature can see its label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from pyspark.sql import Window
from pyspark.sql import functions as F

from rankflow.features.registry import (
    AFFINITY_DIMENSIONS,
    CONDITION_RANK,
    COUNTED_TYPES,
    ITEM_FEATURES,
    USER_FEATURES,
    WINDOWS,
    popularity,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

POSITIVE_TYPES = ("like", "save", "add_to_bag", "purchase")


@dataclass(frozen=True)
class FeatureFrames:
    """The three faces of the features, keyed by ``as_of`` and the entity ids."""

    items: DataFrame
    users: DataFrame
    seen: DataFrame


def calendar(spark: SparkSession, as_of_days: list[date]) -> DataFrame:
    """Return a one-column frame ``as_of`` of the requested days (small, broadcast in joins)."""
    rows = [(d.isoformat(),) for d in sorted(set(as_of_days))]
    return spark.createDataFrame(rows, "as_of string").select(F.col("as_of").cast("date"))


def history_for(daily: DataFrame, days: DataFrame, window: int) -> DataFrame:
    """Pair each daily row with every ``as_of`` whose ``window`` days end on or after it.

    Adds ``age`` (days between the row's ``ds`` and ``as_of``, 0 = the as-of day itself); a row
    of a day after ``as_of`` is never paired with it.
    """
    age = F.datediff(F.col("as_of"), F.col("ds"))
    joined = daily.join(
        F.broadcast(days),
        (F.col("ds") <= F.col("as_of")) & (F.col("ds") > F.date_sub(F.col("as_of"), window)),
        how="inner",
    )
    return joined.withColumn("age", age)


def day_end(as_of: Column) -> Column:
    """Return the timestamp at which the ``as_of`` day ends (00:00 UTC of the next day)."""
    return F.date_add(as_of, 1).cast("timestamp")


def daily_item_counts(events: DataFrame) -> DataFrame:
    """Count each item's events of every type per day (the small input of windowed counts)."""
    aggs = [
        F.sum(F.col("event_type").isin(*types).cast("long")).alias(name)
        for name, types in COUNTED_TYPES.items()
    ]
    return events.groupBy("item_id", "ds").agg(*aggs)


def item_window_counts(daily: DataFrame, days: DataFrame) -> DataFrame:
    """Sum the daily counts of each item over the 1, 7 and 28 days ending with ``as_of``."""
    aggs = [
        F.sum(F.when(F.col("age") < w, F.col(name)).otherwise(0)).alias(f"item_{name}_{w}d")
        for w in WINDOWS
        for name in COUNTED_TYPES
    ]
    return history_for(daily, days, max(WINDOWS)).groupBy("as_of", "item_id").agg(*aggs)


def catalogue_rates(counted: DataFrame) -> DataFrame:
    """Per ``as_of``, the click-through rate of the whole catalogue over each window."""
    return counted.groupBy("as_of").agg(
        *[
            (
                F.sum(f"item_clicks_{w}d") / F.greatest(F.sum(f"item_impressions_{w}d"), F.lit(1))
            ).alias(f"prior_ctr_{w}d")
            for w in WINDOWS
        ]
    )


def catalogue_context(counted: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The day's catalogue click-through rate per window, and each category's median price.

    Taken over the items listed by ``as_of`` (``counted``: their window counts), so a listing
    shown the next day (the training set's listing lag) is priced against the catalogue the
    day's feature version holds, as the ranking service prices a live listing
    (:func:`context_of_features` reads the same values back from the feature rows).
    """
    rates = catalogue_rates(counted)
    # the exact lower median (one of the category's prices), whatever the partitioning: an
    # approximate one differs between the nightly job and training's many days in one job
    medians = counted.groupBy("as_of", "category").agg(
        F.expr("percentile_disc(0.5) WITHIN GROUP (ORDER BY price)").alias("category_median_price")
    )
    return rates, medians


def context_of_features(items: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The catalogue context of a day's item feature rows, read back exactly.

    The rates are the same sums; each category's median is the price of its items whose
    relative price is exactly 1 (the median is one of the category's prices).
    """
    rates = catalogue_rates(items)
    medians = (
        items.where(F.col("item_price_rel_category") == 1.0)
        .groupBy("as_of", "category")
        .agg(F.min("item_price").alias("category_median_price"))
    )
    return rates, medians


def sold_at(events: DataFrame) -> DataFrame:
    """Return ``item_id, sold_ts``: the first purchase of every item (an item sells once)."""
    return (
        events.where(F.col("event_type") == "purchase")
        .groupBy("item_id")
        .agg(F.min("ts").alias("sold_ts"))
    )


def item_features(
    items: DataFrame,
    events: DataFrame,
    days: DataFrame,
    config: dict[str, Any],
    listing_lag_days: int = 0,
) -> DataFrame:
    """Return one row per ``as_of`` and listing live by ``as_of + listing_lag_days``.

    A lag of one day serves the training set: an impression day shows listings created that
    day, whose attributes are known at listing time while their counts are still zero.
    """
    listed = items.join(
        F.broadcast(days), F.col("ds") <= F.date_add(F.col("as_of"), listing_lag_days), how="inner"
    ).withColumn("_by_as_of", F.col("ds") <= F.col("as_of"))
    counts = item_window_counts(daily_item_counts(events), days)
    count_cols = [c for c in counts.columns if c not in ("as_of", "item_id")]
    counted = (
        listed.join(counts, on=["as_of", "item_id"], how="left")
        .fillna(0, subset=count_cols)
        .join(sold_at(events), on="item_id", how="left")
    )
    rates, medians = catalogue_context(counted.where(F.col("_by_as_of")))
    return feature_rows(counted, rates, medians, float(config["ctr_prior_weight"]))


def listing_features(
    listings: DataFrame, rates: DataFrame, medians: DataFrame, prior_weight: float
) -> DataFrame:
    """The item features of listings a day's feature version does not hold (``as_of`` given).

    What the training set gives a listing shown the day after ``as_of``: nothing counted,
    the catalogue's rates, priced against the day's catalogue; the skew check rebuilds the
    ranking service's live listings with it.
    """
    zero = F.lit(0).cast("long")
    counted = listings.select(
        "*",
        *[zero.alias(f"item_{name}_{w}d") for w in WINDOWS for name in COUNTED_TYPES],
        F.lit(None).cast("timestamp").alias("sold_ts"),
    )
    return feature_rows(counted, rates, medians, prior_weight)


def feature_rows(
    counted: DataFrame, rates: DataFrame, medians: DataFrame, prior_weight: float
) -> DataFrame:
    """Item feature rows from listed items' window counts and their day's catalogue context.

    Click-through rates are shrunk towards the catalogue's rate (stable for new items).
    """
    condition_rank = F.create_map(*[F.lit(x) for kv in CONDITION_RANK.items() for x in kv])
    sold_ts = F.col("sold_ts")
    out = counted.join(F.broadcast(rates), on="as_of", how="left").join(
        F.broadcast(medians), on=["as_of", "category"], how="left"
    )
    for w in WINDOWS:
        impressions, clicks = F.col(f"item_impressions_{w}d"), F.col(f"item_clicks_{w}d")
        prior = F.col(f"prior_ctr_{w}d")
        out = out.withColumn(
            f"item_ctr_{w}d", (clicks + prior * prior_weight) / (impressions + prior_weight)
        )
    return (
        out.withColumn(
            "item_age_days",
            F.greatest(
                F.lit(0.0),
                (day_end(F.col("as_of")).cast("double") - F.col("listed_ts").cast("double"))
                / 86400.0,
            ),
        )
        .withColumn("item_price", F.col("price"))
        .withColumn("item_price_rel_category", F.col("price") / F.col("category_median_price"))
        .withColumn("item_condition_rank", F.element_at(condition_rank, F.col("condition")))
        .withColumn("is_sold", sold_ts.isNotNull() & (sold_ts < day_end(F.col("as_of"))))
        .withColumn(
            "popularity",
            popularity({name: F.col(name) for name in ("item_clicks_7d", "item_saves_7d")}),
        )
        .select(
            "as_of",
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


def daily_interactions(events: DataFrame, items: DataFrame, gains: dict[str, float]) -> DataFrame:
    """Return clicks and positive actions weighted by gain, with the item's attributes."""
    weight = F.create_map(*[F.lit(x) for kv in gains.items() for x in kv])
    return (
        events.where(F.col("event_type").isin(*gains.keys()))
        .select(
            "user_id",
            "item_id",
            "ds",
            F.element_at(weight, F.col("event_type")).cast("double").alias("weight"),
        )
        .join(
            items.select("item_id", "category", "brand", "style", "size", "price"),
            on="item_id",
            how="inner",
        )
    )


def affinity_map(interactions: DataFrame, dimension: str) -> DataFrame:
    """Return ``as_of, user_id, {dimension}_affinity``: each value's share of the user's weight."""
    per_value = (
        interactions.where(F.col(dimension).isNotNull())
        .groupBy("as_of", "user_id", dimension)
        .agg(F.sum("weight").alias("w"))
    )
    share = F.col("w") / F.sum("w").over(Window.partitionBy("as_of", "user_id"))
    entries = F.collect_list(F.struct(F.col(dimension), F.col("share")))
    return (
        per_value.withColumn("share", share)
        .groupBy("as_of", "user_id")
        .agg(F.map_from_entries(entries).alias(f"{dimension}_affinity"))
    )


def user_features(
    users: DataFrame, events: DataFrame, items: DataFrame, days: DataFrame, config: dict[str, Any]
) -> DataFrame:
    """Return one row per ``as_of`` and user signed up by then: activity, price band, affinities."""
    history_days = int(config["history_days"])
    known = users.join(F.broadcast(days), F.col("ds") <= F.col("as_of"), how="inner").drop("ds")
    daily = events.groupBy("user_id", "ds").agg(
        F.sum((F.col("event_type") == "impression").cast("long")).alias("impressions"),
        F.sum((F.col("event_type") == "click").cast("long")).alias("clicks"),
        F.sum(F.col("event_type").isin(*POSITIVE_TYPES).cast("long")).alias("positives"),
        F.max("ts").alias("last_ts"),
    )
    activity = (
        history_for(daily, days, history_days)
        .groupBy("as_of", "user_id")
        .agg(
            F.sum("impressions").alias("user_impressions_28d"),
            F.sum("clicks").alias("user_clicks_28d"),
            F.sum("positives").alias("user_positives_28d"),
            F.count("*").alias("user_active_days_28d"),
            F.max("last_ts").alias("last_event_ts"),
        )
    )
    interactions = history_for(
        daily_interactions(events, items, config["gains"]), days, history_days
    ).cache()
    price_band = interactions.groupBy("as_of", "user_id").agg(
        F.mean(F.log(F.col("price"))).alias("user_log_price_mean")
    )
    activity_cols = [
        "user_impressions_28d",
        "user_clicks_28d",
        "user_positives_28d",
        "user_active_days_28d",
    ]
    out = (
        known.withColumnRenamed("size", "declared_size")
        .join(activity, on=["as_of", "user_id"], how="left")
        .fillna(0, subset=activity_cols)
        .join(price_band, on=["as_of", "user_id"], how="left")
        .withColumn(
            "user_days_since_signup",
            (day_end(F.col("as_of")).cast("double") - F.col("signup_ts").cast("double")) / 86400.0,
        )
    )
    for dimension in AFFINITY_DIMENSIONS:
        out = out.join(affinity_map(interactions, dimension), on=["as_of", "user_id"], how="left")
    return out.select(
        "as_of",
        "user_id",
        "country",
        "declared_size",
        "last_event_ts",
        *USER_FEATURES,
        *[f"{d}_affinity" for d in AFFINITY_DIMENSIONS],
    )


def seen_pairs(
    events: DataFrame, days: DataFrame, history_days: int, only: DataFrame | None = None
) -> DataFrame:
    """Return ``as_of, user_id, item_id, seen_before, clicked_before`` over the history window.

    ``only`` (``user_id, item_id`` pairs) restricts the work to the pairs that will be joined.
    """
    shown = events.where(F.col("event_type").isin("impression", "click"))
    if only is not None:
        shown = shown.join(
            only.select("user_id", "item_id").distinct(), on=["user_id", "item_id"], how="left_semi"
        )
    daily = shown.groupBy("user_id", "item_id", "ds").agg(
        F.sum((F.col("event_type") == "impression").cast("long")).alias("impressions"),
        F.sum((F.col("event_type") == "click").cast("long")).alias("clicks"),
    )
    # hash-partitioned by user (this shuffle replaces the aggregation's own): each written
    # file holds whole users (sorted by lake.tables.write_features), so the materialisation
    # reads histories from the files directly
    return (
        history_for(daily, days, history_days)
        .repartition("user_id")
        .groupBy("as_of", "user_id", "item_id")
        .agg(F.sum("impressions").alias("seen_before"), F.sum("clicks").alias("clicked_before"))
    )


def build_features(
    events: DataFrame,
    items: DataFrame,
    users: DataFrame,
    as_of_days: list[date],
    config: dict[str, Any],
    listing_lag_days: int = 0,
    only_pairs: DataFrame | None = None,
) -> FeatureFrames:
    """Build item, user and seen-pair features from bronze tables as of each day's end."""
    features_config = {**config["features"], "gains": config["labels"]["gains"]}
    days = calendar(events.sparkSession, as_of_days)
    history_days = int(features_config["history_days"])
    return FeatureFrames(
        items=item_features(items, events, days, features_config, listing_lag_days),
        users=user_features(users, events, items, days, features_config),
        seen=seen_pairs(events, days, history_days, only_pairs),
    )

"""The model inputs, declared once and in order: the training set and the scorer select these."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column

# the windows, in days, of the item and user counts
WINDOWS = (1, 7, 28)

# Model inputs, in order. The training set and the scorer select exactly these columns.
ITEM_FEATURES = [
    *[f"item_{name}_{w}d" for w in WINDOWS for name in ("impressions", "clicks", "saves")],
    "item_bags_28d",
    "item_purchases_28d",
    *[f"item_ctr_{w}d" for w in WINDOWS],
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


def feature_vector() -> list[Column]:
    """Return the model input columns, in order, as doubles (null stays null -> NaN)."""
    from pyspark.sql import functions as F

    return [F.col(name).cast("double").alias(name) for name in MODEL_FEATURES]


def popularity(counts: Mapping[str, Any]) -> Any:
    """An item's popularity: its clicks plus twice its saves over 7 days.

    One formula for every caller: ``counts`` maps the two count names to Spark columns (the
    features step) or to pandas/numpy columns (the offline baseline), and the result is of the
    same kind.
    """
    return counts["item_clicks_7d"] + 2.0 * counts["item_saves_7d"]


def by_popularity() -> list[Column]:
    """The order of "most popular first": popularity, then the newest listing, then item id."""
    from pyspark.sql import functions as F

    return [F.col("popularity").desc(), F.col("listed_ts").desc(), F.col("item_id")]

"""User x item features, computed when a user meets a candidate (affinities, fit, seen before)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from rankflow.features.batch import FeatureFrames

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def with_cross_features(pairs: DataFrame, features: FeatureFrames) -> DataFrame:
    """Join features to ``as_of, user_id, item_id`` pairs and derive the user x item features."""

    def affinity(dimension: str) -> Column:
        return F.coalesce(
            F.element_at(F.col(f"{dimension}_affinity"), F.col(dimension)), F.lit(0.0)
        )

    return (
        pairs.join(features.items, on=["as_of", "item_id"], how="left")
        .join(features.users, on=["as_of", "user_id"], how="left")
        .join(features.seen, on=["as_of", "user_id", "item_id"], how="left")
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

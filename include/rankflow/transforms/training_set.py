"""Training set: impressions as query groups, graded labels, features of the day before."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from rankflow.days import day
from rankflow.features.batch import build_features
from rankflow.features.on_demand import with_cross_features
from rankflow.features.registry import MODEL_FEATURES

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def on_days(days: list[date]) -> Column:
    """Return a filter keeping rows whose ``ds`` is one of ``days``."""
    return F.col("ds").isin(*[day(d) for d in days])


def impressions_of(events: DataFrame, days: list[date]) -> DataFrame:
    """Return the impressions shown on ``days``: one row per (day, session, item)."""
    return (
        events.where(on_days(days) & (F.col("event_type") == "impression"))
        .groupBy("ds", "session_id", "item_id")
        .agg(
            F.first("user_id").alias("user_id"),
            F.first("surface").alias("surface"),
            F.min("position").alias("position"),
        )
    )


def graded_labels(events: DataFrame, days: list[date], gains: dict[str, float]) -> DataFrame:
    """Return ``ds, session_id, item_id, label``: the gain of the strongest action that followed."""
    gain = F.create_map(*[F.lit(x) for kv in gains.items() for x in kv])
    return (
        events.where(on_days(days) & F.col("event_type").isin(*gains.keys()))
        .groupBy("ds", "session_id", "item_id")
        .agg(F.max(F.element_at(gain, F.col("event_type")).cast("double")).alias("label"))
    )


def with_labels(impressions: DataFrame, labels: DataFrame) -> DataFrame:
    """Attach labels to impressions; an impression nothing followed gets label 0."""
    return impressions.join(labels, on=["ds", "session_id", "item_id"], how="left").fillna(
        0.0, subset=["label"]
    )


def build_training_set(
    events: DataFrame, items: DataFrame, users: DataFrame, days: list[date], config: dict[str, Any]
) -> DataFrame:
    """Return the labelled impressions of ``days``, each joined to features as of the day before."""
    gains = config["labels"]["gains"]
    labelled = with_labels(impressions_of(events, days), graded_labels(events, days, gains))
    labelled = labelled.withColumn("as_of", F.date_sub(F.col("ds"), 1))
    features = build_features(
        events,
        items,
        users,
        [date.fromordinal(d.toordinal() - 1) for d in days],
        config,
        listing_lag_days=1,
        only_pairs=labelled,
    )
    return with_cross_features(labelled, features).select(
        F.col("session_id").alias("qid"),
        "user_id",
        "item_id",
        "surface",
        "position",
        "label",
        *MODEL_FEATURES,
        F.col("as_of").alias("features_as_of"),
        "ds",
    )

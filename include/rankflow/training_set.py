"""Training set of one day: its impressions as query groups, graded labels, earlier features."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from rankflow.features import MODEL_FEATURES, build_features, with_cross_features

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

LABEL_EVENT_TYPES = ("click", "like", "save", "add_to_bag", "purchase")


def impressions_of(events: DataFrame, ds: date) -> DataFrame:
    """Return the impressions shown on ``ds``: one row per (session, item)."""
    from pyspark.sql import functions as F

    return (
        events.where((F.col("ds") == F.lit(ds.isoformat()).cast("date")))
        .where(F.col("event_type") == "impression")
        .groupBy("session_id", "item_id")
        .agg(
            F.first("user_id").alias("user_id"),
            F.first("surface").alias("surface"),
            F.min("position").alias("position"),
            F.min("ts").alias("impression_ts"),
        )
    )


def graded_labels(events: DataFrame, ds: date, gains: dict[str, float]) -> DataFrame:
    """Return ``session_id, item_id, label``: the gain of the strongest action that followed."""
    from pyspark.sql import functions as F

    gain = F.create_map(*[F.lit(x) for kv in gains.items() for x in kv])
    return (
        events.where(F.col("ds") == F.lit(ds.isoformat()).cast("date"))
        .where(F.col("event_type").isin(*gains.keys()))
        .groupBy("session_id", "item_id")
        .agg(F.max(F.element_at(gain, F.col("event_type")).cast("double")).alias("label"))
    )


def with_labels(impressions: DataFrame, labels: DataFrame) -> DataFrame:
    """Attach labels to impressions; an impression nothing followed gets label 0."""
    return impressions.join(labels, on=["session_id", "item_id"], how="left").fillna(
        0.0, subset=["label"]
    )


def build_training_set(
    events: DataFrame, items: DataFrame, users: DataFrame, ds: date, config: dict[str, Any]
) -> DataFrame:
    """Return the labelled impressions of ``ds`` joined to features as of the day before."""
    from pyspark.sql import functions as F

    as_of = ds - timedelta(days=1)
    features = build_features(events, items, users, as_of, config, listed_by=ds)
    labelled = with_labels(
        impressions_of(events, ds), graded_labels(events, ds, config["labels"]["gains"])
    )
    return with_cross_features(labelled, features).select(
        F.col("session_id").alias("qid"),
        "user_id",
        "item_id",
        "surface",
        "position",
        "label",
        *MODEL_FEATURES,
        F.lit(as_of.isoformat()).cast("date").alias("features_as_of"),
        F.lit(ds.isoformat()).cast("date").alias("ds"),
    )

"""Training set: impressions as query groups, graded labels, features of the day before."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from rankflow.days import day
from rankflow.features.batch import build_features
from rankflow.features.on_demand import with_cross_features
from rankflow.features.registry import MODEL_FEATURES, STREAM_FEATURES, STREAM_LAG_SECONDS

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
            F.min("ts").alias("shown_at"),
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
    labelled = (
        with_stream_features(labelled, events, items, days, config)
        if stream_features_on(config)
        else labelled.select("*", *[F.lit(None).cast("float").alias(n) for n in STREAM_FEATURES])
    )
    return with_cross_features(labelled, features).select(
        F.col("session_id").alias("qid"),
        "user_id",
        "item_id",
        "surface",
        "position",
        "label",
        *MODEL_FEATURES,
        *STREAM_FEATURES,
        F.col("as_of").alias("features_as_of"),
        "ds",
    )


def stream_features_on(config: dict[str, Any]) -> bool:
    """Whether the training set and the model include the stream features (``training``)."""
    return bool(config["training"].get("stream_features", False))


def with_stream_features(
    labelled: DataFrame,
    events: DataFrame,
    items: DataFrame,
    days: list[date],
    config: dict[str, Any],
) -> DataFrame:
    """Add each impression's stream features as of its list's request, minus the declared lag.

    A list (query group) was requested when its first item was shown: every row of the group
    gets the features as of that moment, as the ranking service computed them for the whole
    list (a click on the first items must not leak into the features of the later ones). The
    events of the day before count too (a session window crosses midnight).
    """
    from pyspark.sql import Window

    from rankflow.features.stream import backfill

    requested = F.min("shown_at").over(Window.partitionBy("ds", "session_id"))
    queries = labelled.withColumn("request_ms", F.unix_millis(requested))
    before = [min(days) - timedelta(days=1), *days]
    return backfill(
        events.where(on_days(before)),
        items,
        queries,
        lag_seconds=STREAM_LAG_SECONDS,
        window_ms=int(config["stream"]["session_window_seconds"]) * 1000,
    ).drop("request_ms")

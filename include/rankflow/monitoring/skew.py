"""The skew check: what the ranking service served equals what its model was trained on.

For a day's sampled answers (``bronze/served`` rows that carry model inputs), every scored
candidate's input row is rebuilt offline from the Delta commit its feature version was
materialised from, through the same join and on-demand function as the training set
(:func:`rankflow.features.on_demand.with_cross_features`); a live listing the version lacks is
read from bronze (where the stream landed it) and given the training set's row of a listing
newer than its feature day. Per feature it counts mismatched
values (both present, different), missing ones (offline has a value, the service had none) and
extra ones (the reverse), and the SMAPE; the rebuilt rows are re-scored with the logged model
version, and every score must equal the logged one bit for bit and every answer's ranked head
must hold the same items in the same order. Only aggregates reach the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from rankflow.features.registry import MODEL_FEATURES, STREAM_FEATURES

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from rankflow.config import Settings

# the features compared, in the order of the replayed status arrays
COMPARED = (*MODEL_FEATURES, *STREAM_FEATURES)
# per registry feature and replayed row: how the served value compares with the rebuilt one
EQUAL, MISMATCH, MISSING, EXTRA, UNUSED = 0, 1, 2, 3, 4
REPLAY_SCHEMA = (
    "request_id string, item_id long, offline_score float, score_equal boolean, "
    "status array<tinyint>, smape array<float>"
)


def compare_values(online: np.ndarray, offline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: the status code and the SMAPE term (NaN unless both sides have a value)."""
    on_missing, off_missing = np.isnan(online), np.isnan(offline)
    both = ~on_missing & ~off_missing
    status = np.full(online.shape, EQUAL, np.int8)
    status[both & (online != offline)] = MISMATCH
    status[on_missing & ~off_missing] = MISSING
    status[~on_missing & off_missing] = EXTRA
    scale = (np.abs(online) + np.abs(offline)) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(scale > 0, np.abs(online - offline) / scale, 0.0)
    return status, np.where(both, term, np.nan).astype(np.float32)


def replay_frame(booster: Any, part: pd.DataFrame) -> pd.DataFrame:
    """Re-score one model's rebuilt rows and compare them with the served rows."""
    import pandas as pd

    from rankflow.model.fit import model_inputs

    names = list(booster.feature_names or MODEL_FEATURES)
    offline = model_inputs(booster, part)
    raw = part["online"].tolist()
    if any(len(row) != 4 * len(names) for row in raw):
        raise ValueError(f"served input rows are not {len(names)} float32 values wide")
    online = np.frombuffer(b"".join(raw), "<f4").reshape(len(raw), len(names))
    scores = np.asarray(booster.inplace_predict(offline), np.float32)
    served = part["online_score"].to_numpy(np.float32)
    used = [(j, names.index(name)) for j, name in enumerate(COMPARED) if name in names]
    status = np.full((len(part), len(COMPARED)), UNUSED, np.int8)
    smape = np.full(status.shape, np.nan, np.float32)
    if used:
        registry_at, model_at = (list(t) for t in zip(*used, strict=True))
        status[:, registry_at], smape[:, registry_at] = compare_values(
            online[:, model_at], offline[:, model_at]
        )
    return pd.DataFrame(
        {
            "request_id": part["request_id"].to_numpy(),
            "item_id": part["item_id"].to_numpy(np.int64),
            "offline_score": scores,
            "score_equal": scores.view(np.uint32) == served.view(np.uint32),
            "status": list(status),
            "smape": list(smape),
        }
    )


def make_replayer(
    models: dict[str, bytes],
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Build the ``mapInPandas`` task; the logged models' bytes travel inside it."""

    def replay(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from rankflow.model.fit import booster_from_bytes

        boosters: dict[str, Any] = {}
        for batch in batches:
            for version, part in batch.groupby("model_version", sort=False):
                key = str(version)
                if key not in boosters:
                    boosters[key] = booster_from_bytes(models[key], nthread=1)
                yield replay_frame(boosters[key], part)

    return replay


@dataclass
class SkewReport:
    """The day's figures: per feature rates and SMAPE, score and top-K parity."""

    answers: int = 0  # every logged answer of the day
    fallbacks: int = 0
    sampled: int = 0  # model answers that logged their inputs
    replayed: int = 0  # ... whose feature version and model could be found
    unreplayable: int = 0
    rows: int = 0
    score_parity: float | None = None  # share of rows whose score is bit-identical
    topk_parity: float | None = None  # share of answers whose ranked head is identical
    features: dict[str, dict[str, float]] = field(default_factory=dict)
    mismatched_features: list[str] = field(default_factory=list)
    feature_versions: list[str] = field(default_factory=list)
    model_versions: list[str] = field(default_factory=list)


def rebuilt_rows(
    spark: SparkSession, settings: Settings, sampled: DataFrame, feature_version: str
) -> DataFrame:
    """One row per scored candidate of ``sampled``, with the served row and the rebuilt features."""
    from pyspark.sql import functions as F

    from rankflow.features.on_demand import with_cross_features
    from rankflow.features.registry import feature_vector
    from rankflow.lake.tables import read_features
    from rankflow.publish.features import snapshot_location
    from rankflow.serving.snapshot import snapshot_source

    source = snapshot_source(snapshot_location(settings, feature_version))
    if not source:
        raise LookupError(f"feature version {feature_version} records no Delta source")
    features_day = date.fromisoformat(source["ds"])
    frames = read_features(spark, settings, features_day, source["delta_versions"])
    rows = sampled.select(
        "request_id",
        "user_id",
        "model_version",
        F.posexplode("scored_ids").alias("at", "item_id"),
        "scored_scores",
        "inputs",
        (F.length("inputs") / F.size("scored_ids")).cast("int").alias("width"),  # bytes per row
        "stream_cutoff_ms",
    ).select(
        F.lit(features_day.isoformat()).cast("date").alias("as_of"),
        "request_id",
        "user_id",
        "item_id",
        "model_version",
        F.element_at("scored_scores", F.col("at") + 1).alias("online_score"),
        F.expr("substring(inputs, at * width + 1, width)").alias("online"),
        "stream_cutoff_ms",
    )
    frames = replace(frames, items=with_live_listings(spark, settings, frames.items, rows))
    joined = with_replayed_stream(spark, settings, with_cross_features(rows, frames))
    return joined.select(
        "request_id", "item_id", "model_version", "online_score", "online", *feature_vector(),
        *STREAM_FEATURES,
    )  # fmt: skip


def with_live_listings(
    spark: SparkSession, settings: Settings, items: DataFrame, rows: DataFrame
) -> DataFrame:
    """The feature day's item rows, and the served listings it lacks as training gives them.

    The ranking service scores a listing its snapshot lacks from the listing record and the
    snapshot's context; offline, the listing is read from bronze (where the stream landed it)
    and given the training set's row of a listing newer than its feature day
    (:func:`rankflow.features.batch.listing_features`, against the day's catalogue).
    """
    from pyspark.sql import functions as F

    from rankflow.features.batch import context_of_features, listing_features
    from rankflow.lake.tables import bronze

    _, listed, _ = bronze(spark, settings)
    lacking = (
        rows.select("as_of", "item_id").distinct().join(items, ["as_of", "item_id"], "left_anti")
    )
    # listed after the feature day (the version holds the rest), once per item as ingest keeps it
    listings = (
        listed.join(lacking, "item_id")
        .where(F.col("ds") > F.col("as_of"))
        .dropDuplicates(["as_of", "item_id"])
        .drop("ds")
    )
    rates, medians = context_of_features(items)
    weight = float(settings.pipeline["features"]["ctr_prior_weight"])
    rebuilt = listing_features(listings, rates, medians, weight)
    return items.unionByName(rebuilt, allowMissingColumns=True)


def with_replayed_stream(spark: SparkSession, settings: Settings, rows: DataFrame) -> DataFrame:
    """Add each row's stream features as of its logged cutoff, rebuilt from bronze events.

    The point-in-time backfill the training set uses (:mod:`rankflow.features.stream`), over
    the events of the cutoffs' days and the day before, asked at the request time the cutoff
    was derived from. Rows of models without stream features (no cutoff) get NaN.
    """
    from datetime import UTC, datetime

    from pyspark.sql import functions as F

    from rankflow.days import in_days
    from rankflow.features.registry import STREAM_LAG_SECONDS
    from rankflow.features.stream import backfill
    from rankflow.lake.tables import bronze

    missing = [F.lit(float("nan")).cast("float").alias(n) for n in STREAM_FEATURES]
    span = rows.agg(F.min("stream_cutoff_ms"), F.max("stream_cutoff_ms")).first()
    if span is None or span[0] is None:
        return rows.select("*", *missing)
    window_ms = int(settings.pipeline["stream"]["session_window_seconds"]) * 1000
    first, last = (
        datetime.fromtimestamp(ms / 1000, UTC).date() for ms in (span[0] - window_ms, span[1])
    )
    events, items, _ = bronze(spark, settings)
    asked = rows.where(F.col("stream_cutoff_ms").isNotNull()).withColumn(
        "request_ms", F.col("stream_cutoff_ms") + STREAM_LAG_SECONDS * 1000
    )
    rebuilt = backfill(
        events.where(in_days(first, last)),
        items,
        asked,
        lag_seconds=STREAM_LAG_SECONDS,
        window_ms=window_ms,
    ).drop("request_ms")
    return rebuilt.unionByName(rows.where(F.col("stream_cutoff_ms").isNull()).select("*", *missing))


def check_skew(spark: SparkSession, settings: Settings, served: DataFrame) -> SkewReport:
    """Replay a day's sampled answers (``bronze/served`` rows) offline and compare."""
    from pyspark.sql import functions as F

    from rankflow.model.registry import ModelNotFoundError, load_model

    report = SkewReport()
    totals = served.agg(
        F.count("*").alias("answers"),
        F.count(F.when(F.col("fallback"), 1)).alias("fallbacks"),
        F.count(F.when(~F.col("fallback") & F.col("inputs").isNotNull(), 1)).alias("sampled"),
    ).first()
    if totals is not None:
        report.answers, report.fallbacks, report.sampled = (int(totals[i] or 0) for i in range(3))
    sampled = served.where(~F.col("fallback") & F.col("inputs").isNotNull())
    pairs = sampled.select("feature_version", "model_version").distinct().collect()
    models: dict[str, bytes] = {}
    parts: list[DataFrame] = []
    for feature_version in sorted({str(p[0]) for p in pairs}):
        try:
            parts.append(rebuilt_rows(spark, settings, sampled.where(
                F.col("feature_version") == feature_version), feature_version))  # fmt: skip
            report.feature_versions.append(feature_version)
        except (LookupError, FileNotFoundError, OSError):
            report.unreplayable += sampled.where(
                F.col("feature_version") == feature_version
            ).count()
    for model_version in sorted({str(p[1]) for p in pairs}):
        try:
            models[model_version] = load_model(settings, model_version)[0]
            report.model_versions.append(model_version)
        except ModelNotFoundError:  # deleted from the registry: its answers cannot be replayed
            report.unreplayable += sampled.where(
                (F.col("model_version") == model_version)
                & F.col("feature_version").isin(report.feature_versions)
            ).count()
    report.replayed = report.sampled - report.unreplayable
    if not parts or not models:
        return report
    rows = parts[0]
    for part in parts[1:]:
        rows = rows.unionByName(part)
    rows = rows.where(F.col("model_version").isin(list(models)))
    replayed = rows.mapInPandas(make_replayer(models), REPLAY_SCHEMA).persist()
    try:
        report.rows, report.score_parity = score_figures(replayed)
        report.features = feature_figures(replayed)
        report.topk_parity = topk_parity(replayed, sampled)
    finally:
        replayed.unpersist()
    report.mismatched_features = sorted(
        name
        for name, figures in report.features.items()
        if figures["mismatch_rate"] or figures["missing_rate"] or figures["extra_rate"]
    )
    return report


def score_figures(replayed: DataFrame) -> tuple[int, float | None]:
    """Rows replayed and the share whose score is bit-identical."""
    from pyspark.sql import functions as F

    row = replayed.agg(
        F.count("*").alias("rows"), F.count(F.when(F.col("score_equal"), 1)).alias("equal")
    ).first()
    rows = int(row["rows"] or 0) if row else 0
    return rows, (int(row["equal"]) / rows if row and rows else None)


def feature_figures(replayed: DataFrame) -> dict[str, dict[str, float]]:
    """Per registry feature the model reads: mismatch, missing and extra rates, and SMAPE."""
    from pyspark.sql import functions as F

    cells = replayed.select(F.posexplode(F.arrays_zip("status", "smape")).alias("j", "cell"))
    status, smape = F.col("cell.status"), F.col("cell.smape")
    per_feature = (
        cells.where(status != UNUSED)
        .groupBy("j")
        .agg(
            F.count("*").alias("rows"),
            F.count(F.when(status == MISMATCH, 1)).alias("mismatch"),
            F.count(F.when(status == MISSING, 1)).alias("missing"),
            F.count(F.when(status == EXTRA, 1)).alias("extra"),
            F.avg(F.when(~F.isnan(smape), smape)).alias("smape"),
        )
        .collect()
    )
    figures = {}
    for row in per_feature:
        rows = int(row["rows"])
        figures[COMPARED[int(row["j"])]] = {
            "rows": rows,
            "mismatch_rate": int(row["mismatch"]) / rows,
            "missing_rate": int(row["missing"]) / rows,
            "extra_rate": int(row["extra"]) / rows,
            "smape": float(row["smape"] or 0.0),
        }
    return figures


def topk_parity(replayed: DataFrame, sampled: DataFrame) -> float | None:
    """Share of answers whose ranked head, ordered by the rebuilt scores, is the one served.

    The service orders by score, then by smaller item id; the served head is the answer's
    scored items (its ``scores``), before any unknown candidates.
    """
    from pyspark.sql import functions as F

    offline = replayed.groupBy("request_id").agg(
        F.sort_array(F.collect_list(F.struct((-F.col("offline_score")).alias("s"), "item_id")))
        .getField("item_id")
        .alias("offline_order")
    )
    served = sampled.select(
        "request_id", F.slice("item_ids", 1, F.size("scores")).alias("served_head")
    )
    compared = served.join(offline, "request_id").select(
        (F.slice("offline_order", 1, F.size("served_head")) == F.col("served_head")).alias("same")
    )
    row = compared.agg(
        F.count("*").alias("answers"), F.count(F.when(F.col("same"), 1)).alias("same")
    ).first()
    return int(row["same"]) / int(row["answers"]) if row and row["answers"] else None

"""Step ``train``: fit the LambdaMART ranker on the training window, register it in MLflow."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow import host
from rankflow.config import Settings
from rankflow.days import in_days
from rankflow.features.registry import MODEL_FEATURES
from rankflow.lake.tables import read_table, table_versions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from rankflow.model.fit import LocalRows, TrainingData, TrainingWindow
    from rankflow.model.spark_engine import PartitionedRows

KEY_COLUMNS = ("ds", "qid", "user_id", "item_id", "position", "label")

# the variant fitted like the model but without the stream features (training.stream_features)
WITHOUT_STREAM = "without_stream_features"

# The local engine's driver memory per training row: the collected frame, its sorted copy and
# XGBoost's matrix. Measured 976 B at 100k users (the train days' 922,860 clicked rows, peak RSS
# of the collection and the DMatrix over the RSS before them); rounded up.
LOCAL_ENGINE_BYTES_PER_ROW = 1024


class TrainingTooLarge(RuntimeError):
    """The local engine's rows would not fit in this machine's memory (raised before collecting)."""


def training_rows(
    spark: SparkSession,
    settings: Settings,
    start: date,
    end: date,
    version: int | None = None,
    clicked_only: bool = False,
    features: Sequence[str] = MODEL_FEATURES,
) -> Any:
    """Collect the training rows of ``[start, end]`` as pandas, sorted by query group.

    ``version`` pins the Delta version of the training set (time travel): the lineage of a model
    records it, and reproducing the model reads exactly those rows again. ``clicked_only``
    keeps the query groups with a click (:func:`groups_with_clicks`); ``features`` are the
    feature columns read.
    """
    from rankflow.model.fit import sort_by_query

    rows = window_rows(spark, settings, start, end, version, clicked_only)
    return sort_by_query(rows.select(*collected_columns(features)).toPandas())


def window_rows(
    spark: SparkSession,
    settings: Settings,
    start: date,
    end: date,
    version: int | None,
    clicked_only: bool,
) -> Any:
    """The training set's rows of ``[start, end]`` at ``version``, as a Spark frame."""
    table = read_table(spark, settings, "silver/training_set", version)
    rows = table.where(in_days(start, end))
    return groups_with_clicks(rows) if clicked_only else rows


def groups_with_clicks(rows: Any) -> Any:
    """Keep the query groups in which something was clicked (a positive label).

    LambdaMART learns from pairs of differently labelled items: a group whose labels are all 0
    gives no pair, hence no gradient, to any of the debiasing variants. Such groups (about 40%
    in the simulated marketplace) only cost fitting time, and in the validation rows they flatten
    early stopping's curve (XGBoost's ``ndcg@k`` scores them 1). The held-out evaluation leaves
    them out as well (``evaluation.ndcg_empty: skip``). The groups with a click are few enough
    to broadcast, so the rows are not shuffled.
    """
    from pyspark.sql import functions as F

    clicked = (
        rows.groupBy("ds", "qid")
        .agg(F.max("label").alias("top_label"))
        .where(F.col("top_label") > 0)
        .select("ds", "qid")
    )
    return rows.join(F.broadcast(clicked), ["ds", "qid"], "left_semi")


def clicked_groups_only(config: dict[str, Any]) -> bool:
    """Whether training skips the groups without a click (``training.groups_without_clicks``).

    A lineage from before the setting existed trained on every group: its reproduction must too.
    """
    setting = str(config.get("groups_without_clicks", "keep"))
    if setting not in ("skip", "keep"):
        raise ValueError(f"training.groups_without_clicks must be skip or keep, got {setting!r}")
    return setting == "skip"


def collected_columns(features: Sequence[str]) -> list[Any]:
    """The training columns with features and labels as float32, as XGBoost stores them.

    Casting before the collection halves what reaches the driver (the table holds doubles and
    longs) and gives the same values XGBoost's own float32 conversion would.
    """
    from pyspark.sql import functions as F

    floats = {"label", *features}
    return [
        F.col(c).cast("float").alias(c) if c in floats else F.col(c)
        for c in (*KEY_COLUMNS, *features)
    ]


def trained_features(config: dict[str, Any]) -> list[str]:
    """The feature columns a training config fits on (before any debiasing column)."""
    from rankflow.model.fit import model_features, uses_stream_features

    return model_features("none", uses_stream_features(config))


def require_stream_features(
    spark: SparkSession, settings: Settings, window: TrainingWindow, version: int
) -> None:
    """Refuse to fit stream features on training rows built without them (null columns).

    Raises:
        ValueError: a day of the window was built with ``training.stream_features`` off.
    """
    from pyspark.sql import functions as F

    rows = window_rows(spark, settings, window.train_start, window.validation_end, version, False)
    missing = rows.where(F.col("today_impressions").isNull()).select("ds").distinct().collect()
    if missing:
        days = ", ".join(sorted(row["ds"].isoformat() for row in missing))
        raise ValueError(
            f"training.stream_features is on but the training set of {days} was built without "
            "them: rebuild those days (rankflow run training_set --start ... --ds ...)"
        )


def local_rows(
    spark: SparkSession,
    settings: Settings,
    ds: date | None,
    window: TrainingWindow,
    version: int,
    clicked_only: bool,
    features: Sequence[str] = MODEL_FEATURES,
) -> LocalRows:
    """The window's rows collected to this process (``local`` engine), gated when ``ds``."""
    from rankflow.model.fit import LocalRows

    check_driver_room(spark, settings, window, version, clicked_only, len(features))
    train = training_rows(
        spark, settings, window.train_start, window.train_end, version, clicked_only, features
    )
    validation = training_rows(
        spark, settings, window.validation_start, window.validation_end, version, clicked_only,
        features,
    )  # fmt: skip
    if train.empty or validation.empty:
        raise no_rows_error(window)
    if ds is not None:
        training_set_gate(settings, ds, train, features)
    return LocalRows(train, validation)


def check_driver_room(
    spark: SparkSession,
    settings: Settings,
    window: TrainingWindow,
    version: int,
    clicked_only: bool,
    features: int = len(MODEL_FEATURES),
) -> None:
    """Refuse to collect a window the driver cannot hold, saying how much memory it needs.

    The window's row count without the click filter is cheap (Parquet footers) and bounds what
    is collected; only when that bound does not fit are the clicked groups' rows counted.
    ``features`` (the columns fitted on) scales the measured bytes per row.

    Raises:
        TrainingTooLarge: the rows need more than the memory available to new work.
    """
    available = host.available_memory_bytes()
    if available is None:
        return
    start, end = window.train_start, window.validation_end
    rows = window_rows(spark, settings, start, end, version, clicked_only=False).count()
    per_row = bytes_per_row(features)
    if clicked_only and rows * per_row > available:
        rows = window_rows(spark, settings, start, end, version, clicked_only=True).count()
    message = driver_shortfall(rows, available, per_row)
    if message:
        raise TrainingTooLarge(f"{message} (training window {start} to {end})")


def bytes_per_row(features: int) -> int:
    """The local engine's driver memory per row with ``features`` feature columns.

    Measured with the batch features; scaled by the columns held.
    """
    return (
        LOCAL_ENGINE_BYTES_PER_ROW
        * (features + len(KEY_COLUMNS))
        // (len(MODEL_FEATURES) + len(KEY_COLUMNS))
    )


def driver_shortfall(
    rows: int, available: int, per_row: int = LOCAL_ENGINE_BYTES_PER_ROW
) -> str | None:
    """Why the local engine cannot hold ``rows`` in ``available`` bytes, or None when it can."""
    needed = rows * per_row
    if needed <= available:
        return None
    return (
        f"the local training engine collects {rows:,} rows to this process and needs about "
        f"{host.gib(needed)} of memory, {host.gib(available)} available: set "
        "training.engine: spark to fit on the executors, or shorten training.train_days"
    )


def spark_rows(
    spark: SparkSession,
    settings: Settings,
    ds: date | None,
    window: TrainingWindow,
    version: int,
    workers: int,
    clicked_only: bool,
    features: Sequence[str] = MODEL_FEATURES,
) -> PartitionedRows:
    """The window's rows left on the executors (``spark`` engine), partitioned by query group.

    Groups are ``(ds, qid)``, numbered in a fixed hashed order; a group's rows keep the shown
    order (``spark_engine.with_query_index``, ``ranking_partitions``). The rows stay persisted
    (``release`` frees them): the gate and every fit read them. With ``ds`` the gate runs (a
    reproduction reads rows that passed it when the model was trained).
    """
    from pyspark.sql import functions as F

    from rankflow.days import day
    from rankflow.model.spark_engine import (
        VALIDATION,
        PartitionedRows,
        ranking_partitions,
        with_query_index,
    )

    rows = (
        window_rows(
            spark, settings, window.train_start, window.validation_end, version, clicked_only
        )
        .select(*KEY_COLUMNS, *features)
        .withColumn(VALIDATION, F.col("ds") >= day(window.validation_start))
    )
    frame = ranking_partitions(
        with_query_index(rows, ["ds", "qid"]), workers, ["position", "item_id"]
    )
    counts = frame.groupBy(VALIDATION).agg(F.count(F.lit(1)).alias("rows"))
    by_flag = {bool(row[VALIDATION]): row for row in counts.collect()}
    if set(by_flag) != {False, True}:
        frame.unpersist()
        raise no_rows_error(window)
    partitioned = PartitionedRows(
        frame, workers, int(by_flag[False]["rows"]), int(by_flag[True]["rows"])
    )
    if ds is not None:
        try:
            spark_training_set_gate(settings, ds, partitioned, features)
        except Exception:
            frame.unpersist()
            raise
    return partitioned


def training_data(
    spark: SparkSession,
    settings: Settings,
    ds: date | None,
    window: TrainingWindow,
    version: int,
    config: dict[str, Any],
    workers: int | None = None,
) -> TrainingData:
    """The window's rows for the configured engine (``training.engine``), gated when ``ds``.

    ``workers`` fixes the spark engine's worker count (a reproduction uses the model's); by
    default it is ``training.spark_workers`` (0: every task slot of the cluster).
    """
    from rankflow.model.spark_engine import training_engine, worker_count

    clicked_only = clicked_groups_only(config)
    features = trained_features(config)
    if len(features) > len(MODEL_FEATURES):
        require_stream_features(spark, settings, window, version)
    if training_engine(config) == "local":
        return local_rows(spark, settings, ds, window, version, clicked_only, features)
    requested = int(config.get("spark_workers", 0)) if workers is None else workers
    count = worker_count(spark, requested)
    return spark_rows(spark, settings, ds, window, version, count, clicked_only, features)


def no_rows_error(window: TrainingWindow) -> ValueError:
    """The error of a training window without rows."""
    return ValueError(
        f"no training rows between {window.train_start} and {window.validation_end}: "
        "build the training set for those days first (rankflow demo does it)"
    )


def run_train(spark: SparkSession, settings: Settings, ds: date) -> dict[str, Any]:
    """Train on the days before ``ds`` (early stopping on the last of them) and register.

    The input tables' Delta versions are read first and the training set is read at its
    version, so the lineage names exactly the rows the model was fitted on. The configured
    engine fits the model and the debiasing variants compared with it: on the same rows, or,
    past ``training.compare_debiasing_max_rows``, every compared variant (the model's own
    method too) on one sample of whole query groups, so the comparison stays even.
    """
    from rankflow.model.fit import model_bytes, training_window, uses_stream_features
    from rankflow.model.lineage import lineage_of
    from rankflow.model.registry import log_and_register
    from rankflow.runs import write_run_record

    config = settings.pipeline["training"]
    window = training_window(ds, config)
    versions = table_versions(spark, settings)
    pinned = versions["silver/training_set"]
    data = training_data(spark, settings, ds, window, pinned, config)
    try:
        debiasing = str(config["debiasing"])
        fitted = data.fit(config, debiasing)
        lineage = {
            **lineage_of(settings, fitted, versions, window, data.train_rows, data.validation_rows),
            "training_engine": data.engine,
        }
        comparison = data.groups_sample(int(config["compare_debiasing_max_rows"]))
        sampled = comparison is not data
        variants = {
            name: model_bytes(comparison.fit(config, name).booster)
            for name in config["compare_debiasing"]
            if sampled or name != debiasing
        }
        if uses_stream_features(config):  # the ablation the report shows: do they help?
            without = {**config, "stream_features": False}
            variants[WITHOUT_STREAM] = model_bytes(comparison.fit(without, debiasing).booster)
    finally:
        data.release()
    compared = {"train_rows": comparison.train_rows, "sampled": sampled}
    record = {
        **log_and_register(settings, fitted, lineage, ds, variants),
        **lineage,
        "debiasing_comparison": compared,
        "driver_peak_memory_bytes": host.peak_memory_bytes(),
    }
    write_run_record(settings, ds, "train", record)
    return record


def training_set_gate(
    settings: Settings, ds: date, train: Any, features: Sequence[str] = MODEL_FEATURES
) -> None:
    """Refuse training rows with labels out of range, mixed query groups or a leaking input.

    Raises:
        DataQualityError: a critical check failed; no model is fitted.
    """
    from rankflow.quality.gates import gate
    from rankflow.quality.suites import leakage_outcome, query_groups_outcome, training_set_suite

    max_label = max(int(g) for g in settings.pipeline["labels"]["gains"].values())
    features = list(features)
    suite = training_set_suite(features, max_label)
    extra = [query_groups_outcome(train["qid"]), leakage_outcome(train, features)]
    gate(settings, ds, train, "training_set", suite, extra)


def spark_training_set_gate(
    settings: Settings, ds: date, rows: PartitionedRows, features: Sequence[str] = MODEL_FEATURES
) -> None:
    """The training-set gate on rows left on the executors (``spark`` engine).

    The contract's expectations run on the training rows through Spark; each partition must
    hold whole query groups, sorted; the leakage check reads a sample of whole query groups
    (a feature that separates clicks perfectly does so in any sample).

    Raises:
        DataQualityError: a critical check failed; no model is fitted.
    """
    from pyspark.sql import functions as F

    from rankflow.model.spark_engine import QUERY_INDEX, VALIDATION
    from rankflow.quality.gates import gate
    from rankflow.quality.suites import (
        leakage_outcome,
        partition_query_groups_outcome,
        training_set_suite,
    )

    max_label = max(int(g) for g in settings.pipeline["labels"]["gains"].values())
    features = list(features)
    train = rows.frame.where(~F.col(VALIDATION))
    modulus = max(1, -(-rows.train_rows // LEAKAGE_SAMPLE_ROWS))
    sample = train.where(F.pmod(F.col(QUERY_INDEX), F.lit(modulus)) == 0)
    extra = [
        partition_query_groups_outcome(rows.frame, QUERY_INDEX),
        leakage_outcome(sample.select("label", *features).toPandas(), features),
    ]
    suite = training_set_suite(features, max_label)
    gate(settings, ds, train.drop(QUERY_INDEX, VALIDATION), "training_set", suite, extra)


# rows of whole query groups the spark engine's leakage check reads on the driver
LEAKAGE_SAMPLE_ROWS = 1_000_000


def run_reproduce(spark: SparkSession, settings: Settings, model_version: str) -> dict[str, Any]:
    """Retrain a registered model from its lineage (Delta time travel) and compare the bytes."""
    import hashlib

    from rankflow.model.fit import TrainingWindow, model_bytes
    from rankflow.model.lineage import code_version, lock_hash
    from rankflow.model.registry import load_lineage, load_model

    lineage = load_lineage(settings, model_version)
    window = TrainingWindow(**{k: date.fromisoformat(v) for k, v in lineage["window"].items()})
    pinned = int(lineage["table_versions"]["silver/training_set"])
    config = lineage["training_config"]
    engine = lineage.get("training_engine", {"engine": "local"})
    config = {**config, "engine": engine["engine"]}
    data = training_data(spark, settings, None, window, pinned, config, engine.get("workers"))
    try:
        fitted = data.fit(config, str(config.get("debiasing", "none")))
    finally:
        data.release()
    rebuilt = model_bytes(fitted.booster)
    registered, _ = load_model(settings, model_version)
    warnings = []
    if code_version() != lineage["code_version"]:
        warnings.append(
            f"code is {code_version()}, the model was trained by {lineage['code_version']}"
        )
    if lock_hash() != lineage["requirements_lock_hash"]:
        warnings.append("requirements.lock differs from the one the model was trained with")
    return {
        "model_version": model_version,
        "identical": rebuilt == registered,
        "sha256": hashlib.sha256(rebuilt).hexdigest(),
        "registered_sha256": hashlib.sha256(registered).hexdigest(),
        "lineage_sha256": lineage["model_sha256"],
        "train_rows": data.train_rows,
        "validation_rows": data.validation_rows,
        "training_set_version": pinned,
        "warnings": warnings,
    }


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``train`` step for a job's parsed arguments (``jobs/train.py``)."""
    return run_train(spark, settings, args.ds)

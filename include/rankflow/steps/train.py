"""Step ``train``: fit the LambdaMART ranker on the training window, register it in MLflow."""

from __future__ import annotations

import argparse
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.days import in_days
from rankflow.features.registry import MODEL_FEATURES
from rankflow.lake.tables import read_table, table_versions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def training_rows(
    spark: SparkSession, settings: Settings, start: date, end: date, version: int | None = None
) -> Any:
    """Collect the training rows of ``[start, end]`` as pandas, sorted by query group.

    ``version`` pins the Delta version of the training set (time travel): the lineage of a model
    records it, and reproducing the model reads exactly those rows again.
    """
    from rankflow.model.fit import sort_by_query

    table = read_table(spark, settings, "silver/training_set")
    if version is not None:
        path = settings.paths.table("silver/training_set")
        table = spark.read.format("delta").option("versionAsOf", version).load(path)
    frame = (
        table.where(in_days(start, end))
        .select("ds", "qid", "user_id", "item_id", "position", "label", *MODEL_FEATURES)
        .toPandas()
    )
    return sort_by_query(frame)


def run_train(spark: SparkSession, settings: Settings, ds: date) -> dict[str, Any]:
    """Train on the days before ``ds`` (early stopping on the last of them) and register.

    The input tables' Delta versions are read first and the training set is read at its
    version, so the lineage names exactly the rows the model was fitted on.
    """
    from rankflow.model.fit import fit_variant, model_bytes, training_window
    from rankflow.model.lineage import lineage_of
    from rankflow.model.registry import log_and_register
    from rankflow.runs import write_run_record

    config = settings.pipeline["training"]
    window = training_window(ds, config)
    versions = table_versions(spark, settings)
    pinned = versions["silver/training_set"]
    train = training_rows(spark, settings, window.train_start, window.train_end, pinned)
    validation = training_rows(
        spark, settings, window.validation_start, window.validation_end, pinned
    )
    if train.empty or validation.empty:
        raise ValueError(
            f"no training rows between {window.train_start} and {window.validation_end}: "
            "build the training set for those days first (rankflow demo does it)"
        )
    training_set_gate(settings, ds, train)
    debiasing = str(config["debiasing"])
    fitted = fit_variant(train, validation, config, debiasing)
    lineage = lineage_of(settings, fitted, versions, window, len(train), len(validation))
    variants = {
        name: model_bytes(fit_variant(train, validation, config, name).booster)
        for name in config["compare_debiasing"]
        if name != debiasing
    }
    record = {**log_and_register(settings, fitted, lineage, ds, variants), **lineage}
    write_run_record(settings, ds, "train", record)
    return record


def training_set_gate(settings: Settings, ds: date, train: Any) -> None:
    """Refuse training rows with labels out of range, mixed query groups or a leaking input.

    Raises:
        DataQualityError: a critical check failed; no model is fitted.
    """
    from rankflow.features.registry import MODEL_FEATURES
    from rankflow.quality.gates import gate
    from rankflow.quality.suites import leakage_outcome, query_groups_outcome, training_set_suite

    max_label = max(int(g) for g in settings.pipeline["labels"]["gains"].values())
    features = list(MODEL_FEATURES)
    suite = training_set_suite(features, max_label)
    extra = [query_groups_outcome(train["qid"]), leakage_outcome(train, features)]
    gate(settings, ds, train, "training_set", suite, extra)


def run_reproduce(spark: SparkSession, settings: Settings, model_version: str) -> dict[str, Any]:
    """Retrain a registered model from its lineage (Delta time travel) and compare the bytes."""
    import hashlib

    from rankflow.model.fit import fit_variant, model_bytes
    from rankflow.model.lineage import code_version, lock_hash
    from rankflow.model.registry import load_lineage, load_model

    lineage = load_lineage(settings, model_version)
    window = {k: date.fromisoformat(v) for k, v in lineage["window"].items()}
    pinned = int(lineage["table_versions"]["silver/training_set"])
    train = training_rows(spark, settings, window["train_start"], window["train_end"], pinned)
    validation = training_rows(
        spark, settings, window["validation_start"], window["validation_end"], pinned
    )
    config = lineage["training_config"]
    fitted = fit_variant(train, validation, config, str(config.get("debiasing", "none")))
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
        "train_rows": len(train),
        "validation_rows": len(validation),
        "training_set_version": pinned,
        "warnings": warnings,
    }


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``train`` step for a job's parsed arguments (``jobs/train.py``)."""
    return run_train(spark, settings, args.ds)

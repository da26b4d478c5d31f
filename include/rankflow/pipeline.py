"""The nightly steps: read Delta tables, call the transforms, write exactly the ``ds`` partition.

Each function is what one ``jobs/*.py`` entry point runs inside its Spark session; the library
never knows which scheduler started it.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.features import MODEL_FEATURES, FeatureFrames
from rankflow.ledger import record_event

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FEATURE_TABLES = {
    "items": "silver/item_features",
    "users": "silver/user_features",
    "seen": "silver/seen_pairs",
}
INPUT_TABLES = ("bronze/events", "bronze/items", "bronze/users", "silver/training_set")


def days(start: date, end: date) -> list[date]:
    """Return every day from ``start`` to ``end`` inclusive."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def read_table(spark: SparkSession, settings: Settings, name: str) -> DataFrame:
    """Read a Delta table of the lake, with a clear error when an upstream step has not run."""
    from rankflow.spark import table_exists

    path = settings.paths.table(name)
    if not table_exists(spark, path):
        raise FileNotFoundError(f"Delta table {name} does not exist at {path}: run its step first")
    return spark.read.format("delta").load(path)


def read_partition(spark: SparkSession, settings: Settings, name: str, ds: date) -> DataFrame:
    """Read one ``ds`` partition of a Delta table (without the ``ds`` column)."""
    from pyspark.sql import functions as F

    return (
        read_table(spark, settings, name)
        .where(F.col("ds") == F.lit(ds.isoformat()).cast("date"))
        .drop("ds")
    )


def bronze(spark: SparkSession, settings: Settings) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Return the bronze events, items and users tables."""
    return (
        read_table(spark, settings, "bronze/events"),
        read_table(spark, settings, "bronze/items"),
        read_table(spark, settings, "bronze/users"),
    )


def run_ingest(
    spark: SparkSession, settings: Settings, start: date, end: date
) -> list[dict[str, Any]]:
    """Ingest every raw drop kind for each day in ``[start, end]``."""
    from dataclasses import asdict

    from rankflow.ingest import RAW_KINDS, ingest_range

    results = []
    for kind in RAW_KINDS:
        for stats in ingest_range(spark, settings, kind, start, end):
            results.append({**asdict(stats), "quarantine_share": stats.quarantine_share})
    return results


def run_features(spark: SparkSession, settings: Settings, ds: date) -> dict[str, int]:
    """Compute the features as of the end of ``ds`` and write the three silver tables."""
    from pyspark import StorageLevel

    from rankflow.features import build_features
    from rankflow.quality import feature_suite, gate
    from rankflow.spark import write_partition

    events, items, users = bronze(spark, settings)
    frames = build_features(events, items, users, [ds], settings.pipeline)
    max_null_share = float(settings.pipeline["quality"]["max_null_share"])
    built = {
        face: getattr(frames, face).withColumnRenamed("as_of", "ds") for face in FEATURE_TABLES
    }
    # the validated faces are read twice (gate, then write): compute them once
    validated = ("items", "users")
    for face in validated:
        built[face] = built[face].persist(StorageLevel.MEMORY_AND_DISK)
    try:
        for face in validated:
            suite = feature_suite(face, ds, max_null_share)
            gate(settings, ds, built[face], f"{face}_features", suite)
        counts = {}
        for face, table in FEATURE_TABLES.items():
            write_partition(built[face], settings.paths.table(table), ds)
            counts[face] = read_partition(spark, settings, table, ds).count()
    finally:
        for face in validated:
            built[face].unpersist()
    return counts


def read_features(spark: SparkSession, settings: Settings, ds: date) -> FeatureFrames:
    """Read the features as of ``ds`` written by the features step (keyed by ``as_of``)."""
    from pyspark.sql import functions as F

    def face(name: str) -> DataFrame:
        frame = read_partition(spark, settings, FEATURE_TABLES[name], ds)
        return frame.withColumn("as_of", F.lit(ds.isoformat()).cast("date"))

    return FeatureFrames(items=face("items"), users=face("users"), seen=face("seen"))


def run_candidates(spark: SparkSession, settings: Settings, ds: date) -> dict[str, int]:
    """Generate the candidates of every active user as of ``ds``."""
    from pyspark.sql import functions as F

    from rankflow.candidates import generate_candidates
    from rankflow.spark import write_partition
    from rankflow.training import write_run_record

    candidates = generate_candidates(
        read_features(spark, settings, ds), ds, settings.pipeline["candidates"]
    )
    path = settings.paths.table("silver/candidates")
    write_partition(candidates.withColumn("ds", F.lit(ds.isoformat()).cast("date")), path, ds)
    written = read_partition(spark, settings, "silver/candidates", ds)
    stats = written.agg(
        F.count("*").alias("rows"), F.countDistinct("user_id").alias("users")
    ).first()
    record = {"rows": int(stats["rows"]), "users": int(stats["users"])} if stats else {}
    write_run_record(settings, ds, "candidates", record)
    return record


def run_training_set(
    spark: SparkSession, settings: Settings, start: date, end: date
) -> dict[str, int]:
    """Build the labelled training rows of each day in ``[start, end]``."""
    from pyspark.sql import functions as F

    from rankflow.spark import write_partitions
    from rankflow.training_set import build_training_set

    events, items, users = bronze(spark, settings)
    path = settings.paths.table("silver/training_set")
    built = build_training_set(events, items, users, days(start, end), settings.pipeline)
    write_partitions(built, path, start, end)
    written = read_table(spark, settings, "silver/training_set").where(
        F.col("ds").between(
            F.lit(start.isoformat()).cast("date"), F.lit(end.isoformat()).cast("date")
        )
    )
    return {
        row["ds"].isoformat(): int(row["count"]) for row in written.groupBy("ds").count().collect()
    }


def training_rows(
    spark: SparkSession, settings: Settings, start: date, end: date, version: int | None = None
) -> Any:
    """Collect the training rows of ``[start, end]`` as pandas, sorted by query group.

    ``version`` pins the Delta version of the training set (time travel): the lineage of a model
    records it, and reproducing the model reads exactly those rows again.
    """
    from pyspark.sql import functions as F

    from rankflow.training import sort_by_query

    table = read_table(spark, settings, "silver/training_set")
    if version is not None:
        path = settings.paths.table("silver/training_set")
        table = spark.read.format("delta").option("versionAsOf", version).load(path)
    frame = (
        table.where(
            F.col("ds").between(
                F.lit(start.isoformat()).cast("date"), F.lit(end.isoformat()).cast("date")
            )
        )
        .select("ds", "qid", "user_id", "item_id", "position", "label", *MODEL_FEATURES)
        .toPandas()
    )
    return sort_by_query(frame)


def table_versions(spark: SparkSession, settings: Settings) -> dict[str, int]:
    """Return the Delta version of every input table (model lineage)."""
    from rankflow.spark import table_version

    return {name: table_version(spark, settings.paths.table(name)) for name in INPUT_TABLES}


def run_train(spark: SparkSession, settings: Settings, ds: date) -> dict[str, Any]:
    """Train on the days before ``ds`` (early stopping on the last of them) and register.

    The input tables' Delta versions are read first and the training set is read at its
    version, so the lineage names exactly the rows the model was fitted on.
    """
    from rankflow.training import (
        fit_variant,
        lineage_of,
        log_and_register,
        model_bytes,
        training_window,
        write_run_record,
    )

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
    from rankflow.features import MODEL_FEATURES
    from rankflow.quality import (
        gate,
        leakage_outcome,
        query_groups_outcome,
        training_set_suite,
    )

    max_label = max(int(g) for g in settings.pipeline["labels"]["gains"].values())
    features = list(MODEL_FEATURES)
    suite = training_set_suite(features, max_label)
    extra = [query_groups_outcome(train["qid"]), leakage_outcome(train, features)]
    gate(settings, ds, train, "training_set", suite, extra)


def run_reproduce(spark: SparkSession, settings: Settings, model_version: str) -> dict[str, Any]:
    """Retrain a registered model from its lineage (Delta time travel) and compare the bytes."""
    import hashlib

    from rankflow.training import (
        code_version,
        fit_variant,
        load_lineage,
        load_model,
        lock_hash,
        model_bytes,
    )

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


def scoring_input(
    spark: SparkSession, settings: Settings, ds: date, users: DataFrame | None = None
) -> DataFrame:
    """Join the candidates of ``ds`` (of ``users`` only, if given) with the features as of ``ds``.

    This is the serving face of the features; restricting the users first keeps a sample cheap.
    """
    from pyspark.sql import functions as F

    from rankflow.features import feature_vector, with_cross_features

    features = read_features(spark, settings, ds)
    candidates = read_partition(spark, settings, "silver/candidates", ds).select(
        F.lit(ds.isoformat()).cast("date").alias("as_of"), "user_id", "item_id"
    )
    if users is not None:
        candidates = candidates.join(F.broadcast(users), "user_id")
    joined = with_cross_features(candidates, features)
    return joined.select("user_id", "item_id", *feature_vector())


def run_score(
    spark: SparkSession, settings: Settings, ds: date, surface: str, top_k: int, model: str
) -> dict[str, Any]:
    """Score every candidate with ``model`` (alias or version) and write top-K lists to gold."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from rankflow.gold import write_gold
    from rankflow.scoring import fallback_list, score_candidates
    from rankflow.training import load_model, write_run_record

    model_raw, model_version = load_model(settings, model)
    ranked = score_candidates(
        scoring_input(spark, settings, ds), model_raw, f"v{model_version}", top_k
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        ranked_lists_gate(spark, settings, ds, ranked, top_k)
        gold = (
            ranked.withColumn("model_version", F.lit(model_version))
            .withColumn("surface", F.lit(surface))
            .withColumn("ds", F.lit(ds.isoformat()).cast("date"))
        )
        snapshot = write_gold(gold, settings.paths.table("gold/rankings"), ds, surface)
    finally:
        ranked.unpersist()
    fallback = fallback_list(read_features(spark, settings, ds).items, top_k)
    record = {
        "ds": ds.isoformat(),
        "surface": surface,
        "model_version": model_version,
        "top_k": top_k,
        "users": snapshot.users,
        "fallback": fallback,
        "gold": snapshot.as_record(),
    }
    write_run_record(settings, ds, f"score-{surface}", record)
    return record


def list_statistics(ranked: DataFrame, items: DataFrame) -> DataFrame:
    """Return one row per list: its length, distinct, sold and unknown items (for the gate)."""
    from pyspark.sql import functions as F

    catalogue = items.select(
        "item_id", F.col("is_sold").cast("int").alias("sold"), F.lit(1).alias("known")
    )
    entries = ranked.select("user_id", F.explode("item_ids").alias("item_id")).join(
        F.broadcast(catalogue), "item_id", "left"
    )
    per_list = entries.groupBy("user_id").agg(
        F.coalesce(F.sum("sold"), F.lit(0)).alias("sold_items"),
        F.sum(F.when(F.col("known").isNull(), 1).otherwise(0)).alias("unknown_items"),
    )
    lengths = ranked.select(
        "user_id",
        F.size("item_ids").alias("list_length"),
        F.size(F.array_distinct("item_ids")).alias("distinct_items"),
    )
    return lengths.join(per_list, "user_id", "left").fillna(0, ["sold_items", "unknown_items"])


def ranked_lists_gate(
    spark: SparkSession, settings: Settings, ds: date, ranked: DataFrame, top_k: int
) -> None:
    """Refuse lists that are short, repeat an item, hold sold or unknown items, or miss users.

    Raises:
        DataQualityError: a critical check failed; gold is left as it was.
    """
    import math

    from rankflow.quality import gate, ranked_lists_suite

    quality = settings.pipeline["quality"]
    users = read_partition(spark, settings, "silver/candidates", ds).select("user_id").distinct()
    min_users = math.ceil(float(quality["min_list_coverage"]) * users.count())
    statistics = list_statistics(ranked, read_features(spark, settings, ds).items)
    suite = ranked_lists_suite(top_k, min_users, float(quality["lists_full_share"]))
    gate(settings, ds, statistics, "ranked_lists", suite)


def read_ranked(spark: SparkSession, settings: Settings, ds: date, surface: str) -> DataFrame:
    """Read the gold ranked lists of one day and surface."""
    from pyspark.sql import functions as F

    return read_partition(spark, settings, "gold/rankings", ds).where(F.col("surface") == surface)


def publication_version(scored: dict[str, Any], run_id: str) -> str:
    """Return the id shared by the S3 export and the Redis version of one run (same on retry).

    It names the run, the model and the gold commit, so re-scoring within a run publishes a
    fresh version instead of writing over the keys of the earlier attempt.
    """
    from rankflow.serving import new_version_id

    ds = date.fromisoformat(str(scored["ds"]))
    gold = scored.get("gold", {}).get("commit")
    return new_version_id(ds, f"{run_id}|model={scored['model_version']}|gold={gold}")


def run_publish_s3(
    spark: SparkSession, settings: Settings, ds: date, surface: str, run_id: str
) -> dict[str, Any]:
    """Export the gold lists of ``ds`` to S3 (parts, then manifest, then pointer)."""
    from dataclasses import asdict

    from rankflow.gold import GoldSnapshot, check_unchanged
    from rankflow.publish_s3 import export_rankings
    from rankflow.training import read_run_record, write_run_record

    scored = read_run_record(settings, ds, f"score-{surface}")
    check_unchanged(GoldSnapshot.from_record(scored["gold"]), ds, surface)
    version = publication_version(scored, run_id)
    ranked = read_ranked(spark, settings, ds, surface).select("user_id", "item_ids", "scores")
    meta = {"model_version": scored["model_version"], "top_k": scored["top_k"]}
    started = time.monotonic()
    result = asdict(export_rankings(ranked, settings.s3, surface, ds, version, meta))
    result["seconds"] = round(time.monotonic() - started, 3)
    write_run_record(settings, ds, f"publish-s3-{surface}", result)
    record_event(
        spark,
        settings,
        "publish_s3",
        ds=ds,
        surface=surface,
        model_version=str(scored["model_version"]),
        airflow_run_id=run_id,
        redis_version=version,
        s3_prefix=f"s3://{settings.s3.bucket}/{result['prefix']}",
    )
    return result


def run_publish_redis(
    spark: SparkSession, settings: Settings, ds: date, surface: str, run_id: str
) -> dict[str, Any]:
    """Write the gold lists of ``ds`` as a new Redis version, check it, switch readers to it."""
    import redis

    from rankflow.gold import GoldSnapshot, check_unchanged
    from rankflow.publish_redis import publish_snapshot, sample_user
    from rankflow.serving import (
        VersionNotWritableError,
        bytes_per_user,
        current_key,
        expire_old_versions,
    )
    from rankflow.training import read_run_record, write_run_record

    scored = read_run_record(settings, ds, f"score-{surface}")
    snapshot = GoldSnapshot.from_record(scored["gold"])
    check_unchanged(snapshot, ds, surface)
    version = publication_version(scored, run_id)
    prefix = settings.redis.key_prefix
    client = redis.Redis.from_url(settings.redis.url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as error:
        raise ConnectionError(
            f"Redis is unreachable ({error}); check the redis_rankflow connection or "
            "RANKFLOW_REDIS_URL. Nothing was published."
        ) from error
    started = time.monotonic()
    try:
        published = publish_snapshot(
            spark,
            client,
            settings.redis.url,
            snapshot,
            prefix=prefix,
            surface=surface,
            version=version,
            ds=ds,
            model_version=str(scored["model_version"]),
            k=int(scored["top_k"]),
            fallback=scored["fallback"],
            mset_batch=settings.redis.mset_batch,
        )
    except VersionNotWritableError:
        current = client.get(current_key(prefix, surface))
        if (current.decode() if isinstance(current, bytes) else current) != version:
            raise
        return read_run_record(settings, ds, f"publish-redis-{surface}")  # a retry after success
    expired = expire_old_versions(
        client, prefix, surface, ttl_seconds=settings.redis.old_version_ttl_seconds
    )
    record = {
        "ds": ds.isoformat(),
        "surface": surface,
        "version": version,
        "status": published.result.status,
        "reason": published.result.reason,
        "users": published.users,
        "value_bytes": published.value_bytes,
        "gold_files": published.files,
        "bytes_per_user": bytes_per_user(client, prefix, surface, version),
        "expired_versions": expired.versions,
        "sample_user": sample_user(snapshot),
        "model_version": scored["model_version"],
        "seconds": round(time.monotonic() - started, 3),
    }
    write_run_record(settings, ds, f"publish-redis-{surface}", record)
    if published.result.status == "switched":
        record_event(
            spark,
            settings,
            "publish_redis",
            ds=ds,
            surface=surface,
            model_version=str(scored["model_version"]),
            airflow_run_id=run_id,
            redis_version=version,
            gold_version=snapshot.commit,
            reason=published.result.reason or None,
        )
    return record

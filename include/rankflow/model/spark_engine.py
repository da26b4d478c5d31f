"""The ``spark`` training engine: LambdaMART fitted on the executors by ``SparkXGBRanker``.

The ``local`` engine collects the training rows to the step's process, so one machine's memory
bounds it. This engine leaves them on the executors: XGBoost runs as one barrier task per worker,
the workers build their histograms from their own partitions and sum them over XGBoost's
collective (Rabit), so every tree is grown from all the rows. What it needs from the rows:

* every row of a query group in one partition, the groups sorted by their integer id and the
  rows of a group in shown order (unbiased LambdaMART reads positions from the row order);
* integer query ids that fit in 32 bits (XGBoost keeps qids as ``uint32``): groups are numbered
  ``0 .. G-1`` in a fixed order that mixes the days (see :func:`with_query_index`);
* a fixed partitioning (hash of the query id into ``workers`` partitions) and seed, so that a
  rerun sees the same rows in the same order on the same worker and fits the same bytes.

It runs ``xgboost.spark``'s barrier job, which needs a classic Spark session (spark-submit): a
Spark Connect client has no SparkContext.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rankflow.model.fit import (
    GROUP_HASH_BUCKETS,
    POSITION_FEATURE,
    FittedRanker,
    model_features,
    stale_stream_share,
    uses_stream_features,
    variant_params,
)
from rankflow.model.fit import early_stopping as stopping_callback

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ENGINES = ("local", "spark")
QUERY_INDEX = "query_index"
VALIDATION = "is_validation"
# booster parameters the engine sets itself: one thread per task slot (spark.task.cpus)
ENGINE_OWNED_PARAMS = ("nthread", "n_jobs")


class EngineError(RuntimeError):
    """The ``spark`` training engine cannot run in this session or on this cluster."""


def training_engine(config: dict[str, Any]) -> str:
    """The configured engine (``training.engine``), checked."""
    engine = str(config.get("engine", "local"))
    if engine not in ENGINES:
        raise ValueError(f"training.engine must be one of {ENGINES}, got {engine!r}")
    return engine


def require_classic(spark: SparkSession) -> None:
    """Refuse a Spark Connect session: xgboost.spark's barrier job needs a SparkContext."""
    from rankflow.lake.session import is_connect

    if is_connect(spark):
        raise EngineError(
            "training.engine: spark trains with xgboost.spark, whose barrier job needs a classic "
            "Spark session: run the train step with spark-submit (the spark_rankflow "
            "connection of type spark), not through Spark Connect"
        )


def task_slots_now(spark: SparkSession) -> int:
    """How many tasks the cluster runs at once right now (executors registered x their cores)."""
    require_classic(spark)
    context = spark.sparkContext._jsc.sc()  # type: ignore[union-attr]
    profile = context.resourceProfileManager().defaultResourceProfile()
    return int(context.maxNumConcurrentTasks(profile))


def worker_count(spark: SparkSession, requested: int) -> int:
    """XGBoost workers for the fit: ``requested``, or every task slot when it is 0.

    A barrier stage starts all its tasks at once or not at all: more workers than slots would
    wait for executors that never come, so it is refused with the numbers.
    """
    slots = task_slots_now(spark)
    if requested < 0:
        raise ValueError(f"training.spark_workers must be 0 (every slot) or more, got {requested}")
    if requested > slots:
        raise EngineError(
            f"training.spark_workers is {requested} but the cluster runs {slots} tasks at once: "
            "a barrier job needs a task slot for every worker (lower it, or 0 for every slot)"
        )
    return requested or max(slots, 1)


def with_query_index(frame: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Number the query groups ``0 .. G-1`` in a fixed order that mixes the days.

    The order is a hash of ``keys`` (then the keys): numbered by day, every validation group
    would sort after every training group of its partition, and an Arrow batch of training rows
    alone makes xgboost.spark 3.2 fail (``KeyError: 'values'``, see
    :func:`whole_partition_batches`); mixed, each batch holds both.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StructField, StructType

    groups = frame.select(*keys).distinct().orderBy(F.xxhash64(*keys), *keys)
    numbered = groups.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1]))
    fields = [frame.schema[key] for key in keys]
    schema = StructType([*fields, StructField(QUERY_INDEX, LongType(), False)])
    index = frame.sparkSession.createDataFrame(numbered, schema)
    return frame.join(index, on=list(keys))


def ranking_partitions(frame: DataFrame, workers: int, order: Sequence[str]) -> DataFrame:
    """Hash the query groups into ``workers`` partitions, each sorted by group then ``order``.

    The result is persisted (the caller unpersists it). Without that, the optimizer drops this
    sort under the one SparkXGBRanker adds by query id alone (EliminateSorts: a sort below
    another is redundant), and the rows of a group reach XGBoost in no particular order; over a
    cached relation, whose ordering is known, it drops XGBoost's sort instead.
    """
    from pyspark import StorageLevel

    return (
        frame.repartition(workers, QUERY_INDEX)
        .sortWithinPartitions(QUERY_INDEX, *order)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )


@contextmanager
def whole_partition_batches(spark: SparkSession) -> Iterator[None]:
    """Hand each XGBoost worker its partition in as few Arrow batches as the byte limit allows.

    xgboost.spark 3.2 splits every batch into training and validation rows and fails with
    ``KeyError: 'values'`` on a batch holding none of one kind (with feature columns, not a
    vector). Fewer, bigger batches (``spark.sql.execution.arrow.maxBytesPerBatch`` still splits
    them) and groups numbered in mixed order (:func:`with_query_index`) make that unlikely.
    """
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    saved = spark.conf.get(key, None)
    spark.conf.set(key, "0")  # no limit
    try:
        yield
    finally:
        if saved is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, saved)


def ranker_params(config: dict[str, Any]) -> dict[str, Any]:
    """The booster parameters of a fit on the executors: the config's, with its seed."""
    params = {k: v for k, v in config["params"].items() if k not in ENGINE_OWNED_PARAMS}
    return {**params, "seed": int(config["seed"])}


def fit_on_spark(
    frame: DataFrame,
    features: Sequence[str],
    config: dict[str, Any],
    workers: int,
    *,
    early_stopping: bool = True,
) -> FittedRanker:
    """Fit LambdaMART on partitioned rows (:func:`ranking_partitions`) with SparkXGBRanker.

    With ``early_stopping`` the rows flagged ``VALIDATION`` are the evaluation set and the
    booster is cut at its best iteration, as :func:`~rankflow.model.fit.fit_ranker` does; without
    it, ``num_boost_round`` trees are grown on every row.
    """
    from xgboost.spark import SparkXGBRanker

    require_classic(frame.sparkSession)
    rounds = int(config["num_boost_round"])
    options: dict[str, Any] = {
        "features_col": list(features),
        "feature_names": list(features),
        "label_col": "label",
        "qid_col": QUERY_INDEX,
        "num_workers": workers,
        "force_repartition": False,  # the rows come partitioned and sorted (ranking_partitions)
        "n_estimators": rounds,
    }
    if early_stopping:
        options["validation_indicator_col"] = VALIDATION
        options["callbacks"] = [stopping_callback(config)]  # fit_ranker's: min_boost_rounds
    ranker = SparkXGBRanker(**options, **ranker_params(config))
    with whole_partition_batches(frame.sparkSession):
        model = ranker.fit(frame)
    booster = model.get_booster()
    if not early_stopping:
        return FittedRanker(booster, rounds - 1, math.nan, [])
    metric = str(config["params"]["eval_metric"])
    summary = model.training_summary
    curve = [float(v) for v in summary.validation_objective_history[metric]]
    best = int(booster.best_iteration)
    return FittedRanker(booster[: best + 1], best, curve[best], curve)


@dataclass(frozen=True)
class PartitionedRows:
    """Training and validation rows on the executors, partitioned for a fit (``spark`` engine)."""

    frame: DataFrame  # ranking_partitions of the rows, VALIDATION flags the validation days
    workers: int
    train_rows: int
    validation_rows: int

    @property
    def engine(self) -> dict[str, Any]:
        """The spark engine and its worker count (the partitioning a rerun must repeat)."""
        return {"engine": "spark", "workers": self.workers}

    def fit(self, config: dict[str, Any], debiasing: str) -> FittedRanker:
        """Fit one debiasing variant with SparkXGBRanker (the shown position as a feature too)."""
        from pyspark.sql import functions as F

        from rankflow.features.registry import STREAM_FEATURES

        features = model_features(debiasing, uses_stream_features(config))
        frame = self.frame
        if POSITION_FEATURE in features:
            frame = frame.withColumn(POSITION_FEATURE, F.col("position").cast("float"))
        share = stale_stream_share(config)
        if share > 0:  # the local engine's rule, over a hash of its own
            bucket = F.pmod(F.xxhash64("ds", "qid"), F.lit(GROUP_HASH_BUCKETS))
            stale = ~F.col(VALIDATION) & (bucket < int(share * GROUP_HASH_BUCKETS))
            missing = F.lit(float("nan")).cast("float")
            for name in STREAM_FEATURES:
                frame = frame.withColumn(name, F.when(stale, missing).otherwise(F.col(name)))
        return fit_on_spark(frame, features, variant_params(config, debiasing), self.workers)

    def groups_sample(self, max_rows: int) -> PartitionedRows:
        """About ``max_rows`` training rows in whole query groups, the validation rows whole.

        A group is kept when the hash of its ``(ds, qid)`` falls below a cut. The filter runs
        over the persisted rows, so each partition keeps its order (and its cache).
        """
        from pyspark.sql import functions as F

        if self.train_rows <= max_rows:
            return self
        cut = GROUP_HASH_BUCKETS * max_rows // self.train_rows
        bucket = F.pmod(F.xxhash64("ds", "qid"), F.lit(GROUP_HASH_BUCKETS))
        frame = self.frame.where(F.col(VALIDATION) | (bucket < cut))
        train_rows = frame.where(~F.col(VALIDATION)).count()
        return PartitionedRows(frame, self.workers, train_rows, self.validation_rows)

    def release(self) -> None:
        """Drop the rows from the executors' cache."""
        self.frame.unpersist()

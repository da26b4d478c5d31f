"""Benchmark batch scoring and Redis publishing against in-process references (``make bench``).

Measured in one run, on the same rows and the same model:

(a) scoring rows/s through ``model.scoring.score_candidates`` (Spark, ``mapInPandas``) and its
    ratio to ``Booster.inplace_predict`` over the same rows in this process (all cores);
(b) Redis publish users/s through ``rankflow.publish.redis.publish_snapshot`` (the nightly
    task's code: ``begin_version``, Spark tasks reading gold files into ``write_arrow``,
    ``write_fallback``, ``commit_version``) and its ratio to ``redis-benchmark -P 16 -t set``
    with values of the same size;
(c) Redis bytes per user (``MEMORY USAGE`` sample) and its ratio to the K x 4-byte payload.

It is a benchmark, not a test: it always exits 0 once it has measured, and prints PASS/FAIL
against the issue's targets. Scale comes from ``BENCH_*`` variables or the options::

    .venv/bin/python bench/bench_score_publish.py --users 50000 --profile

The publication uses its own prefix and surface (``rfbench:bench``) and deletes every key under
it afterwards, so the serving keys of a running demo are never touched.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

from rankflow.config import Settings, load_settings
from rankflow.features.registry import ITEM_FEATURES, MODEL_FEATURES, USER_FEATURES
from rankflow.lake.gold import GoldSnapshot

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import redis
    import xgboost as xgb
    from pyspark.sql import Column, DataFrame, SparkSession

TARGET_SCORING = 0.25
TARGET_PUBLISH = 0.30
PREFIX = "rfbench"
SURFACE = "bench"
FIRST_USER = 10_000_000
ITEMS = 2_000_000
ITEM_STRIDE = 104_729  # a prime: (user * 7919 + c * stride) % ITEMS is distinct for c < ITEMS
TRAIN_USERS = 1_000
BENCH_DS = date(2024, 1, 31)
WARM_UP_SURFACE = "warmup"
BENCHMARK_RUNS = 3  # redis-benchmark runs before and after the publication (median of all)
PUBLISH_RUNS = 3  # publications of the same snapshot, each into a fresh version (median)


@dataclass(frozen=True)
class Scale:
    """What to benchmark and where to keep the generated rows."""

    users: int
    candidates: int
    top_k: int
    seed: int
    trees: int
    workdir: Path
    keep: bool
    profile: bool
    publish_only: bool

    @property
    def rows(self) -> int:
        """Return the number of candidate rows (users x candidates)."""
        return self.users * self.candidates

    @property
    def data_dir(self) -> Path:
        """Return the folder of this scale's candidate table (reused while it exists)."""
        return self.workdir / f"candidates-{self.users}x{self.candidates}-s{self.seed}"


# --------------------------------------------------------------------------- helpers


def env_int(name: str, default: int) -> int:
    """Return an integer environment variable, or ``default`` when unset or empty."""
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def parse_args(argv: Sequence[str], settings: Settings) -> Scale:
    """Build the scale from ``BENCH_*`` variables, overridden by command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=env_int("BENCH_USERS", 200_000))
    parser.add_argument("--candidates", type=int, default=env_int("BENCH_CANDIDATES", 200))
    parser.add_argument("--top-k", type=int, default=env_int("BENCH_TOP_K", 100))
    parser.add_argument("--seed", type=int, default=env_int("BENCH_SEED", 7))
    parser.add_argument("--trees", type=int, default=env_int("BENCH_TREES", 250))
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("BENCH_DIR", str(settings.paths.home / "bench"))),
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated Parquet files")
    parser.add_argument(
        "--profile", action="store_true", help="also time the stages of the Spark scoring path"
    )
    parser.add_argument(
        "--publish-only",
        action="store_true",
        help="skip (a): generate the top-K lists directly in Spark and measure (b) and (c)",
    )
    args = parser.parse_args(argv)
    return Scale(
        users=args.users,
        candidates=args.candidates,
        top_k=args.top_k,
        seed=args.seed,
        trees=args.trees,
        workdir=args.workdir.resolve(),
        keep=args.keep,
        profile=args.profile,
        publish_only=args.publish_only,
    )


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` and return its result with the wall-clock seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def say(message: str) -> None:
    """Print one progress line immediately."""
    print(message, flush=True)


def noop_write(df: DataFrame) -> None:
    """Execute a DataFrame fully without writing anything (Spark's ``noop`` sink)."""
    df.write.format("noop").mode("overwrite").save()


# --------------------------------------------------------------------------- synthetic data


def hashes(key: str, tag: str, count: int) -> list[Column]:
    """Return 64-bit hashes ``{tag}h0..`` of ``key``, one per six draws (see :func:`draws`)."""
    from pyspark.sql import functions as F

    return [F.xxhash64(F.col(key), F.lit(n)).alias(f"{tag}h{n}") for n in range(-(-count // 6))]


def draws(tag: str, count: int) -> list[Column]:
    """Return ``count`` uniform [0, 1) columns ``{tag}0..``: six 10-bit slices of each hash."""
    from pyspark.sql import functions as F

    return [
        (F.shiftright(F.col(f"{tag}h{n // 6}"), 10 * (n % 6)).bitwiseAND(1023) / 1024.0).alias(
            f"{tag}{n}"
        )
        for n in range(count)
    ]


def rounded(value: Column, digits: int) -> Column:
    """Return ``value`` rounded down to ``digits`` decimals (``F.round`` goes via BigDecimal)."""
    from pyspark.sql import functions as F

    scale = 10.0**digits
    return F.floor(value * scale) / scale


def item_columns() -> dict[str, Column]:
    """Return the item features from the item's draws ``i0..i12`` (constant per item)."""
    from pyspark.sql import functions as F

    i = [F.col(f"i{n}") for n in range(13)]
    imp = {28: F.pow(i[0], 3) * 6000}
    imp[7] = imp[28] * (0.15 + 0.2 * i[1])
    imp[1] = imp[7] * (0.1 + 0.2 * i[2])
    ctr = 0.01 + 0.15 * F.pow(i[3], 2)
    cols: dict[str, Column] = {}
    for w in (1, 7, 28):
        cols[f"item_impressions_{w}d"] = F.floor(imp[w])
        cols[f"item_clicks_{w}d"] = F.floor(imp[w] * ctr)
        cols[f"item_saves_{w}d"] = F.floor(imp[w] * ctr * 0.3 * i[4])
        cols[f"item_ctr_{w}d"] = rounded((F.floor(imp[w] * ctr) + 1.0) / (imp[w] + 20.0), 5)
    cols["item_bags_28d"] = F.floor(imp[28] * ctr * 0.1 * i[5])
    cols["item_purchases_28d"] = F.floor(imp[28] * ctr * 0.05 * i[6])
    cols["item_age_days"] = rounded(i[7] * 365, 2)
    cols["item_price"] = rounded(F.exp(1.609 + i[8] * 4.605), 2)  # 5 to 500, log-uniform
    cols["item_price_rel_category"] = rounded(0.3 + 2.7 * i[9], 3)
    cols["item_condition_rank"] = F.floor(1 + 4 * i[10])
    cols["seller_rating"] = F.when(i[12] < 0.03, None).otherwise(rounded(3 + 2 * i[11], 1))
    return cols


def user_columns() -> dict[str, Column]:
    """Return the user features from the user's draws ``u0..u6`` (constant per user)."""
    from pyspark.sql import functions as F

    u = [F.col(f"u{n}") for n in range(7)]
    impressions = F.pow(u[0], 2) * 3000
    return {
        "user_impressions_28d": F.floor(impressions),
        "user_clicks_28d": F.floor(impressions * 0.08 * u[1]),
        "user_positives_28d": F.floor(impressions * 0.08 * u[1] * 0.3 * u[2]),
        "user_active_days_28d": F.floor(1 + 27 * u[3]),
        "user_days_since_signup": rounded(u[4] * 1500, 2),
        "user_log_price_mean": F.when(u[6] < 0.05, None).otherwise(rounded(2.3 + 3 * u[5], 4)),
    }


def cross_columns(seed: int) -> dict[str, Column]:
    """Return the user x item features: per-row draws, mostly zero like real affinities."""
    from pyspark.sql import functions as F

    def sparse(share_zero: float, salt: int) -> Column:
        return F.when(F.rand(seed + salt) < share_zero, 0.0).otherwise(
            rounded(F.rand(seed + salt + 50), 3)
        )

    seen = F.floor(F.pow(F.rand(seed + 6), 8) * 10)
    return {
        "aff_category": sparse(0.5, 1),
        "aff_brand": sparse(0.7, 2),
        "aff_style": sparse(0.4, 3),
        "aff_size": sparse(0.3, 4),
        "size_fit": (F.rand(seed + 5) < 0.6).cast("double"),
        "price_distance": rounded(F.abs(F.log("item_price") - F.col("user_log_price_mean")), 4),
        "seen_before": seen,
        "clicked_before": F.when((seen > 0) & (F.rand(seed + 7) < 0.2), 1.0).otherwise(0.0),
    }


def candidate_frame(spark: SparkSession, scale: Scale) -> DataFrame:
    """Return ``user_id, item_id, <MODEL_FEATURES as double>``, one user's rows together.

    Built in projections (hashes, draws, item and user features, cross features) so that no
    hash is computed twice and the generated code stays small.
    """
    from pyspark.sql import functions as F

    c = scale.candidates
    ids = spark.range(0, scale.rows, numPartitions=spark.sparkContext.defaultParallelism * 8)
    user = F.floor(F.col("id") / c)
    keys = ids.select(
        (F.lit(FIRST_USER) + user).cast("long").alias("user_id"),
        ((user * 7919 + (F.col("id") % c) * ITEM_STRIDE) % ITEMS).cast("long").alias("item_id"),
    )
    hashed = keys.select(
        "user_id", "item_id", *hashes("item_id", "i", 13), *hashes("user_id", "u", 7)
    )
    drawn = hashed.select("user_id", "item_id", *draws("i", 13), *draws("u", 7))
    items, users, cross = item_columns(), user_columns(), cross_columns(scale.seed)
    entities = drawn.select(
        "user_id",
        "item_id",
        *[items[n].cast("double").alias(n) for n in ITEM_FEATURES],
        *[users[n].cast("double").alias(n) for n in USER_FEATURES],
    )
    return entities.select(
        "user_id",
        "item_id",
        *[(cross[n] if n in cross else F.col(n)).cast("double").alias(n) for n in MODEL_FEATURES],
    )


def ensure_candidates(spark: SparkSession, scale: Scale) -> str:
    """Write the candidate table to Parquet once per scale and seed; return its path."""
    path = scale.data_dir
    if (path / "_SUCCESS").exists():
        say(f"candidates: reusing {path}")
        return str(path)
    shutil.rmtree(path, ignore_errors=True)
    _, seconds = timed(
        lambda: candidate_frame(spark, scale).write.mode("overwrite").parquet(str(path))
    )
    size = sum(f.stat().st_size for f in path.glob("*.parquet"))
    say(f"candidates: wrote {scale.rows:,} rows ({size / 2**30:.2f} GiB) in {seconds:.1f} s")
    return str(path)


# --------------------------------------------------------------------------- model


def synthetic_labels(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """Return graded labels 0-4 from a hidden utility of the features plus noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    f = {name: np.nan_to_num(frame[name].to_numpy(dtype="float64")) for name in MODEL_FEATURES}
    utility = (
        1.2 * f["aff_category"]
        + 0.8 * f["aff_brand"]
        + 0.5 * f["aff_style"]
        + 0.4 * f["aff_size"]
        + 0.6 * f["size_fit"]
        + 6.0 * f["item_ctr_7d"]
        + 0.15 * np.log1p(f["item_clicks_7d"])
        - 0.4 * f["price_distance"]
        + 0.1 * f["item_condition_rank"]
        + 0.3 * f["clicked_before"]
        - 0.2 * f["seen_before"]
        - 0.002 * f["item_age_days"]
        + rng.gumbel(scale=0.5, size=len(frame))
    )
    cuts = np.quantile(utility, [0.95, 0.98, 0.99, 0.995])
    labels: np.ndarray = np.searchsorted(cuts, utility).astype("float32")
    return labels


def train_model(spark: SparkSession, path: str, scale: Scale, settings: Settings) -> bytes:
    """Fit LambdaMART (the pipeline's parameters, fixed rounds) on a sample; return its JSON."""
    import xgboost as xgb
    from pyspark.sql import functions as F

    users = min(scale.users, TRAIN_USERS)
    sample = cast(
        "pd.DataFrame",
        spark.read.parquet(path)
        .where(F.col("user_id") < FIRST_USER + users)
        .orderBy("user_id", "item_id")
        .toPandas(),
    )
    matrix = xgb.DMatrix(
        sample[MODEL_FEATURES].to_numpy(dtype="float32"),
        label=synthetic_labels(sample, scale.seed),
        feature_names=MODEL_FEATURES,
    )
    matrix.set_group(sample.groupby("user_id", sort=True).size().to_numpy())
    params = {
        **settings.pipeline["training"]["params"],
        "seed": scale.seed,
        "nthread": os.cpu_count() or 1,
    }
    booster, seconds = timed(lambda: xgb.train(params, matrix, num_boost_round=scale.trees))
    say(
        f"model: rank:ndcg, {booster.num_boosted_rounds()} trees, max_depth "
        f"{params['max_depth']}, {leaves(booster):,} leaves; trained on {len(sample):,} rows "
        f"in {seconds:.1f} s"
    )
    return bytes(booster.save_raw(raw_format="json"))


def leaves(booster: xgb.Booster) -> int:
    """Return the total number of leaves of a model (a measure of its prediction cost)."""
    return sum(dump.count("leaf=") for dump in booster.get_dump())


# --------------------------------------------------------------------------- (a) scoring


@dataclass(frozen=True)
class ScoringResult:
    """Rows/s of both scoring paths."""

    spark_seconds: float
    reference_seconds: float
    convert_seconds: float
    rows: int

    @property
    def ratio(self) -> float:
        """Return Spark rows/s over reference rows/s."""
        return self.reference_seconds / self.spark_seconds


def score_with_spark(spark: SparkSession, path: str, out: str, model_raw: bytes, k: int) -> float:
    """Score every row through ``score_candidates`` and write the lists; return seconds."""
    from rankflow.model.scoring import score_candidates

    def run() -> None:
        ranked = score_candidates(spark.read.parquet(path), model_raw, "bench-model", k)
        ranked.write.mode("overwrite").parquet(out)

    return timed(run)[1]


def warm_up(spark: SparkSession, path: str, model_raw: bytes, k: int) -> None:
    """Score a few users once so Python workers are started and have imported their modules."""
    from pyspark.sql import functions as F

    from rankflow.model.scoring import score_candidates

    few = spark.read.parquet(path).where(F.col("user_id") < FIRST_USER + 100)
    noop_write(score_candidates(few, model_raw, "bench-model", k))


def feature_batches(path: str, batch_rows: int = 1 << 20) -> Iterator[Any]:
    """Yield Arrow record batches of ``user_id, item_id`` and the model features."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet")
    yield from dataset.to_batches(
        columns=["user_id", "item_id", *MODEL_FEATURES], batch_size=batch_rows
    )


def to_matrix(batch: Any) -> np.ndarray:
    """Return the model features of an Arrow batch as a C-ordered float32 matrix (NaN = null)."""
    import numpy as np

    matrix = np.empty((batch.num_rows, len(MODEL_FEATURES)), dtype=np.float32)
    for j, name in enumerate(MODEL_FEATURES):
        matrix[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
    return matrix


def score_in_process(path: str, model_raw: bytes, k: int) -> tuple[float, float, pd.DataFrame]:
    """Time ``inplace_predict`` (all cores) over every row; return predict s, convert s, check.

    The check frame holds the reference top-``k`` of the first batch's users.
    """
    import numpy as np

    from rankflow.model.fit import booster_from_bytes
    from rankflow.model.scoring import top_k_per_user

    booster = booster_from_bytes(model_raw, nthread=os.cpu_count() or 1)
    predict = convert = 0.0
    check = None
    for batch in feature_batches(path):
        matrix, seconds = timed(partial(to_matrix, batch))
        convert += seconds
        scores, seconds = timed(partial(booster.inplace_predict, matrix))
        predict += seconds
        if check is None:
            users = batch.column("user_id").to_numpy()
            items = batch.column("item_id").to_numpy()
            check = top_k_per_user(users, items, np.asarray(scores, dtype=np.float32), k)
    assert check is not None
    return predict, convert, check


def check_same_lists(spark: SparkSession, out: str, reference: pd.DataFrame) -> str:
    """Compare the Spark lists of a few users with the reference lists; return a verdict."""
    import numpy as np
    from pyspark.sql import functions as F

    # the first batch may cut its last user's candidates short: compare users before it
    sample = reference.iloc[: max(1, min(20, len(reference) - 1))]
    wanted = [int(u) for u in sample["user_id"]]
    got = {
        int(r["user_id"]): list(r["item_ids"])
        for r in spark.read.parquet(out).where(F.col("user_id").isin(wanted)).collect()
    }
    same = sum(
        got.get(int(u), []) == list(np.asarray(items).tolist())
        for u, items in zip(sample["user_id"], sample["item_ids"], strict=True)
    )
    return f"{same}/{len(sample)} sampled users have identical lists in both paths"


def bench_scoring(
    spark: SparkSession, path: str, out: str, model_raw: bytes, scale: Scale
) -> ScoringResult:
    """Measure (a): Spark scoring and in-process ``inplace_predict`` over the same rows."""
    warm_up(spark, path, model_raw, scale.top_k)
    say("(a) scoring through Spark: score_candidates -> Parquet ...")
    spark_seconds = score_with_spark(spark, path, out, model_raw, scale.top_k)
    say(f"    {scale.rows / spark_seconds:,.0f} rows/s ({spark_seconds:.1f} s)")
    say("(a) reference: inplace_predict, all cores, float32 matrices from the same Parquet ...")
    predict, convert, check = score_in_process(path, model_raw, scale.top_k)
    say(
        f"    {scale.rows / predict:,.0f} rows/s ({predict:.1f} s predicting; "
        f"Parquet -> float32 took another {convert:.1f} s, not counted)"
    )
    say(f"    check: {check_same_lists(spark, out, check)}")
    return ScoringResult(spark_seconds, predict, convert, scale.rows)


# --------------------------------------------------------------------------- profiling


def consume_only(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Drain the Arrow batches of a partition and yield one row: the Arrow transfer's cost."""
    import pandas as pd

    rows = sum(len(b) for b in batches)
    yield pd.DataFrame({"rows": [rows]})


def ranked_batch(users: np.ndarray, items: np.ndarray, scores: np.ndarray, k: int) -> Any:
    """Return the top-``k`` lists of users' rows as one Arrow batch (lists built from offsets)."""
    import numpy as np
    import pyarrow as pa

    from rankflow.store.encoding import encode_list_array

    order = np.lexsort((items, -scores, users))
    users, items, scores = users[order], items[order], scores[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    keep = np.arange(len(users)) - np.repeat(starts, sizes) < k
    offsets = pa.array(np.r_[0, np.cumsum(np.minimum(sizes, k))].astype(np.int32))
    lists = pa.ListArray.from_arrays(offsets, pa.array(items[keep]))
    return pa.RecordBatch.from_arrays(
        [
            pa.array(users[starts]),
            lists,
            pa.ListArray.from_arrays(offsets, pa.array(scores[keep].astype(np.float32))),
            encode_list_array(lists),
        ],
        names=["user_id", "item_ids", "scores", "items_u32le"],
    )


def make_arrow_scorer(model_broadcast: Any, model_key: str, k: int) -> Callable[..., Any]:
    """Prototype ``mapInArrow`` scorer: no pandas; only (user, item, score) is carried over."""

    def score(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np

        from rankflow.model.scoring import cached_booster

        booster = cached_booster(model_key, model_broadcast.value)
        empty = np.empty(0, dtype=np.int64)
        users, items, scores = empty, empty, np.empty(0, dtype=np.float32)  # the carried user
        for batch in batches:
            if not batch.num_rows:
                continue
            users = np.concatenate([users, batch.column("user_id").to_numpy()])
            items = np.concatenate([items, batch.column("item_id").to_numpy()])
            scores = np.concatenate([scores, booster.inplace_predict(to_matrix(batch))])
            cut = int(np.searchsorted(users, users[-1]))  # rows arrive sorted by user
            if cut:
                yield ranked_batch(users[:cut], items[:cut], scores[:cut], k)
            users, items, scores = users[cut:], items[cut:], scores[cut:]
        if len(users):
            yield ranked_batch(users, items, scores, k)

    return score


def make_arrow_predictor(model_broadcast: Any, model_key: str) -> Callable[..., Any]:
    """Prototype ``mapInArrow`` step that predicts in place: ``user_id, item_id, score`` out."""

    def predict(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        from rankflow.model.scoring import cached_booster

        booster = cached_booster(model_key, model_broadcast.value)
        for batch in batches:
            scores = booster.inplace_predict(to_matrix(batch))
            yield pa.RecordBatch.from_arrays(
                [batch.column("user_id"), batch.column("item_id"), pa.array(scores)],
                names=["user_id", "item_id", "score"],
            )

    return predict


def score_arrow_sorted(scored_input: DataFrame, model_raw: bytes, k: int) -> DataFrame:
    """Prototype B: the library's plan (shuffle + sort by user) with the ``mapInArrow`` scorer."""
    from rankflow.model.scoring import RANKED_SCHEMA

    spark = scored_input.sparkSession
    broadcast = spark.sparkContext.broadcast(model_raw)
    partitions = max(spark.sparkContext.defaultParallelism * 2, 2)
    return (
        scored_input.repartition(partitions, "user_id")
        .sortWithinPartitions("user_id")
        .mapInArrow(make_arrow_scorer(broadcast, "bench-arrow", k), RANKED_SCHEMA)
    )


def score_predict_first(scored_input: DataFrame, model_raw: bytes, k: int) -> DataFrame:
    """Prototype C: predict where the rows are, then a native top-k (``max_by``) per user.

    Only ``user_id, item_id, score`` (20 bytes a row) is shuffled instead of every feature, and
    the aggregate keeps at most ``k`` entries per user on each side of the shuffle.
    """
    from pyspark.sql import functions as F

    spark = scored_input.sparkSession
    broadcast = spark.sparkContext.broadcast(model_raw)
    scored = scored_input.select("user_id", "item_id", *MODEL_FEATURES).mapInArrow(
        make_arrow_predictor(broadcast, "bench-arrow"),
        "user_id long, item_id long, score float",
    )
    best = F.max_by(
        F.struct("item_id", "score"), F.struct("score", (-F.col("item_id")).alias("tie")), k
    )
    return (
        scored.groupBy("user_id")
        .agg(best.alias("top"))
        .select(
            "user_id",
            F.col("top.item_id").alias("item_ids"),
            F.col("top.score").alias("scores"),
        )
    )


def profile_spark(spark: SparkSession, path: str, model_raw: bytes, scale: Scale) -> None:
    """Time the Spark path stage by stage, then two prototype scorers, all with a noop sink."""
    from rankflow.model.scoring import score_candidates

    partitions = max(spark.sparkContext.defaultParallelism * 2, 2)
    source = spark.read.parquet(path)
    shuffled = source.repartition(partitions, "user_id").sortWithinPartitions("user_id")
    stages = {
        "scan Parquet": source,
        "+ repartition by user + sort": shuffled,
        "+ Arrow to pandas in Python workers": shuffled.mapInPandas(consume_only, "rows long"),
        "+ predict + top-K (score_candidates)": score_candidates(
            source, model_raw, "bench-model", scale.top_k
        ),
        "B: same plan, mapInArrow scorer": score_arrow_sorted(source, model_raw, scale.top_k),
        "C: predict first, max_by top-k": score_predict_first(source, model_raw, scale.top_k),
    }
    say(f"profile: Spark scoring ({partitions} scoring partitions), noop sink")
    for name, frame in stages.items():
        seconds = timed(partial(noop_write, frame))[1]
        say(f"    {name:<40} {seconds:7.1f} s  {scale.rows / seconds:12,.0f} rows/s")
    profile_python(path, model_raw, scale)


def profile_python(path: str, model_raw: bytes, scale: Scale, rows: int = 500_000) -> None:
    """Time the scorer's per-batch Python steps on one batch, single-threaded like a task."""
    import pandas as pd
    import pyarrow as pa

    from rankflow.model.fit import booster_from_bytes
    from rankflow.model.scoring import top_k_per_user

    booster = booster_from_bytes(model_raw, nthread=1)
    batch = next(feature_batches(path, rows))
    frame, to_pandas = timed(batch.to_pandas)
    _, concat = timed(lambda: pd.concat([frame.iloc[:1000], frame], ignore_index=True))
    matrix, to_numpy = timed(lambda: frame[MODEL_FEATURES].to_numpy(dtype="float32"))
    _, from_arrow = timed(lambda: to_matrix(batch))
    scores, predict = timed(lambda: booster.inplace_predict(matrix))
    users, items = frame["user_id"].to_numpy(), frame["item_id"].to_numpy()
    ranked, top_k = timed(lambda: top_k_per_user(users, items, scores, scale.top_k))
    _, back = timed(lambda: pa.RecordBatch.from_pandas(ranked, preserve_index=False))
    _, arrow_top_k = timed(lambda: ranked_batch(users, items, scores, scale.top_k))
    n = len(frame)
    say(f"profile: one task's Python steps per candidate row ({n:,} rows, 1 thread)")
    for name, seconds in {
        "Arrow -> pandas": to_pandas,
        "pd.concat with the carried user": concat,
        "pandas features -> float32 matrix": to_numpy,
        "  (Arrow columns -> float32 matrix)": from_arrow,
        "inplace_predict (nthread=1)": predict,
        "top_k_per_user": top_k,
        "top-K lists -> Arrow": back,
        "  (ranked_batch: top-K straight to Arrow)": arrow_top_k,
    }.items():
        say(f"    {name:<40} {seconds / n * 1e6:7.2f} us/row")


def profile_publish(settings: Settings, snapshot: GoldSnapshot) -> None:
    """Time the writer's parts in this process: reading the gold files, and building commands."""
    from rankflow.publish.redis import read_list_file
    from rankflow.store.encoding import batch_values, mset_arguments, mset_commands, user_key_array

    locations = [location for location, _ in snapshot.locations()]

    def read_all() -> list[Any]:
        return [batch for location in locations for batch in read_list_file(location)]

    batches, read_seconds = timed(read_all)

    def build_all() -> int:
        sent = 0
        for batch in batches:
            keys = user_key_array(PREFIX, SURFACE, "profile", batch.column("user_id"))
            values = batch_values(batch)
            args = mset_arguments(keys, values)
            sent += sum(1 for _ in mset_commands(args, settings.redis.mset_batch))
        return sent

    commands, build_seconds = timed(build_all)
    n = snapshot.users
    say(f"profile: writer parts, one process, {n:,} users, {len(locations)} files")
    for name, seconds in [
        ("pyarrow read of the gold files", read_seconds),
        (f"keys + values + RESP, {commands} MSETs", build_seconds),
    ]:
        say(f"    {name:<40} {seconds:7.2f} s  {n / seconds:12,.0f} users/s")


# --------------------------------------------------------------------------- (b) publishing


def write_synthetic_lists(spark: SparkSession, scale: Scale, out: str) -> None:
    """Write ``users`` top-K lists straight from Spark, shaped like ``score_candidates`` output."""
    from pyspark.sql import functions as F

    k = scale.top_k
    slots = max(spark.sparkContext.defaultParallelism * 2, 2)
    user = F.col("id") + FIRST_USER
    (
        spark.range(0, scale.users, numPartitions=slots)
        .select(
            user.alias("user_id"),
            F.transform(
                F.sequence(F.lit(0), F.lit(k - 1)),
                lambda i: ((user * 7919 + i * ITEM_STRIDE) % ITEMS).cast("long"),
            ).alias("item_ids"),
            F.transform(F.sequence(F.lit(k), F.lit(1), F.lit(-1)), lambda i: i.cast("float")).alias(
                "scores"
            ),
        )
        .write.mode("overwrite")
        .parquet(out)
    )


def make_gold(spark: SparkSession, ranked_path: str, gold_path: str) -> GoldSnapshot:
    """Store the ranked lists as a gold Delta partition, the way the score step does."""
    from pyspark.sql import functions as F

    from rankflow.lake.gold import write_gold
    from rankflow.model.scoring import RANKED_SCHEMA

    ranked = spark.read.parquet(ranked_path)
    if "items_u32le" not in ranked.columns:  # the synthetic lists of --publish-only
        ranked = ranked.mapInArrow(with_encoded_lists, RANKED_SCHEMA)
    gold = ranked.select("*", F.lit(BENCH_DS).alias("ds"), F.lit(SURFACE).alias("surface"))
    return write_gold(gold, gold_path, BENCH_DS, SURFACE)


def with_encoded_lists(batches: Iterator[Any]) -> Iterator[Any]:
    """Add the ``items_u32le`` column the scorer writes to lists made without the scorer."""
    from rankflow.store.encoding import encode_list_array

    for batch in batches:
        yield batch.append_column("items_u32le", encode_list_array(batch.column("item_ids")))


@dataclass(frozen=True)
class PublishResult:
    """Users/s of the real publication and of redis-benchmark, plus memory per user."""

    users: int
    seconds: float
    benchmark_rates: list[float]
    bytes_per_user: float | None

    @property
    def rate(self) -> float:
        """Return published users per second."""
        return self.users / self.seconds

    @property
    def ratio(self) -> float:
        """Return the publish rate over the median redis-benchmark SET rate."""
        return self.rate / statistics.median(self.benchmark_rates)


def redis_benchmark(url: str, value_bytes: int, requests: int) -> float:
    """Run ``redis-benchmark -P 16 -t set`` against the server of ``url``; return SET/s."""
    parsed = urlparse(url)
    db = (parsed.path or "/0").strip("/") or "0"
    command = [
        "redis-benchmark",
        *("-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 6379)),
        *("--dbnum", db, "-P", "16", "-t", "set", "-d", str(value_bytes)),
        *("-n", str(requests), "-q"),
    ]
    if parsed.password:
        command += ["-a", parsed.password, "--no-auth-warning"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.findall(r"SET: ([\d.]+) requests per second", output)
    if not found:
        raise RuntimeError(f"cannot parse redis-benchmark output: {output!r}")
    return float(found[-1])


def rate_list(rates: Sequence[float]) -> str:
    """Return rates as ``a / b / c`` with thousands separators."""
    return " / ".join(f"{r:,.0f}" for r in rates)


def delete_namespace(client: redis.Redis) -> int:
    """Delete every key under ``rfbench:`` (the benchmark's versions); return the count."""
    from rankflow.store.commands import scan_keys

    deleted = 0
    batch: list[bytes] = []
    for key in scan_keys(client, f"{PREFIX}:*"):
        batch.append(key)
        if len(batch) == 1000:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


@dataclass(frozen=True)
class Publication:
    """One publication of the benchmark version: what was written and how long it took."""

    version: str
    users: int
    seconds: float


def publish(
    spark: SparkSession, client: redis.Redis, settings: Settings, snapshot: GoldSnapshot, k: int
) -> Publication:
    """Publish a gold snapshot as a new ``rfbench:bench`` version with the nightly task's code."""
    from rankflow.publish.redis import publish_snapshot
    from rankflow.store.keys import new_version_id

    version = new_version_id(BENCH_DS)
    start = time.perf_counter()
    done = publish_snapshot(
        spark,
        client,
        settings.redis.url,
        snapshot,
        prefix=PREFIX,
        surface=SURFACE,
        version=version,
        ds=BENCH_DS,
        model_version="bench",
        k=k,
        fallback=list(range(k)),
        mset_batch=settings.redis.mset_batch,
    )
    seconds = time.perf_counter() - start
    if done.result.status != "switched":
        raise RuntimeError(f"benchmark version not committed: {done.result}")
    return Publication(version, done.users, seconds)


def warm_up_publish(
    spark: SparkSession, client: redis.Redis, settings: Settings, gold_path: str, k: int
) -> None:
    """Publish a small gold partition first so every Python worker is started; report its cost.

    A nightly publish task is a fresh ``spark-submit`` and pays this once; the measurement
    below is the steady rate.
    """
    from pyspark.sql import functions as F

    from rankflow.lake.gold import write_gold

    few = (
        spark.read.format("delta")
        .load(gold_path)
        .where(F.col("user_id") < FIRST_USER + 2000)
        .withColumn("surface", F.lit(WARM_UP_SURFACE))
        .repartition(spark.sparkContext.defaultParallelism)  # one file per worker to warm
    )
    snapshot = write_gold(few, gold_path, BENCH_DS, WARM_UP_SURFACE)
    cold = publish(spark, client, settings, snapshot, k)
    say(
        f"    warm-up: {cold.users:,} users in {cold.seconds:.1f} s "
        "(first publication job of the session, not counted)"
    )
    delete_namespace(client)


def bench_publish(
    spark: SparkSession, settings: Settings, gold_path: str, snapshot: GoldSnapshot, k: int
) -> PublishResult:
    """Measure (b) and (c): gold -> Redis publication between two redis-benchmark runs."""
    import redis

    from rankflow.store.versions import bytes_per_user

    url = settings.redis.url
    client = redis.Redis.from_url(url)
    client.ping()
    stray = b"key:__rand_int__"  # the one key redis-benchmark SETs without -r
    had_stray = bool(client.exists(stray))
    delete_namespace(client)
    users = snapshot.users
    rates = [redis_benchmark(url, k * 4, users) for _ in range(BENCHMARK_RUNS)]
    say(f"(b) redis-benchmark -P 16 -t set -d {k * 4} -n {users}: {rate_list(rates)} SET/s")
    try:
        say(
            f"(b) publishing {len(snapshot.files)} gold files: begin_version, Spark tasks "
            "(pyarrow -> write_arrow), write_fallback, commit_version ..."
        )
        warm_up_publish(spark, client, settings, gold_path, k)
        runs = []
        for run in range(PUBLISH_RUNS):
            if run:
                delete_namespace(client)
            runs.append(publish(spark, client, settings, snapshot, k))
        say(
            "    "
            + " / ".join(f"{r.seconds:.2f} s" for r in runs)
            + f" for {snapshot.users:,} users"
        )
        done = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
        rate = done.users / done.seconds
        say(f"    median {done.seconds:.2f} s -> {rate:,.0f} users/s")
        after = [redis_benchmark(url, k * 4, users) for _ in range(BENCHMARK_RUNS)]
        say(f"(b) redis-benchmark again: {rate_list(after)} SET/s")
        rates += after
        # only the last publication is still in Redis (earlier ones were deleted before the next)
        per_user = bytes_per_user(client, PREFIX, SURFACE, runs[-1].version, sample=1000)
    finally:
        removed = delete_namespace(client)
        if not had_stray:
            client.delete(stray)
        say(f"    cleanup: deleted {removed:,} keys under {PREFIX}:")
    return PublishResult(done.users, done.seconds, rates, per_user)


# --------------------------------------------------------------------------- report


def verdict(value: float, target: float) -> str:
    """Return PASS or FAIL against a target ratio."""
    return "PASS" if value >= target else "FAIL"


def summary(
    scale: Scale, scoring: ScoringResult | None, published: PublishResult, total: float
) -> str:
    """Return the final block: the three measurements, their ratios and the verdicts."""
    payload = scale.top_k * 4
    bench_rate = statistics.median(published.benchmark_rates)
    memory = published.bytes_per_user
    memory_text = (
        f"{memory:,.0f} B/user vs K x 4 = {payload} B  ratio {memory / payload:.2f}"
        if memory
        else "n/a"
    )
    lines = [
        "=" * 78,
        f"SUMMARY  {scale.users:,} users x {scale.candidates} candidates, K={scale.top_k}, "
        f"{os.cpu_count()} cores, run {total / 60:.1f} min, load {os.getloadavg()[1]:.1f} (5 min)",
        (
            f"(a) scoring  Spark {scoring.rows / scoring.spark_seconds:>12,.0f} rows/s  "
            f"reference {scoring.rows / scoring.reference_seconds:>12,.0f} rows/s  "
            f"ratio {scoring.ratio:.3f}  target >= {TARGET_SCORING}  "
            f"{verdict(scoring.ratio, TARGET_SCORING)}"
            if scoring
            else "(a) scoring  skipped (--publish-only)"
        ),
        f"(b) publish  Redis {published.rate:>12,.0f} users/s  "
        f"benchmark {bench_rate:>12,.0f} SET/s   "
        f"ratio {published.ratio:.3f}  target >= {TARGET_PUBLISH}  "
        f"{verdict(published.ratio, TARGET_PUBLISH)}",
        f"(c) memory   {memory_text}",
        "=" * 78,
    ]
    return "\n".join(lines)


def describe(scale: Scale, settings: Settings) -> None:
    """Print the scale and the machine."""
    import platform

    import pyspark
    import xgboost

    say(
        f"bench: {scale.users:,} users x {scale.candidates} candidates = {scale.rows:,} rows, "
        f"K={scale.top_k}, {scale.trees} trees, seed {scale.seed}"
    )
    say(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, Spark {pyspark.__version__} "
        f"({settings.spark.master}), XGBoost {xgboost.__version__}, load "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    say(f"redis: {settings.redis.url}; data: {scale.workdir}")


def main(argv: Sequence[str]) -> int:
    """Generate, train, measure (a), (b) and (c), print the summary; exit 0 either way."""
    from rankflow.lake.session import get_session

    started = time.perf_counter()
    settings = load_settings()
    scale = parse_args(argv, settings)
    describe(scale, settings)
    scale.workdir.mkdir(parents=True, exist_ok=True)
    ranked_path = str(scale.workdir / f"ranked-{os.getpid()}")
    gold_path = str(scale.workdir / f"gold-{os.getpid()}")
    spark = get_session(settings, "rankflow-bench")
    scoring: ScoringResult | None = None
    try:
        if scale.publish_only:
            write_synthetic_lists(spark, scale, ranked_path)
        else:
            path = ensure_candidates(spark, scale)
            model_raw = train_model(spark, path, scale, settings)
            scoring = bench_scoring(spark, path, ranked_path, model_raw, scale)
        snapshot = make_gold(spark, ranked_path, gold_path)
        published = bench_publish(spark, settings, gold_path, snapshot, scale.top_k)
        if scale.profile:
            profile_publish(settings, snapshot)
            if not scale.publish_only:
                profile_spark(spark, path, model_raw, scale)
    finally:
        spark.stop()
        shutil.rmtree(ranked_path, ignore_errors=True)
        shutil.rmtree(gold_path, ignore_errors=True)
        if not scale.keep and not scale.publish_only:
            shutil.rmtree(scale.data_dir, ignore_errors=True)
    print(summary(scale, scoring, published, time.perf_counter() - started), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

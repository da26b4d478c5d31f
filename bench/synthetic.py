"""Synthetic rows, model and small helpers shared by the benchmarks (``bench/``).

The candidate table (``user_id``, ``item_id`` and every ``MODEL_FEATURES`` column) is generated
in Spark and written to Parquet once per scale and seed; the model is LambdaMART with the
pipeline's parameters, trained on a sample of it with synthetic graded labels. The ranked lists
(scored, or made directly under ``--publish-only``) are stored as a gold Delta partition the way
the score step does.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rankflow.config import Settings
from rankflow.features.registry import ITEM_FEATURES, MODEL_FEATURES, USER_FEATURES
from rankflow.lake.gold import GoldSnapshot

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xgboost as xgb
    from pyspark.sql import Column, DataFrame, SparkSession

PREFIX = "rfbench"
SURFACE = "bench"
FIRST_USER = 10_000_000
ITEMS = 2_000_000
ITEM_STRIDE = 104_729  # a prime: (user * 7919 + c * stride) % ITEMS is distinct for c < ITEMS
TRAIN_USERS = 1_000
BENCH_DS = date(2024, 1, 31)


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
    publish_only: bool
    publish_users: int  # (b) at the nightly's size too, where fixed costs weigh less

    @property
    def rows(self) -> int:
        """Return the number of candidate rows (users x candidates)."""
        return self.users * self.candidates

    @property
    def data_dir(self) -> Path:
        """Return the folder of this scale's candidate table (reused while it exists)."""
        return self.workdir / f"candidates-{self.users}x{self.candidates}-s{self.seed}-by-user"


# --------------------------------------------------------------------------- helpers


def env_int(name: str, default: int) -> int:
    """Return an integer environment variable, or ``default`` when unset or empty."""
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


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


def pickle_by_value(module_name: str) -> None:
    """Have Spark ship a bench module's functions to its workers by value, not by import."""
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[module_name])


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
        """Return 0 for a ``share_zero`` of rows, else a uniform draw (3 decimals)."""
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
    """Return ``user_id, item_id, <MODEL_FEATURES as double>``, each user's rows in one partition.

    Built in projections (hashes, draws, item and user features, cross features) so that no
    hash is computed twice and the generated code stays small.
    """
    from pyspark.sql import functions as F

    c = scale.candidates
    users = spark.range(0, scale.users, numPartitions=spark.sparkContext.defaultParallelism * 8)
    # a user's rows in its partition (explode is narrow): files hold whole users, as the
    # score step's input holds them (scoring_input places each user's rows in one partition)
    ids = users.select(
        F.col("id").alias("user"), F.explode(F.sequence(F.lit(0), F.lit(c - 1))).alias("rank")
    ).select((F.col("user") * c + F.col("rank")).alias("id"))
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


# --------------------------------------------------------------------------- candidates as Arrow


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


# --------------------------------------------------------------------------- ranked lists and gold


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
    """Store the ranked lists as a gold Delta partition, placed by bucket as the score step does."""
    from pyspark.sql import functions as F

    from rankflow.lake.gold import write_gold
    from rankflow.lake.session import user_partitions
    from rankflow.model.scoring import RANKED_SCHEMA
    from rankflow.publish.redis import placed_by_bucket

    ranked = spark.read.parquet(ranked_path)
    if "items_u32le" not in ranked.columns:  # the synthetic lists of --publish-only
        ranked = ranked.mapInArrow(with_encoded_lists, RANKED_SCHEMA)
    placed = placed_by_bucket(ranked, ranked.count(), user_partitions(spark))
    gold = placed.select("*", F.lit(BENCH_DS).alias("ds"), F.lit(SURFACE).alias("surface"))
    return write_gold(gold, gold_path, BENCH_DS, SURFACE)


def with_encoded_lists(batches: Iterator[Any]) -> Iterator[Any]:
    """Add the ``items_u32le`` column the scorer writes to lists made without the scorer."""
    from rankflow.store.encoding import encode_list_array

    for batch in batches:
        yield batch.append_column("items_u32le", encode_list_array(batch.column("item_ids")))


# Spark's Python workers cannot import bench/: ship this module's functions (with_encoded_lists,
# to_matrix) to them by value
pickle_by_value(__name__)

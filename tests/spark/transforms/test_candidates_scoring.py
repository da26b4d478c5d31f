"""Features and candidates of the last tiny day, and batch scoring against a pandas reference.

The tiny simulated marketplace of ``tests/spark/conftest.py`` (5 days, featurised once per
session); the scoring tests use hand-made candidate frames and a small random model instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from rankflow.config import Settings
from rankflow.features.registry import MODEL_FEATURES
from tiny_lake import ACTIVE_USER_DAYS, TINY_DAY, set_conf

pytestmark = pytest.mark.spark

D = TINY_DAY  # the scoring day: the last generated day
ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"
SOURCES = {"category", "similar", "popular", "fresh"}
FEATURE_KEYS = {"items": ["item_id"], "users": ["user_id"], "seen": ["user_id", "item_id"]}
MODEL_KEY = "test-random-ranker"


@pytest.fixture(scope="module")
def candidates(spark: Any, lake: Settings, feature_versions: dict[str, int]) -> Any:
    """The candidates of ``D`` (``user_id, item_id, sources``) as pandas."""
    from rankflow.lake.tables import read_partition
    from rankflow.steps.candidates import run_candidates

    record = run_candidates(spark, lake, D)
    frame = read_partition(spark, lake, "silver/candidates", D).toPandas()
    assert record == {"rows": len(frame), "users": frame["user_id"].nunique()}
    return frame


@pytest.fixture(scope="module")
def history(spark: Any, lake: Settings) -> Any:
    """Every bronze event (``user_id, item_id, event_type, ds``) as pandas."""
    from rankflow.lake.tables import read_table

    events = read_table(spark, lake, "bronze/events")
    return events.select("user_id", "item_id", "event_type", "ds").toPandas()


def test_no_candidate_is_sold_by_the_end_of_the_day(
    spark: Any, lake: Settings, candidates: Any, history: Any
) -> None:
    from rankflow.lake.tables import read_partition

    purchases = history[(history["event_type"] == "purchase") & (history["ds"] <= D)]
    sold = set(purchases["item_id"])
    assert set(purchases.loc[purchases["ds"] == D, "item_id"])  # some sold on D itself
    assert sold.isdisjoint(candidates["item_id"])
    # without the filter some would be candidates: "popular" gives everyone the global top
    items = read_partition(spark, lake, "silver/item_features", D).toPandas()
    popular = int(lake.pipeline["candidates"]["popular"])
    top = items.sort_values(["popularity", "item_id"], ascending=[False, True]).head(popular)
    assert sold & set(top["item_id"])


def test_no_user_has_more_than_the_cap(lake: Settings, candidates: Any) -> None:
    cap = int(lake.pipeline["candidates"]["max_per_user"])
    per_user = candidates.groupby("user_id").size()
    assert per_user.max() == cap  # the cap binds for some users ...
    assert (per_user <= cap).all()  # ... and no one gets more
    assert not candidates.duplicated(["user_id", "item_id"]).any()


def test_exactly_the_active_users_get_candidates(
    spark: Any, lake: Settings, candidates: Any, history: Any
) -> None:
    from rankflow.lake.tables import read_table

    since = D - timedelta(days=ACTIVE_USER_DAYS - 1)
    active = set(history.loc[history["ds"] >= since, "user_id"])
    inactive = set(history["user_id"]) - active  # events only before the window
    registered = set(read_table(spark, lake, "bronze/users").toPandas()["user_id"])
    no_history = registered - set(history["user_id"])
    assert active
    assert inactive
    assert no_history

    assert set(candidates["user_id"]) == active
    assert no_history.isdisjoint(candidates["user_id"])


def test_every_candidate_comes_from_known_sources(candidates: Any) -> None:
    sources = candidates["sources"].map(list)
    assert (sources.map(len) >= 1).all()
    assert all(set(s) <= SOURCES for s in sources)
    assert all(s == sorted(set(s)) for s in sources)  # sorted and without repeats
    assert set().union(*sources.map(set)) == SOURCES  # every generator contributed


def partition_at(spark: Any, path: str, version: int, keys: list[str]) -> list[Any]:
    """Collect the ``D`` partition of a Delta table as it was at ``version``, sorted by ``keys``."""
    from pyspark.sql import functions as F

    table = spark.read.format("delta").option("versionAsOf", version).load(path)
    return table.where(F.col("ds") == F.lit(D.isoformat()).cast("date")).orderBy(*keys).collect()


def test_features_rewrite_is_idempotent(
    spark: Any, lake: Settings, feature_versions: dict[str, int]
) -> None:
    from pyspark.testing import assertDataFrameEqual

    from rankflow.lake.tables import FEATURE_TABLES, table_version
    from rankflow.steps.features import run_features

    before = {face: table_version(spark, lake.paths.table(t)) for face, t in FEATURE_TABLES.items()}
    counts = run_features(spark, lake, D)

    assert counts["items"] > 1000
    assert counts["users"] > 400
    assert counts["seen"] > 1000
    for face, table in FEATURE_TABLES.items():
        path = lake.paths.table(table)
        version = before[face]
        assert version >= feature_versions[face]
        assert table_version(spark, path) == version + 1

        again = partition_at(spark, path, version + 1, FEATURE_KEYS[face])
        assert len(again) == counts[face]
        assertDataFrameEqual(
            again,
            partition_at(spark, path, version, FEATURE_KEYS[face]),
            checkRowOrder=True,
            rtol=1e-9,
            atol=0.0,
        )


@pytest.fixture(scope="module")
def model() -> tuple[Any, bytes]:
    """A small LambdaMART model trained on random data with the real feature names."""
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(11)
    features = rng.normal(size=(600, len(MODEL_FEATURES))).astype("float32")
    train = xgb.DMatrix(features, label=rng.integers(0, 5, size=600), feature_names=MODEL_FEATURES)
    train.set_group([20] * 30)
    params = {"objective": "rank:ndcg", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0}
    booster = xgb.train(params, train, num_boost_round=8)
    return booster, bytes(booster.save_raw("json"))


@pytest.fixture
def small_arrow_batches(spark: Any) -> Iterator[int]:
    """Make Arrow batches 16 rows long, so most users straddle two or more of them."""
    previous = spark.conf.get(ARROW_BATCH, None)
    spark.conf.set(ARROW_BATCH, "16")
    yield 16
    set_conf(spark, ARROW_BATCH, previous)


def candidate_rows(sizes: list[int], seed: int) -> Any:
    """Return shuffled candidate rows: ``sizes[u]`` rows for user u, random features.

    The second row of every user copies the first one's features (a guaranteed score tie) and
    about 5% of the feature values are missing.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    users = np.repeat(700_000 + 13 * np.arange(len(sizes), dtype=np.int64), sizes)
    items = rng.permutation(np.arange(2_000_000, 2_000_000 + len(users), dtype=np.int64))
    features = rng.normal(size=(len(users), len(MODEL_FEATURES))).astype("float32")
    firsts = np.r_[0, np.cumsum(sizes)[:-1]]
    features[firsts + 1] = features[firsts]
    features[rng.random(features.shape) < 0.05] = np.nan
    frame = pd.DataFrame(features.astype("float64"), columns=MODEL_FEATURES)
    frame.insert(0, "item_id", items)
    frame.insert(0, "user_id", users)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def reference_top_k(booster: Any, rows: Any, k: int) -> dict[int, tuple[Any, Any]]:
    """Score every row at once in pandas, then sort each user's rows: score desc, item id asc."""
    scored = rows[["user_id", "item_id"]].assign(
        score=booster.inplace_predict(rows[MODEL_FEATURES].to_numpy(dtype="float32"))
    )
    out = {}
    for user, group in scored.groupby("user_id"):
        best = group.sort_values(["score", "item_id"], ascending=[False, True]).head(k)
        out[int(user)] = (best["item_id"].to_numpy(), best["score"].to_numpy(dtype="float32"))
    return out


def assert_matches_reference(ranked: Any, reference: dict[int, tuple[Any, Any]]) -> None:
    import numpy as np

    assert not ranked["user_id"].duplicated().any()
    assert set(ranked["user_id"]) == set(reference)
    for user, item_ids, scores in ranked[["user_id", "item_ids", "scores"]].itertuples(index=False):
        want_items, want_scores = reference[int(user)]
        assert len(item_ids) == len(scores) == len(want_items)
        np.testing.assert_array_equal(np.asarray(item_ids, dtype="int64"), want_items)
        np.testing.assert_array_equal(np.asarray(scores, dtype="float32"), want_scores)


def test_scoring_matches_a_pandas_reference_across_arrow_batches(
    spark: Any, model: tuple[Any, bytes], small_arrow_batches: int
) -> None:
    import numpy as np

    from rankflow.model.scoring import score_candidates

    booster, raw = model
    k = 10
    rng = np.random.default_rng(5)
    sizes = [7, 9, 10, 11, 16, 17, 40, *rng.integers(7, 41, size=40).tolist()]
    rows = candidate_rows(sizes, seed=5)
    reference = reference_top_k(booster, rows, k)
    # the tie-break matters: some top-k list holds two equal scores
    assert any(len(np.unique(s)) < len(s) for _, s in reference.values())

    ranked = score_candidates(spark.createDataFrame(rows), raw, MODEL_KEY, k).toPandas()

    assert len(ranked) == len(sizes)
    by_user = dict(zip(ranked["user_id"], ranked["item_ids"].map(len), strict=True))
    assert sorted(by_user.values()) == sorted(min(k, n) for n in sizes)
    assert_matches_reference(ranked, reference)


def test_scoring_survives_empty_partitions_and_long_users(
    spark: Any, model: tuple[Any, bytes], small_arrow_batches: int
) -> None:
    from rankflow.model.scoring import score_candidates

    booster, raw = model
    rows = candidate_rows([40], seed=6)  # one user over 3 Arrow batches, other partitions empty
    ranked = score_candidates(spark.createDataFrame(rows), raw, MODEL_KEY, 100).toPandas()

    assert len(ranked) == 1
    assert len(ranked["item_ids"].iat[0]) == 40
    assert_matches_reference(ranked, reference_top_k(booster, rows, 100))


def test_the_scoring_input_is_placed_by_user_and_equals_the_plain_join(
    spark: Any, lake: Settings, candidates: Any
) -> None:
    from pyspark.sql import functions as F
    from pyspark.testing import assertDataFrameEqual

    from rankflow.days import day
    from rankflow.features.on_demand import with_cross_features
    from rankflow.features.registry import feature_vector
    from rankflow.lake.tables import read_features, read_partition, scoring_input

    placed = scoring_input(spark, lake, D)
    partitions = (
        placed.withColumn("partition", F.spark_partition_id())
        .groupBy("user_id")
        .agg(F.countDistinct("partition").alias("partitions"))
    )
    assert partitions.where("partitions > 1").count() == 0  # each user's rows in one partition
    assert partitions.count() == candidates["user_id"].nunique()

    # the same rows and values as the features joined in the plain order
    pairs = read_partition(spark, lake, "silver/candidates", D).select(
        day(D).alias("as_of"), "user_id", "item_id"
    )
    plain = with_cross_features(pairs, read_features(spark, lake, D)).select(
        "user_id", "item_id", *feature_vector()
    )
    assert placed.count() == len(candidates)
    assertDataFrameEqual(placed, plain, rtol=0.0, atol=0.0)


def test_many_candidate_rows_get_more_partitions_so_each_stays_small(spark) -> None:
    from rankflow.lake.session import ROWS_PER_USER_PARTITION, task_slots, user_partitions

    few = max(task_slots(spark) * 2, 2)
    assert user_partitions(spark) == user_partitions(spark, ROWS_PER_USER_PARTITION) == few
    assert user_partitions(spark, 47 * ROWS_PER_USER_PARTITION - 1) == max(few, 47)
    assert user_partitions(spark, 47 * ROWS_PER_USER_PARTITION + 1) == max(few, 48)


def test_user_item_features_computed_in_the_scorer_give_the_lists_of_the_joined_features(
    spark: Any, lake: Settings, candidates: Any, model: tuple[Any, bytes], small_arrow_batches: int
) -> None:
    """The score step's one pass (features, predict, best k) equals scoring the joined rows."""
    from rankflow.lake.tables import scoring_input
    from rankflow.model.scoring import score_candidates

    booster, raw = model
    k = 7
    features = scoring_input(spark, lake, D)
    reference = reference_top_k(booster, features.toPandas(), k)
    one_pass = score_candidates(
        scoring_input(spark, lake, D, user_item_features=False),
        raw,
        MODEL_KEY,
        k,
        placed_by_user=True,
        cross_features=True,
    ).toPandas()
    assert len(one_pass) == candidates["user_id"].nunique()
    assert_matches_reference(one_pass, reference)  # users straddle 16-row Arrow batches


def test_gold_files_written_from_lists_placed_by_bucket_hold_whole_buckets(
    spark: Any, lake: Settings, candidates: Any, model: tuple[Any, bytes], tmp_path: Any
) -> None:
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from rankflow.days import day
    from rankflow.lake.gold import write_gold
    from rankflow.lake.tables import scoring_input
    from rankflow.model.scoring import score_candidates
    from rankflow.publish.redis import placed_by_bucket
    from rankflow.store.keys import USERS_PER_BUCKET, bucket_count

    _, raw = model
    ranked = score_candidates(scoring_input(spark, lake, D), raw, MODEL_KEY, 5, placed_by_user=True)
    users = candidates["user_id"].nunique()
    buckets = bucket_count(users, USERS_PER_BUCKET)
    files = min(3, buckets - 1)  # fewer files than buckets: some file must hold several
    assert files >= 2
    gold = placed_by_bucket(ranked, users, files).select(
        "*", day(D).alias("ds"), F.lit("home").alias("surface")
    )
    snapshot = write_gold(gold, str(tmp_path / "gold"), D, "home")

    assert snapshot.users == users
    per_file = [
        set((pq.read_table(location, columns=["user_id"])["user_id"].to_numpy() % buckets).tolist())
        for location, _ in snapshot.locations()
    ]
    assert len(per_file) == files
    assert sum(len(b) for b in per_file) == len(set().union(*per_file))  # no bucket in two files

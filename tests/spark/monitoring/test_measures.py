"""The monitor step's Spark measures: drift histograms on the reference's quantile bins."""

from __future__ import annotations

import numpy as np
import pytest

from rankflow.monitoring.measures import (
    binned_counts,
    drift_figures,
    quantile_edges,
    recall_figures,
    user_sample,
)

pytestmark = [pytest.mark.spark]


def frame(spark, values: np.ndarray, users: np.ndarray | None = None):
    users = np.arange(len(values)) if users is None else users
    rows = [(int(u), None if np.isnan(v) else float(v)) for u, v in zip(users, values, strict=True)]
    return spark.createDataFrame(rows, "user_id long, x double")


def test_a_shifted_feature_drifts_and_a_resampled_one_does_not(spark) -> None:
    rng = np.random.default_rng(5)
    reference = frame(spark, rng.normal(0, 1, 20_000))
    same = frame(spark, rng.normal(0, 1, 20_000))
    shifted = frame(spark, rng.normal(0.8, 1, 20_000))
    steady = {f.metric: f.value for f in drift_figures(reference, same, ["x"], 10, "feature")}
    moved = {f.metric: f.value for f in drift_figures(reference, shifted, ["x"], 10, "feature")}
    assert steady["feature_psi"] < 0.02
    assert moved["feature_psi"] > 0.25
    assert moved["feature_js"] > 10 * steady["feature_js"]


def test_nulls_have_their_own_bin_so_a_feature_going_missing_is_drift(spark) -> None:
    rng = np.random.default_rng(6)
    values = rng.normal(0, 1, 5_000)
    edges = quantile_edges(frame(spark, values), ["x"], 10)
    assert len(edges["x"]) == 9
    half_missing = values.copy()
    half_missing[::2] = np.nan
    counts = binned_counts(frame(spark, half_missing), edges)["x"]
    assert counts.sum() == 5_000
    assert counts[-1] == 2_500
    figures = drift_figures(frame(spark, values), frame(spark, half_missing), ["x"], 10, "f")
    assert next(f.value for f in figures if f.metric == "f_psi") > 1


def test_the_user_sample_is_the_same_users_every_day(spark) -> None:
    users = np.arange(20_000)
    day_one = user_sample(frame(spark, np.zeros(20_000), users), 10, seed=11)
    day_two = user_sample(frame(spark, np.ones(20_000), users), 10, seed=11)
    picked = {r[0] for r in day_one.select("user_id").collect()}
    assert picked == {r[0] for r in day_two.select("user_id").collect()}
    assert 1_700 < len(picked) < 2_300


def pairs(spark, rows: list[tuple[int, int]]):
    return spark.createDataFrame(rows, "user_id long, item_id long")


def test_served_recall_is_the_mean_share_of_each_users_acted_items_in_their_list(spark) -> None:
    # user 1 acted on 4 items, 1 listed and 3 among the candidates; user 2 on 1 item, listed;
    # user 3 acted but had no list (not counted); user 4 had a list and did nothing (not counted)
    acted = pairs(spark, [(1, 10), (1, 11), (1, 12), (1, 13), (2, 20), (3, 30)])
    users = spark.createDataFrame([(1,), (2,), (4,)], "user_id long")
    listed = pairs(spark, [(1, 10), (1, 99), (2, 20), (4, 40)])
    candidates = pairs(spark, [(1, 10), (1, 11), (1, 12), (1, 99), (2, 20), (2, 21), (4, 40)])
    got = {f.metric: f.value for f in recall_figures(acted, users, listed, candidates)}
    assert got["served_recall"] == pytest.approx((1 / 4 + 1) / 2)
    assert got["candidate_recall"] == pytest.approx((3 / 4 + 1) / 2)
    assert got["recall_users"] == 2


def test_no_served_recall_without_lists(spark) -> None:
    acted = pairs(spark, [(1, 10)])
    nobody = spark.createDataFrame([], "user_id long")
    assert recall_figures(acted, nobody, pairs(spark, []), pairs(spark, [])) == []

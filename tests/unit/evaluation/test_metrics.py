"""Offline ranking metrics: sklearn parity, a per-group Python reference, hand-computed cases."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from rankflow.evaluation import metrics as m

KS = (1, 3, 5, 10, 20, None)
EMPTIES: tuple[m.Empty, ...] = ("one", "zero", "skip")
GAINS: tuple[m.Gain, ...] = ("exponential", "linear")
FILL = {"one": 1.0, "zero": 0.0, "skip": math.nan}


def random_case(
    rng: np.random.Generator, n_groups: int, max_size: int = 50, tied_scores: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random groups of 1..max_size rows, labels 0..4 with many zeros, rows shuffled."""
    sizes = rng.integers(1, max_size + 1, n_groups)
    ids = rng.choice(10 * n_groups + 10, n_groups, replace=False)
    group = np.repeat(ids, sizes)
    n = group.shape[0]
    label = np.where(rng.random(n) < 0.6, 0, rng.integers(1, 5, n))
    # Some groups without any relevant row, to exercise the empty conventions.
    label[np.isin(group, ids[rng.random(n_groups) < 0.2])] = 0
    score = rng.integers(0, 4, n).astype(float) if tied_scores else rng.normal(size=n)
    perm = rng.permutation(n)
    return group[perm], label[perm], score[perm]


def reference_ranked_labels(
    group: np.ndarray, label: np.ndarray, score: np.ndarray
) -> list[list[float]]:
    """Labels of each group (sorted group id) in ranked order, ties by input order."""
    out = []
    for g in sorted(set(group.tolist())):
        rows = [i for i in range(len(group)) if group[i] == g]
        rows.sort(key=lambda i: (-score[i], i))
        out.append([float(label[i]) for i in rows])
    return out


def ref_ndcg(ranked: list[float], k: int | None, gain: str, empty: str) -> float:
    cut = len(ranked) if k is None else k

    def g(rel: float) -> float:
        return 2.0**rel - 1.0 if gain == "exponential" else rel

    def dcg(labels: list[float]) -> float:
        return sum(g(rel) / math.log2(i + 2) for i, rel in enumerate(labels[:cut]))

    ideal = dcg(sorted(ranked, reverse=True))
    return FILL[empty] if ideal == 0 else dcg(ranked) / ideal


def ref_ap(ranked: list[float], k: int | None, empty: str) -> float:
    n_rel = sum(rel > 0 for rel in ranked)
    if n_rel == 0:
        return FILL[empty]
    cut = len(ranked) if k is None else k
    hits, total = 0, 0.0
    for i, rel in enumerate(ranked[:cut]):
        if rel > 0:
            hits += 1
            total += hits / (i + 1)
    return total / min(cut, n_rel)


def ref_rr(ranked: list[float], k: int | None, empty: str) -> float:
    if not any(rel > 0 for rel in ranked):
        return FILL[empty]
    first = next(i for i, rel in enumerate(ranked) if rel > 0)
    return 1.0 / (first + 1) if k is None or first < k else 0.0


def ref_recall(ranked: list[float], k: int | None, empty: str) -> float:
    n_rel = sum(rel > 0 for rel in ranked)
    if n_rel == 0:
        return FILL[empty]
    return sum(rel > 0 for rel in ranked[:k]) / n_rel


def ref_mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


# --- sklearn parity (linear gain) -------------------------------------------------------------


@pytest.mark.parametrize("k", KS)
def test_linear_ndcg_matches_sklearn(k: int | None) -> None:
    rng = np.random.default_rng(20240611 + (k or 0))
    for _ in range(40):
        group, label, score = random_case(rng, n_groups=int(rng.integers(1, 30)))
        ours = m.ndcg_at_k_per_group(group, label, score, k=k, gain="linear", empty="zero")
        expected = []
        for g in np.unique(group):
            y_true, y_score = label[group == g], score[group == g]
            if y_true.shape[0] == 1:
                # sklearn needs >= 2 items; a trailing irrelevant item changes neither DCG.
                y_true, y_score = np.append(y_true, 0), np.append(y_score, y_score[0] - 1)
            expected.append(ndcg_score([y_true], [y_score], k=k))
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
        assert m.ndcg_at_k(group, label, score, k=k, gain="linear", empty="zero") == (
            pytest.approx(float(np.mean(expected)), abs=1e-9)
        )


def test_sklearn_parity_on_equal_sized_groups_in_one_call() -> None:
    rng = np.random.default_rng(7)
    y_true = np.where(rng.random((25, 12)) < 0.5, 0, rng.integers(1, 5, (25, 12)))
    y_true[3] = 0  # an all-irrelevant query: sklearn scores it 0, our empty="zero"
    y_score = rng.normal(size=(25, 12))
    group = np.repeat(np.arange(25), 12)
    ours = m.ndcg_at_k(group, y_true.ravel(), y_score.ravel(), k=5, gain="linear", empty="zero")
    assert ours == pytest.approx(ndcg_score(y_true, y_score, k=5), abs=1e-12)


# --- per-group Python reference (all metrics, ties in score) ---------------------------------


@pytest.mark.parametrize("tied_scores", [False, True])
@pytest.mark.parametrize("k", KS)
def test_metrics_match_python_reference(k: int | None, tied_scores: bool) -> None:
    rng = np.random.default_rng(99 + (k or 0) + 1000 * tied_scores)
    for _ in range(15):
        group, label, score = random_case(rng, int(rng.integers(1, 25)), tied_scores=tied_scores)
        ranked = reference_ranked_labels(group, label, score)
        for empty in EMPTIES:
            for gain in GAINS:
                expected = [ref_ndcg(r, k, gain, empty) for r in ranked]
                got = m.ndcg_at_k_per_group(group, label, score, k, gain, empty)
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
                mean = m.ndcg_at_k(group, label, score, k, gain, empty)
                np.testing.assert_allclose(mean, ref_mean(expected), rtol=0, atol=1e-12)
            for per_group, mean_fn, ref in (
                (m.map_at_k_per_group, m.map_at_k, ref_ap),
                (m.mrr_per_group, m.mrr, ref_rr),
                (m.recall_at_k_per_group, m.recall_at_k, ref_recall),
            ):
                expected = [ref(r, k, empty) for r in ranked]
                got = per_group(group, label, score, k, empty)
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
                mean = mean_fn(group, label, score, k, empty)
                np.testing.assert_allclose(mean, ref_mean(expected), rtol=0, atol=1e-12)


# --- hand-computed cases ----------------------------------------------------------------------


def test_exponential_ndcg_hand_computed() -> None:
    # Ranked labels 2, 3, 0, 1. DCG = 3 + 7/log2(3) + 0 + 1/log2(5) = 7.847184833;
    # ideal 3, 2, 1, 0: IDCG = 7 + 3/log2(3) + 1/2 = 9.392789261.
    group, label, score = [5, 5, 5, 5], [2, 3, 0, 1], [0.9, 0.8, 0.7, 0.6]
    assert m.ndcg_at_k(group, label, score, k=None) == pytest.approx(0.8354477690556398, 1e-12)
    assert m.ndcg_at_k(group, label, score, k=4) == pytest.approx(0.8354477690556398, 1e-12)
    # k=2: (3 + 7/log2(3)) / (7 + 3/log2(3))
    assert m.ndcg_at_k(group, label, score, k=2) == pytest.approx(0.8339912323981488, 1e-12)
    # k=1: 3 / 7
    assert m.ndcg_at_k(group, label, score, k=1) == pytest.approx(3 / 7, 1e-12)
    # Linear gain: (2 + 3/log2(3) + 1/log2(5)) / (3 + 2/log2(3) + 1/2)
    assert m.ndcg_at_k(group, label, score, k=None, gain="linear") == pytest.approx(
        0.9079364505194771, 1e-12
    )


def test_map_divides_by_min_of_k_and_relevant_count() -> None:
    # Ranked relevance 0, 1, 1, 1: top 2 holds one hit at rank 2 -> (1/2) / min(2, 3).
    group, label, score = [1, 1, 1, 1], [0, 1, 1, 1], [4.0, 3.0, 2.0, 1.0]
    assert m.map_at_k(group, label, score, k=2) == pytest.approx(0.25)
    # Full list: (1/2 + 2/3 + 3/4) / 3
    assert m.map_at_k(group, label, score, k=None) == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
    assert m.mrr(group, label, score) == pytest.approx(0.5)
    assert m.mrr(group, label, score, k=1) == 0.0
    assert m.recall_at_k(group, label, score, k=2) == pytest.approx(1 / 3)


def test_perfect_ordering_scores_one() -> None:
    rng = np.random.default_rng(3)
    group, label, _ = random_case(rng, n_groups=30)
    perfect = label + rng.random(label.shape[0]) * 0.5  # sorts by label, any order among equals
    for k in KS:
        for gain in GAINS:
            assert m.ndcg_at_k(group, label, perfect, k, gain, "skip") == pytest.approx(1.0)
        assert m.ndcg_at_k(group, label, perfect, k, empty="one") == pytest.approx(1.0)
        assert m.map_at_k(group, label, perfect, k) == pytest.approx(1.0)
    assert m.mrr(group, label, perfect) == pytest.approx(1.0)
    assert m.recall_at_k(group, label, perfect, k=None) == pytest.approx(1.0)
    assert m.recall_at_k(group, label, perfect, k=50) == pytest.approx(1.0)


def test_reversed_two_items() -> None:
    group, label, score = [1, 1], [1, 0], [0.0, 1.0]
    expected = 1 / math.log2(3)  # relevant item at rank 2; ideal DCG is 1
    assert m.ndcg_at_k(group, label, score, k=None) == pytest.approx(expected, abs=1e-15)
    assert m.ndcg_at_k(group, label, score, k=2) == pytest.approx(0.6309297535714575, abs=1e-15)
    assert m.ndcg_at_k(group, label, score, k=1) == 0.0
    assert m.map_at_k(group, label, score, k=None) == 0.5
    assert m.mrr(group, label, score) == 0.5
    assert m.recall_at_k(group, label, score, k=1) == 0.0
    assert m.recall_at_k(group, label, score, k=2) == 1.0


def test_ties_are_broken_by_input_order() -> None:
    score = [0.5, 0.5]
    assert m.ndcg_at_k([1, 1], [0, 1], score) == pytest.approx(1 / math.log2(3))
    assert m.ndcg_at_k([1, 1], [1, 0], score) == 1.0
    assert m.mrr([1, 1], [0, 1], score) == 0.5


# --- empty-group conventions ------------------------------------------------------------------


def test_empty_group_conventions() -> None:
    # Group 1: relevant item ranked 2nd -> NDCG 1/log2(3), AP 1/2, RR 1/2, recall@1 0.
    # Group 2: no relevant item (ideal DCG 0).
    group, label, score = [1, 1, 2, 2], [1, 0, 0, 0], [0.2, 0.9, 0.5, 0.1]
    a = 1 / math.log2(3)
    assert m.ndcg_at_k(group, label, score, empty="one") == pytest.approx((a + 1) / 2)
    assert m.ndcg_at_k(group, label, score, empty="zero") == pytest.approx(a / 2)
    assert m.ndcg_at_k(group, label, score, empty="skip") == pytest.approx(a)
    per_group = m.ndcg_at_k_per_group(group, label, score, empty="skip")
    assert per_group[0] == pytest.approx(a)
    assert np.isnan(per_group[1])
    assert m.ndcg_at_k(group, label, score) == pytest.approx((a + 1) / 2)  # default "one"
    for fn in (m.map_at_k, m.mrr):
        assert fn(group, label, score) == pytest.approx(0.5)  # default "skip"
        assert fn(group, label, score, empty="one") == pytest.approx(0.75)
        assert fn(group, label, score, empty="zero") == pytest.approx(0.25)
    assert m.recall_at_k(group, label, score, k=1) == 0.0
    assert m.recall_at_k(group, label, score, k=1, empty="one") == 0.5


def test_no_group_left_gives_nan() -> None:
    group, label, score = [1, 1, 2], [0, 0, 0], [0.1, 0.2, 0.3]
    assert math.isnan(m.ndcg_at_k(group, label, score, empty="skip"))
    assert m.ndcg_at_k(group, label, score, empty="one") == 1.0
    assert m.ndcg_at_k(group, label, score, empty="zero") == 0.0
    assert math.isnan(m.map_at_k(group, label, score))
    assert math.isnan(m.mrr(group, label, score))
    assert math.isnan(m.recall_at_k(group, label, score))


def test_empty_input() -> None:
    result = m.evaluate_ranking(np.array([], dtype=int), [], [])
    assert result["groups"] == 0
    assert all(math.isnan(v) for key, v in result.items() if not key.startswith("groups"))
    assert m.ndcg_at_k_per_group([], [], []).shape == (0,)


# --- group layout ------------------------------------------------------------------------------


def test_non_contiguous_groups_equal_sorted_groups() -> None:
    rng = np.random.default_rng(11)
    group, label, score = random_case(rng, n_groups=200, tied_scores=True)
    assert np.any(np.diff(group) != 0)
    # A stable sort by group keeps each group's rows in input order, so ties resolve the same.
    order = np.argsort(group, kind="stable")
    shuffled = m.evaluate_ranking(group, label, score)
    contiguous = m.evaluate_ranking(group[order], label[order], score[order])
    assert shuffled == contiguous
    for fn in (m.ndcg_at_k_per_group, m.map_at_k_per_group, m.recall_at_k_per_group):
        np.testing.assert_array_equal(
            fn(group, label, score), fn(group[order], label[order], score[order])
        )


def test_per_group_values_follow_sorted_group_ids() -> None:
    group, label, score = [30, 10, 20, 10], [1, 1, 0, 0], [0.5, 0.1, 0.2, 0.9]
    # Sorted ids: 10 (relevant ranked 2nd), 20 (empty), 30 (relevant ranked 1st).
    np.testing.assert_allclose(m.mrr_per_group(group, label, score), [0.5, np.nan, 1.0])


def test_string_group_ids_and_group_codes() -> None:
    ids = np.array(["q-b", "q-a", "q-b", "q-c", "q-a"])
    codes = m.group_codes(ids)
    np.testing.assert_array_equal(codes, [1, 0, 1, 2, 0])
    assert codes.dtype == np.int64
    label, score = [1, 0, 0, 2, 1], [0.1, 0.3, 0.2, 0.5, 0.4]
    assert m.evaluate_ranking(ids, label, score) == m.evaluate_ranking(codes, label, score)


# --- evaluate_ranking -------------------------------------------------------------------------


def test_evaluate_ranking_keys_and_values() -> None:
    rng = np.random.default_rng(5)
    group, label, score = random_case(rng, n_groups=60)
    result = m.evaluate_ranking(group, label, score, cutoffs=(10, 20), recall_k=100)
    assert list(result) == [
        "ndcg@10",
        "ndcg@20",
        "map@10",
        "map@20",
        "mrr",
        "recall@100",
        "groups",
        "groups_with_relevant",
    ]
    assert result["groups"] == 60
    assert result["groups_with_relevant"] == len(np.unique(group[label > 0]))
    assert result["ndcg@10"] == m.ndcg_at_k(group, label, score, 10)
    assert result["ndcg@20"] == m.ndcg_at_k(group, label, score, 20)
    assert result["map@10"] == m.map_at_k(group, label, score, 10)
    assert result["mrr"] == m.mrr(group, label, score)
    assert result["recall@100"] == m.recall_at_k(group, label, score, 100)
    skipped = m.evaluate_ranking(group, label, score, ndcg_empty="skip")
    assert skipped["ndcg@10"] == m.ndcg_at_k(group, label, score, 10, empty="skip")


def test_one_million_rows_vectorised() -> None:
    # Not a timing test: the suite just has to stay quick on ~1M rows with no per-group loop.
    rng = np.random.default_rng(1)
    n = 1_000_000
    group = rng.integers(0, 50_000, n)
    label = np.where(rng.random(n) < 0.8, 0, rng.integers(1, 5, n))
    score = rng.normal(size=n)
    result = m.evaluate_ranking(group, label, score)
    assert result["groups"] == len(np.unique(group))
    assert all(0.0 <= v <= 1.0 for key, v in result.items() if not key.startswith("groups"))
    # Spot-check a few groups against the Python reference.
    per_group = m.ndcg_at_k_per_group(group, label, score, k=10)
    ids = np.unique(group)
    for pos in (0, 1234, len(ids) - 1):
        rows = group == ids[pos]
        ranked = reference_ranked_labels(group[rows], label[rows], score[rows])[0]
        assert per_group[pos] == pytest.approx(ref_ndcg(ranked, 10, "exponential", "one"), 1e-12)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label": [1, 0]}, "differ in length"),
        ({"label": [1, -1, 0]}, "non-negative"),
        ({"label": [1, np.nan, 0]}, "finite"),
        ({"score": [0.1, np.nan, 0.3]}, "NaN"),
        ({"group": [1.0, np.nan, 2.0]}, "group contains NaN"),
        ({"k": 0}, "positive integer"),
        ({"gain": "log"}, "gain"),
        ({"empty": "half"}, "empty"),
    ],
)
def test_invalid_inputs_raise(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"group": [1, 1, 2], "label": [1, 0, 1], "score": [0.1, 0.2, 0.3]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        m.ndcg_at_k(**args)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_our_ndcg_equals_xgboosts_on_generated_groups(seed: int) -> None:
    """XGBoost's own ndcg@10 (count-as-one for groups without a relevant item) is ours."""
    import xgboost as xgb

    from rankflow.model.fit import ranking_matrix

    rng = np.random.default_rng(seed)

    def groups(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        sizes = rng.integers(3, 40, count)
        qids = np.repeat(np.arange(count), sizes)
        features = rng.normal(size=(len(qids), 6))
        utility = features[:, 0] + 0.5 * features[:, 1] + rng.normal(0, 1, len(qids))
        labels = np.digitize(utility, [1.0, 1.8, 2.5, 3.2]).astype(float)  # grades 0..4
        labels[qids % 7 == 0] = 0.0  # some groups without any relevant item
        return features, labels, sizes, qids

    train_x, train_y, train_sizes, _ = groups(150)
    test_x, test_y, test_sizes, test_qids = groups(120)
    dtrain = ranking_matrix(train_x, train_y, train_sizes)
    dtest = ranking_matrix(test_x, test_y, test_sizes)
    params = {"objective": "rank:ndcg", "eval_metric": "ndcg@10", "seed": seed, "nthread": 1}
    booster = xgb.train(params, dtrain, 15)
    theirs = float(booster.eval(dtest, "test").split(":")[1])
    ours = m.ndcg_at_k(test_qids, test_y, booster.predict(dtest), 10, empty="one")
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert 0.3 < ours < 1.0  # a real ranking, not a degenerate one

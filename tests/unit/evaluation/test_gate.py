"""The promotion gate: paired bootstrap, explicit decisions, segments, list guardrails, overlap."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from rankflow.config import load_pipeline_config
from rankflow.evaluation.gate import (
    MetricParts,
    compare_segments,
    gate_decision,
    metric_parts,
    paired_bootstrap,
)
from rankflow.evaluation.lists import list_health, list_overlap, rank_biased_overlap, top_lists
from rankflow.evaluation.metrics import evaluate_ranking, group_codes

CONFIG: dict[str, Any] = {**load_pipeline_config()["evaluation"], "gate_metric": "ndcg@10"}
FEATURES = [f"x{i}" for i in range(5)]


def held_out(seed: int, groups: int = 400, size: int = 20) -> pd.DataFrame:
    """Query groups whose graded labels follow a utility of x0 (strong), x1 and x2 (weaker)."""
    rng = np.random.default_rng(seed)
    n = groups * size
    frame = pd.DataFrame(rng.normal(size=(n, 5)), columns=FEATURES)
    utility = 1.5 * frame.x0 + 0.7 * frame.x1 + 0.4 * frame.x2 + rng.normal(0, 0.7, n)
    frame["label"] = np.digitize(utility, [1.0, 2.0, 3.0]).astype(float)
    frame["qid"] = np.repeat(np.arange(groups), size)
    frame["position"] = np.tile(np.arange(1, size + 1), groups)
    frame["user_days_since_signup"] = np.repeat(rng.uniform(0, 60, groups), size)
    frame["item_impressions_28d"] = rng.integers(0, 100, n)
    frame["country"] = np.repeat(rng.choice(["FR", "DE", "LT"], groups), size)
    frame["category"] = rng.choice(["tops", "dresses", "shoes", "bags"], n)
    return frame


def train(frame: pd.DataFrame, features: list[str], seed: int) -> Any:
    """A small real LambdaMART on the given features (the others are hidden from it)."""
    import xgboost as xgb

    from rankflow.model.fit import group_sizes

    matrix = xgb.DMatrix(frame[features].to_numpy(), label=frame["label"].to_numpy())
    matrix.set_group(group_sizes(frame["qid"]))
    params = {"objective": "rank:ndcg", "eta": 0.3, "max_depth": 4, "seed": seed, "nthread": 1}
    booster = xgb.train(params, matrix, 40)
    return lambda rows: booster.inplace_predict(rows[features].to_numpy())


def decide(frame: pd.DataFrame, challenger: np.ndarray, champion: np.ndarray | None) -> Any:
    """The gate's decision on held-out rows with a popularity-like baseline (x2 alone)."""
    parts = {
        name: metric_parts(frame, scores, "ndcg@10", CONFIG, None)
        for name, scores in {"challenger": challenger, "popularity": frame.x2.to_numpy()}.items()
    }
    champion_parts = None
    segments = None
    if champion is not None:
        champion_parts = metric_parts(frame, champion, "ndcg@10", CONFIG, None)
        segments = compare_segments(frame, challenger, champion, None, CONFIG)
    return gate_decision(
        parts["challenger"], parts["popularity"], champion_parts, CONFIG, segments=segments
    )


@pytest.mark.parametrize("seed", range(20))
def test_a_challenger_trained_on_shuffled_labels_is_rejected(seed: int) -> None:
    fit, evaluation = held_out(seed), held_out(1000 + seed)
    champion = train(fit, FEATURES, seed)
    shuffled = fit.assign(label=np.random.default_rng(seed).permutation(fit["label"].to_numpy()))
    degraded = train(shuffled, FEATURES, seed)
    decision = decide(evaluation, degraded(evaluation), champion(evaluation))
    assert not decision.promote
    assert decision.difference.high < 0


def test_a_genuinely_better_challenger_is_promoted() -> None:
    fit, evaluation = held_out(1), held_out(2)
    champion = train(fit, ["x1", "x2", "x3"], 1)  # never saw the strongest feature
    challenger = train(fit, FEATURES, 1)
    decision = decide(evaluation, challenger(evaluation), champion(evaluation))
    assert decision.promote, decision.reason
    assert decision.reason.startswith("ndcg@10 challenger - champion = +")
    assert "checks passed" in decision.reason
    assert decision.difference.low > 0.05
    assert {s.status for s in decision.segments} == {"ok"}


def test_first_run_without_champion_is_an_explicit_promotion() -> None:
    evaluation = held_out(3)
    decision = decide(evaluation, evaluation.x0.to_numpy(), None)
    assert decision.promote
    assert "first model: there is no champion" in decision.reason
    assert decision.difference is None


def test_nan_scores_are_rejected_as_a_nan_metric() -> None:
    evaluation = held_out(4)
    broken = evaluation.x0.to_numpy().copy()
    broken[5] = np.nan
    decision = decide(evaluation, broken, evaluation.x1.to_numpy())
    assert not decision.promote
    assert "is NaN" in decision.reason


def test_an_empty_evaluation_set_is_rejected_explicitly() -> None:
    evaluation = held_out(5).iloc[0:0]
    decision = decide(evaluation, np.empty(0), np.empty(0))
    assert not decision.promote
    assert "empty evaluation set" in decision.reason


def test_a_segment_with_too_few_queries_is_not_judged_and_says_so() -> None:
    evaluation = held_out(6)
    evaluation.loc[evaluation.qid < 10, "country"] = "EE"  # 10 queries
    segments = compare_segments(
        evaluation, evaluation.x0.to_numpy(), evaluation.x1.to_numpy(), None, CONFIG
    )
    estonia = next(s for s in segments if s.name == "country=EE")
    assert estonia.status == "too_few_queries"
    assert estonia.queries == 10
    decision = decide(evaluation, evaluation.x0.to_numpy(), evaluation.x1.to_numpy())
    assert any("country=EE not judged: 10 queries" in c.detail for c in decision.checks)


def test_a_regression_confined_to_one_segment_blocks_promotion() -> None:
    evaluation = held_out(7)
    champion = evaluation.x0.to_numpy()
    challenger = champion.copy()
    france = (evaluation.country == "FR").to_numpy()
    challenger[france] = -champion[france]  # reversed order for French users only
    decision = decide(evaluation, challenger, champion)
    assert not decision.promote
    failed = [c.name for c in decision.checks if not c.passed]
    assert "segment country=FR" in failed


def test_parts_reproduce_the_evaluation_table_metrics() -> None:
    frame = held_out(8)
    scores = frame.x0.to_numpy()
    weights = np.random.default_rng(0).uniform(1, 5, len(frame))
    table = evaluate_ranking(
        group_codes(frame.qid), frame.label, scores, ndcg_empty="skip", propensity_weight=weights
    )
    config = {**CONFIG, "ndcg_empty": "skip"}
    assert metric_parts(frame, scores, "ndcg@10", config, None).value == pytest.approx(
        table["ndcg@10"]
    )
    assert metric_parts(frame, scores, "ipw_ndcg@10", config, weights).value == pytest.approx(
        table["ipw_ndcg@10"]
    )


def test_paired_bootstrap_of_a_ranker_with_itself_is_exactly_zero() -> None:
    parts = MetricParts(np.array([0.2, 0.5, 0.9]), np.ones(3))
    interval = paired_bootstrap(parts, parts, 500, seed=1)
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_interval_covers_the_difference_and_shrinks_with_groups() -> None:
    rng = np.random.default_rng(2)
    widths = []
    for n in (100, 1600):
        base = rng.uniform(0, 1, n)
        better = np.clip(base + rng.normal(0.05, 0.1, n), 0, 1)
        interval = paired_bootstrap(
            MetricParts(better, np.ones(n)), MetricParts(base, np.ones(n)), 2000, seed=3
        )
        assert interval.low < interval.estimate < interval.high
        widths.append(interval.high - interval.low)
    assert widths[1] < widths[0] / 3  # ~1/sqrt(16) = 1/4


def test_rank_biased_overlap_is_one_for_equal_lists_and_weights_the_top() -> None:
    same = np.arange(10)[None, :]
    assert rank_biased_overlap(same, same, 0.9)[0] == pytest.approx(1.0)
    swapped_top = np.array([[1, 0, *range(2, 10)]])
    swapped_bottom = np.array([[*range(8), 9, 8]])
    assert (
        rank_biased_overlap(same, swapped_top, 0.9)[0]
        < rank_biased_overlap(same, swapped_bottom, 0.9)[0]
        < 1.0
    )
    disjoint = np.arange(10, 20)[None, :]
    assert rank_biased_overlap(same, disjoint, 0.9)[0] == 0.0


def _candidates(users: int = 50, items: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(9)
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(users), items),
            "item_id": np.tile(np.arange(items), users),
        }
    )
    frame["category"] = (frame.item_id % 4).astype(str)
    frame["seller_id"] = frame.item_id % 10
    frame["price"] = 5.0 + frame.item_id
    frame["noise"] = rng.random(len(frame))
    return frame


def test_list_overlap_and_health_of_shadow_scored_lists() -> None:
    candidates = _candidates()
    champion = top_lists(candidates, candidates.noise.to_numpy(), 10)
    assert champion.groupby("user_id")["rank"].apply(list).iloc[0] == list(range(1, 11))
    same = list_overlap(champion, champion, 10, 0.9)
    assert same["jaccard@10"] == 1.0
    assert same["rbo@10"] == pytest.approx(1.0)
    assert same["category_mix_shift"] == 0.0
    # a ranker that puts the most expensive items first: other lists, other price mix
    pricey = top_lists(candidates, candidates.price.to_numpy(), 10)
    shift = list_overlap(champion, pricey, 10, 0.9)
    assert shift["jaccard@10"] < 0.5
    assert shift["price_mix_shift"] > 0.3
    assert shift["mean_price_change"] > 0.2
    health = list_health(pricey, catalogue_size=40, top_seller_percent=10)
    assert health["catalog_coverage"] == pytest.approx(10 / 40)  # everyone gets the same 10
    assert health["distinct_sellers"] == 10.0
    assert health["top_seller_share"] == pytest.approx(0.1)


def test_list_guardrails_reject_collapsed_diversity() -> None:
    candidates = _candidates()
    champion = top_lists(candidates, candidates.noise.to_numpy(), 10)
    one_category = candidates.noise.to_numpy() + 10 * (candidates.category == "0").to_numpy()
    collapsed = top_lists(candidates, one_category, 10)
    lists = {
        name: list_health(top, 40, 1)
        for name, top in {"challenger": collapsed, "champion": champion}.items()
    }
    parts = MetricParts(np.ones(5), np.ones(5))
    decision = gate_decision(parts, MetricParts(np.zeros(5), np.ones(5)), None, CONFIG, lists=lists)
    assert not decision.promote
    assert "lists: distinct_categories" in [c.name for c in decision.checks if not c.passed]

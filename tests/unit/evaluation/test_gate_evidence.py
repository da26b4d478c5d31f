"""The gate as the evaluate step calls it: held-out rows, weights, segments and shadow lists.

Every figure here is computed by hand. Each query group has two rows, one relevant; a ranker
that puts it first scores NDCG 1, one that puts it second scores 1/log2(3). The propensity
weight of the relevant row is 1 in even groups and 3 in odd ones, so the pooled IPW NDCG differs
from the plain mean and shows which weights were used. The shadow lists rank 30 candidate items
for 20 users, so their coverage, diversity and overlap are counted by hand too.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rankflow.config import load_pipeline_config
from rankflow.evaluation.gate import (
    compare_segments,
    gate_evidence,
    metric_intervals,
    metric_parts,
    segment_masks,
)

CONFIG: dict[str, Any] = load_pipeline_config()["evaluation"]  # ipw_ndcg@10, seed 7, 95%
SECOND = 1.0 / math.log2(3.0)  # NDCG of a two-row group whose relevant row is ranked second
GROUPS = 200
SEGMENT_NAMES = [
    "new users",
    "returning users",
    "country=DE",
    "country=FR",
    "category=bags",
    "category=tops",
    "cold-start items",
]


def held_out(groups: int = GROUPS) -> pd.DataFrame:
    """Two rows per query group, the first relevant; 60 new users, 100 French, 100 German."""
    group = np.arange(groups)
    relevant = np.tile([True, False], groups)
    return pd.DataFrame(
        {
            "qid": np.repeat(group, 2),
            "label": relevant.astype(float),
            "position": np.tile([1, 2], groups),
            "user_days_since_signup": np.repeat(np.where(group < 60, 3.0, 30.0), 2),
            "item_impressions_28d": np.where(relevant, 50, 5),  # the irrelevant rows are cold
            "country": np.repeat(np.where(group < groups // 2, "FR", "DE"), 2),
            "category": np.where(relevant, "tops", "bags"),
        }
    )


def rankers(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Challenger always right, champion right in even groups, popularity always wrong."""
    label = frame["label"].to_numpy()
    even = (frame["qid"].to_numpy() % 2 == 0).astype(float)
    return {
        "challenger": label.copy(),
        "champion": label * (2 * even - 1),
        "popularity": -label,
    }


def weights(frame: pd.DataFrame) -> np.ndarray:
    """Propensity weights: 1 on the relevant row of even groups, 3 on odd ones, 2 elsewhere."""
    odd = frame["qid"].to_numpy() % 2 == 1
    return np.where(frame["label"].to_numpy() > 0, np.where(odd, 3.0, 1.0), 2.0)


CHAMPION_IPW = (1.0 + 3.0 * SECOND) / 4.0  # pooled: (1 x 1 + 3 x 1/log2(3)) / (1 + 3)


def candidates(users: int = 20, items: int = 30) -> pd.DataFrame:
    """Every user's 30 shadow candidates: category = item % 4, seller = item % 10."""
    frame = pd.DataFrame(
        {"user_id": np.repeat(np.arange(users), items), "item_id": np.tile(np.arange(items), users)}
    )
    frame["category"] = (frame.item_id % 4).astype(str)
    frame["seller_id"] = frame.item_id % 10
    frame["price"] = 10.0 + frame.item_id
    return frame


def same_for_everyone(shadow: pd.DataFrame) -> np.ndarray:
    """Scores that give every user the items 0, 1, 2, ... in that order."""
    return -shadow["item_id"].to_numpy(dtype=float)


def spread(shadow: pd.DataFrame) -> np.ndarray:
    """Scores that give each user 10 consecutive items, shifted by 3 per user: all 30 shown."""
    return ((shadow["item_id"] + 3 * shadow["user_id"]) % 30).to_numpy(dtype=float)


CATALOGUE = 60


def test_the_gate_judges_every_ranker_by_its_weighted_metric_and_every_segment() -> None:
    frame = held_out()
    decision = gate_evidence(frame, rankers(frame), weights(frame), CONFIG)
    assert decision.metric == "ipw_ndcg@10"
    assert decision.challenger == pytest.approx(1.0)
    assert decision.champion == pytest.approx(CHAMPION_IPW)  # 0.7232; unweighted it is 0.8155
    assert decision.popularity == pytest.approx(SECOND)
    assert decision.difference is not None
    assert decision.difference.estimate == pytest.approx(1.0 - CHAMPION_IPW)
    assert 0 < decision.difference.low < decision.difference.estimate < decision.difference.high
    assert decision.promote, decision.reason
    assert re.fullmatch(
        r"ipw_ndcg@10 challenger - champion = \+0\.2768 \(95% CI \+0\.\d{4} \.\. \+0\.\d{4}, "
        r"lower bound must exceed -0\.0100\) over 200 groups; "
        r"all 9 checks passed, 2 segments too small to judge",
        decision.reason,
    ), decision.reason
    assert [c.name for c in decision.checks] == [
        "beats popularity",
        "vs champion",
        *(f"segment {name}" for name in SEGMENT_NAMES),
    ]
    segments = {s.name: s for s in decision.segments}
    assert list(segments) == SEGMENT_NAMES
    assert {name: s.queries for name, s in segments.items()} == {
        "new users": 60,
        "returning users": 140,
        "country=DE": 100,
        "country=FR": 100,
        "category=bags": 0,  # no relevant row: no group can be judged
        "category=tops": 200,
        "cold-start items": 0,
    }
    assert {name: s.status for name, s in segments.items()} == {
        name: "too_few_queries" if name in ("category=bags", "cold-start items") else "ok"
        for name in SEGMENT_NAMES
    }
    assert segments["country=FR"].challenger == pytest.approx(1.0)
    assert segments["country=FR"].champion == pytest.approx(CHAMPION_IPW)
    assert (decision.lists, decision.overlap) == ({}, {})


def test_the_gate_needs_the_weights_of_a_weighted_metric() -> None:
    frame = held_out()
    message = r"^ipw_ndcg@10 needs the examination curve \(propensity weights\)$"
    with pytest.raises(ValueError, match=message):
        gate_evidence(frame, rankers(frame), None, CONFIG)


def test_a_challenger_that_wins_on_the_metric_but_collapses_its_lists_is_rejected() -> None:
    frame, shadow = held_out(), candidates()
    scores = {"challenger": same_for_everyone(shadow), "champion": spread(shadow)}
    decision = gate_evidence(
        frame, rankers(frame), weights(frame), CONFIG, (shadow, CATALOGUE, scores)
    )
    assert not decision.promote
    assert decision.reason == "lists: catalog_coverage 0.1667 (floor 0.4000)"
    assert set(decision.lists) == {"challenger", "champion"}
    ours, theirs = decision.lists["challenger"], decision.lists["champion"]
    assert ours["catalog_coverage"] == pytest.approx(10 / CATALOGUE)  # items 0-9 for everyone
    assert theirs["catalog_coverage"] == pytest.approx(30 / CATALOGUE)
    for figures in (ours, theirs):  # 10 consecutive items: 4 categories, 10 sellers, 20 users
        assert figures["distinct_categories"] == 4.0
        assert figures["distinct_sellers"] == 10.0
        assert figures["users"] == 20.0
        assert figures["top_seller_share"] == pytest.approx(0.1)  # the top 1% is one seller of 10
    assert set(decision.overlap) == {
        "jaccard@10",
        "rbo@10",
        "category_mix_shift",
        "price_mix_shift",
        "mean_price_change",
    }
    assert 0.0 < decision.overlap["jaccard@10"] < 1.0
    failed = [c.name for c in decision.checks if not c.passed]
    assert failed == ["lists: catalog_coverage"]
    assert [c.name for c in decision.checks][-4:] == [
        "lists: catalog_coverage",
        "lists: distinct_categories",
        "lists: distinct_sellers",
        "lists: top_seller_share",
    ]


def test_identical_shadow_lists_overlap_fully_and_pass_the_guardrails() -> None:
    frame, shadow = held_out(), candidates()
    scores = {"challenger": spread(shadow), "champion": spread(shadow)}
    decision = gate_evidence(
        frame, rankers(frame), weights(frame), CONFIG, (shadow, CATALOGUE, scores)
    )
    assert decision.promote, decision.reason
    assert decision.reason.endswith("all 13 checks passed, 2 segments too small to judge")
    assert decision.overlap["jaccard@10"] == 1.0
    assert decision.overlap["rbo@10"] == pytest.approx(1.0)
    assert decision.overlap["category_mix_shift"] == 0.0
    assert decision.lists["challenger"] == decision.lists["champion"]


def test_shadow_lists_are_cut_at_the_configured_overlap_depth() -> None:
    frame, shadow = held_out(), candidates()
    config = {**CONFIG, "overlap_depth": 5, "rbo_p": 0.5}
    scores = {"challenger": same_for_everyone(shadow), "champion": shadow["item_id"].to_numpy()}
    decision = gate_evidence(
        frame, rankers(frame), weights(frame), config, (shadow, CATALOGUE, scores)
    )
    assert decision.promote, decision.reason
    # items 0-4 against items 29-25: nothing in common, each list shows 5 of the 60 items
    assert decision.overlap["jaccard@5"] == 0.0
    assert decision.overlap["rbo@5"] == 0.0
    assert decision.overlap["mean_price_change"] == pytest.approx(12.0 / 37.0 - 1.0)
    assert decision.lists["challenger"]["catalog_coverage"] == pytest.approx(5 / CATALOGUE)
    assert decision.lists["champion"]["catalog_coverage"] == pytest.approx(5 / CATALOGUE)
    assert decision.lists["challenger"]["distinct_sellers"] == 5.0


def test_a_first_model_is_judged_on_popularity_and_the_list_floors_only() -> None:
    frame, shadow = held_out(), candidates()
    first = {k: v for k, v in rankers(frame).items() if k != "champion"}
    decision = gate_evidence(
        frame,
        first,
        weights(frame),
        CONFIG,
        (shadow, CATALOGUE, {"challenger": same_for_everyone(shadow)}),
    )
    assert decision.promote, decision.reason
    assert decision.reason == "first model: there is no champion to compare; all 6 checks passed"
    assert decision.champion is None
    assert decision.difference is None
    assert decision.segments == []
    assert decision.overlap == {}
    assert set(decision.lists) == {"challenger"}
    assert decision.lists["challenger"]["catalog_coverage"] == pytest.approx(10 / CATALOGUE)


def test_a_first_model_that_loses_to_popularity_is_rejected() -> None:
    frame = held_out()
    scores = rankers(frame)
    swapped = {"challenger": scores["popularity"], "popularity": scores["challenger"]}
    decision = gate_evidence(frame, swapped, weights(frame), CONFIG)
    assert not decision.promote
    assert decision.reason == "ipw_ndcg@10 0.6309 vs popularity 1.0000 (lift -36.9%, needs > +0.0%)"


def test_metric_intervals_hold_every_rankers_value_and_are_reproducible() -> None:
    frame = held_out()
    scores, weight = rankers(frame), weights(frame)
    intervals = metric_intervals(frame, scores, weight, CONFIG)
    assert list(intervals) == ["challenger", "champion", "popularity"]
    assert intervals["challenger"] == {"estimate": 1.0, "low": 1.0, "high": 1.0}
    popularity = intervals["popularity"]
    assert popularity["estimate"] == pytest.approx(SECOND)
    assert popularity["low"] == pytest.approx(SECOND)
    assert popularity["high"] == pytest.approx(SECOND)
    champion = intervals["champion"]
    assert champion["estimate"] == pytest.approx(CHAMPION_IPW)
    assert champion["low"] < champion["estimate"] < champion["high"]
    # a resampled group is right (1) or wrong (1/log2 3); the bounds lie between the two
    assert champion["low"] > SECOND
    assert champion["high"] < 1.0
    assert metric_intervals(frame, scores, weight, CONFIG) == intervals
    reseeded = metric_intervals(frame, scores, weight, {**CONFIG, "bootstrap_seed": 8})
    assert reseeded["champion"] != champion
    assert reseeded["champion"]["estimate"] == champion["estimate"]
    narrow = metric_intervals(frame, scores, weight, {**CONFIG, "confidence": 0.5})["champion"]
    assert champion["low"] < narrow["low"] < narrow["high"] < champion["high"]
    fewer = metric_intervals(frame, scores, weight, {**CONFIG, "bootstrap_resamples": 3})
    assert fewer["champion"] != champion


# --------------------------------------------------------------------------- the parts


def test_plain_ndcg_ignores_the_propensity_weights() -> None:
    frame = held_out()
    champion = rankers(frame)["champion"]
    expected = (1.0 + SECOND) / 2.0  # half the groups right, half wrong
    plain = metric_parts(frame, champion, "ndcg@10", CONFIG, weights(frame))
    assert plain.value == pytest.approx(expected)
    assert metric_parts(frame, champion, "ndcg@10", CONFIG, None).value == pytest.approx(expected)
    assert metric_parts(frame, champion, "ipw_ndcg@10", CONFIG, weights(frame)).value == (
        pytest.approx(CHAMPION_IPW)
    )
    assert plain.groups == GROUPS


def test_the_cutoff_of_the_metric_is_applied() -> None:
    frame = held_out()
    wrong = rankers(frame)["popularity"]  # the relevant row is second in every group
    assert metric_parts(frame, wrong, "ndcg@1", CONFIG, None).value == 0.0
    assert metric_parts(frame, wrong, "ndcg@2", CONFIG, None).value == pytest.approx(SECOND)


def test_groups_without_a_relevant_row_follow_the_configured_convention() -> None:
    frame = held_out(4)
    frame.loc[frame.qid == 3, "label"] = 0.0  # one group nobody clicked
    right = frame["label"].to_numpy().copy()
    skip = metric_parts(frame, right, "ndcg@10", {**CONFIG, "ndcg_empty": "skip"}, None)
    zero = metric_parts(frame, right, "ndcg@10", {**CONFIG, "ndcg_empty": "zero"}, None)
    assert (skip.value, skip.groups) == (1.0, 3)
    assert (zero.value, zero.groups) == (0.75, 4)


@pytest.mark.parametrize("metric", ["map@10", "ndcg", "ndcg@", "ndcg@ten", "ndcg10", "NDCG@10"])
def test_only_ndcg_at_k_can_be_the_gate_metric(metric: str) -> None:
    frame = held_out(2)
    message = rf"^the gate metric must be ndcg@k or ipw_ndcg@k, got {re.escape(repr(metric))}$"
    with pytest.raises(ValueError, match=message):
        metric_parts(frame, rankers(frame)["challenger"], metric, CONFIG, None)


def test_scores_that_are_not_all_finite_give_a_nan_metric_over_every_group() -> None:
    frame = held_out(5)
    for bad in (np.nan, np.inf, -np.inf):
        scores = rankers(frame)["challenger"]
        scores[3] = bad
        parts = metric_parts(frame, scores, "ipw_ndcg@10", CONFIG, weights(frame))
        assert math.isnan(parts.value)
        assert len(parts.numerator) == len(parts.denominator) == 5
        assert parts.groups == 5


# --------------------------------------------------------------------------- segments


def test_segment_masks_follow_their_thresholds_exactly() -> None:
    frame = pd.DataFrame(
        {
            "user_days_since_signup": [0.0, 13.9, 14.0, 30.0, 14.0, 1.0],
            "country": ["FR", "DE", None, "FR", "LT", "DE"],
            "category": ["a", "b", "b", "c", "c", "c"],
            "item_impressions_28d": [0, 19, 20, 21, 100, 19],
        }
    )
    segments = {**CONFIG["segments"], "top_categories": 2}  # new < 14 days, cold < 20
    masks = {name: mask.tolist() for name, mask in segment_masks(frame, segments).items()}
    assert masks == {
        "new users": [True, True, False, False, False, True],
        "returning users": [False, False, True, True, True, False],
        "country=DE": [False, True, False, False, False, True],
        "country=FR": [True, False, False, True, False, False],
        "country=LT": [False, False, False, False, True, False],
        "category=b": [False, True, True, False, False, False],
        "category=c": [False, False, False, True, True, True],
        "cold-start items": [True, True, False, False, False, True],
    }


def test_user_segments_need_no_country_or_category_column() -> None:
    frame = pd.DataFrame({"user_days_since_signup": [1.0, 20.0], "item_impressions_28d": [0, 99]})
    masks = segment_masks(frame, CONFIG["segments"])
    assert list(masks) == ["new users", "returning users", "cold-start items"]


def test_a_segment_worse_beyond_its_tolerance_with_confidence_regresses() -> None:
    frame = held_out()
    scores = rankers(frame)
    challenger = scores["challenger"].copy()
    french = (frame["country"] == "FR").to_numpy()
    challenger[french] = -challenger[french]  # every French group wrong
    config = {**CONFIG, "gate_metric": "ndcg@10"}
    segments = {
        s.name: s for s in compare_segments(frame, challenger, scores["champion"], None, config)
    }
    france = segments["country=FR"]
    assert (france.queries, france.status) == (100, "regressed")
    assert france.challenger == pytest.approx(SECOND)
    assert france.champion == pytest.approx((1.0 + SECOND) / 2.0)
    assert france.difference.estimate == pytest.approx((SECOND - 1.0) / 2.0)
    assert france.difference.low < france.difference.estimate < france.difference.high < 0
    germany = segments["country=DE"]
    assert (germany.queries, germany.status) == (100, "ok")
    assert germany.difference.estimate == pytest.approx((1.0 - SECOND) / 2.0)
    assert segments["cold-start items"].status == "too_few_queries"


def test_segments_are_judged_on_their_own_weighted_rows() -> None:
    frame = held_out()
    scores = rankers(frame)
    weight = weights(frame)
    weight[(frame["country"] == "DE").to_numpy() & (frame["label"] > 0).to_numpy()] = 1.0
    segments = {
        s.name: s
        for s in compare_segments(frame, scores["challenger"], scores["champion"], weight, CONFIG)
    }
    assert segments["country=FR"].champion == pytest.approx(CHAMPION_IPW)
    assert segments["country=DE"].champion == pytest.approx((1.0 + SECOND) / 2.0)


def judged(results: list[Any]) -> dict[str, tuple[float, float, float]]:
    """Each judged segment's interval (segments without a judged group have NaN bounds)."""
    return {
        s.name: (s.difference.estimate, s.difference.low, s.difference.high)
        for s in results
        if s.queries
    }


def test_segment_intervals_are_reproducible_for_the_configured_seed_and_confidence() -> None:
    frame = held_out()
    scores, weight = rankers(frame), weights(frame)

    def intervals(config: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
        return judged(
            compare_segments(frame, scores["challenger"], scores["champion"], weight, config)
        )

    first = intervals(CONFIG)
    assert intervals(CONFIG) == first
    reseeded = intervals({**CONFIG, "bootstrap_seed": 8})
    assert reseeded != first
    narrow = intervals({**CONFIG, "confidence": 0.5})
    for name in ("new users", "returning users", "country=DE", "country=FR"):
        estimate, low, high = first[name]
        assert reseeded[name][0] == estimate
        assert low < narrow[name][1] < estimate < narrow[name][2] < high

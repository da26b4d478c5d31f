"""The gate at its margins: each threshold pinned from both sides, so a wrong rule cannot pass.

The other gate tests judge models far from every threshold; these build the figures the rules
compare (metric parts, segment intervals, list figures) just inside and just outside each bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rankflow.config import load_pipeline_config
from rankflow.evaluation.gate import (
    Interval,
    MetricParts,
    gate_decision,
    guardrail_checks,
    paired_bootstrap,
    segment_status,
)

CONFIG: dict[str, Any] = {**load_pipeline_config()["evaluation"], "gate_metric": "ndcg@10"}
MARGIN = CONFIG["min_difference_lower_bound"]  # -0.01: a non-inferiority margin
GROUPS = 400


def parts(values: np.ndarray) -> MetricParts:
    """Per-group NDCG values as metric parts (denominator 1 per group)."""
    return MetricParts(np.asarray(values, dtype=float), np.ones(len(values)))


def pair(mean_difference: float, spread: float, seed: int = 0) -> tuple[MetricParts, MetricParts]:
    """Champion and challenger on the same groups; the challenger differs by mean +- spread."""
    rng = np.random.default_rng(seed)
    champion = rng.uniform(0.3, 0.7, GROUPS)
    noise = rng.normal(0.0, spread, GROUPS)
    challenger = champion + mean_difference + (noise - noise.mean())  # exact mean difference
    return parts(challenger), parts(champion)


def popularity(value: float) -> MetricParts:
    """A popularity baseline far below every challenger here."""
    return parts(np.full(GROUPS, value))


def test_the_decision_uses_the_intervals_lower_bound_not_the_point_estimate() -> None:
    challenger, champion = pair(+0.002, spread=0.2)  # better on average, but noisy
    difference = paired_bootstrap(challenger, champion, 2000, 7)
    assert difference.estimate == pytest.approx(0.002)
    assert difference.estimate > MARGIN > difference.low  # the two rules disagree here
    decision = gate_decision(challenger, popularity(0.1), champion, CONFIG)
    assert not decision.promote
    assert decision.reason.startswith("ndcg@10 challenger - champion = +0.0020")


def test_a_challenger_slightly_worse_than_the_champion_within_the_margin_is_promoted() -> None:
    challenger, champion = pair(-0.004, spread=0.01)  # tight interval around -0.004
    decision = gate_decision(challenger, popularity(0.1), champion, CONFIG)
    assert decision.difference is not None
    assert MARGIN < decision.difference.low < decision.difference.estimate < 0
    assert decision.promote


def test_a_challenger_slightly_worse_than_the_margin_is_rejected() -> None:
    challenger, champion = pair(-0.012, spread=0.01)
    decision = gate_decision(challenger, popularity(0.1), champion, CONFIG)
    assert decision.difference is not None
    assert decision.difference.high < MARGIN  # confidently beyond the margin
    assert not decision.promote
    assert "lower bound must exceed -0.0100" in decision.reason


@pytest.mark.parametrize(
    ("ours", "baseline", "promoted"),
    [(0.5010, 0.5000, True), (0.5000, 0.5000, False), (0.4990, 0.5000, False)],
)
def test_a_first_model_must_beat_popularity(ours: float, baseline: float, promoted: bool) -> None:
    decision = gate_decision(parts([ours] * GROUPS), parts([baseline] * GROUPS), None, CONFIG)
    assert decision.promote is promoted
    if not promoted:
        assert decision.reason.startswith(f"ndcg@10 {ours:.4f} vs popularity {baseline:.4f}")


def test_a_champion_beating_popularity_does_not_excuse_a_challenger_that_does_not() -> None:
    champion = parts(np.full(GROUPS, 0.40))
    challenger = parts(np.full(GROUPS, 0.45))
    decision = gate_decision(challenger, parts(np.full(GROUPS, 0.46)), champion, CONFIG)
    assert not decision.promote
    assert "vs popularity 0.4600" in decision.reason


SEGMENTS = CONFIG["segments"]  # min_queries 50, tolerance 5% of the champion's value
CHAMPION = 0.5  # so the tolerance is 0.025


@pytest.mark.parametrize(
    ("queries", "estimate", "high", "status"),
    [
        (SEGMENTS["min_queries"] - 1, -0.30, -0.20, "too_few_queries"),
        (SEGMENTS["min_queries"], -0.30, -0.20, "regressed"),
        (200, -0.0251, -0.001, "regressed"),  # just over the tolerance, confidently worse
        (200, -0.0249, -0.001, "ok"),  # just under the tolerance
        (200, -SEGMENTS["tolerance"] * CHAMPION, -0.001, "ok"),  # exactly at it: not beyond
        (200, -0.0300, 0.0, "ok"),  # over the tolerance but not confidently worse
        (200, -0.0300, -1e-9, "regressed"),
        (200, +0.0300, 0.06, "ok"),
    ],
)
def test_a_segment_regresses_only_beyond_its_tolerance_and_with_confidence(
    queries: int, estimate: float, high: float, status: str
) -> None:
    interval = Interval(estimate, estimate - 0.02, high)
    assert segment_status(queries, interval, CHAMPION, SEGMENTS) == status


RAILS = CONFIG["guardrails"]


def lists(**challenger: float) -> dict[str, dict[str, float]]:
    """Healthy list figures, with the challenger's overridden."""
    base = {
        "catalog_coverage": 0.5,
        "distinct_categories": 6.0,
        "distinct_sellers": 8.0,
        "top_seller_share": 0.2,
    }
    return {"challenger": {**base, **challenger}, "champion": dict(base)}


def failed(checks: list[Any]) -> set[str]:
    """Names of the checks that did not pass."""
    return {check.name for check in checks if not check.passed}


@pytest.mark.parametrize(
    ("share", "champion_share", "passes"),
    [
        (0.2499, 0.20, True),  # the champion's share + 5 points is the ceiling
        (0.2501, 0.20, False),
        (0.5000, 0.48, True),  # ... but never above the absolute ceiling of 0.5
        (0.5001, 0.48, False),
    ],
)
def test_the_top_seller_share_ceiling_is_the_lower_of_its_two_bounds(
    share: float, champion_share: float, passes: bool
) -> None:
    figures = lists(top_seller_share=share)
    figures["champion"]["top_seller_share"] = champion_share
    assert ("lists: top_seller_share" not in failed(guardrail_checks(figures, CONFIG))) is passes


def test_a_first_model_is_held_to_the_absolute_seller_ceiling() -> None:
    assert (
        failed(guardrail_checks({"challenger": lists(top_seller_share=0.5)["challenger"]}, CONFIG))
        == set()
    )
    first = {"challenger": lists(top_seller_share=0.5001)["challenger"]}
    assert failed(guardrail_checks(first, CONFIG)) == {"lists: top_seller_share"}


@pytest.mark.parametrize(
    ("coverage", "passes"), [(0.5 * (1 - RAILS["relative_tolerance"]) + 1e-4, True), (0.399, False)]
)
def test_coverage_may_fall_at_most_the_relative_tolerance_below_the_champions(
    coverage: float, passes: bool
) -> None:
    checks = guardrail_checks(lists(catalog_coverage=coverage), CONFIG)
    assert ("lists: catalog_coverage" not in failed(checks)) is passes

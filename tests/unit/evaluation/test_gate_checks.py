"""What the gate says: each check's name and exact sentence, the reason, and the recorded data.

The reason is what a person reads in the alert, the ledger and the report, so each sentence is
pinned with its figures; the rules are pinned where the figures sit exactly on their bounds.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from rankflow.config import load_pipeline_config
from rankflow.evaluation.gate import (
    Check,
    GateDecision,
    Interval,
    MetricParts,
    SegmentResult,
    gate_decision,
    guardrail_checks,
    paired_bootstrap,
    passed_summary,
)

CONFIG: dict[str, Any] = {**load_pipeline_config()["evaluation"], "gate_metric": "ndcg@10"}
GROUPS = 64


def flat(value: float, groups: int = GROUPS) -> MetricParts:
    """Every group at the same value (denominator 1)."""
    return MetricParts(np.full(groups, value), np.ones(groups))


def failed(decision: GateDecision) -> list[str]:
    """Names of the checks that did not pass, in order."""
    return [check.name for check in decision.checks if not check.passed]


def test_an_evaluation_set_without_a_judged_group_is_the_only_check() -> None:
    nothing = MetricParts(np.zeros(3), np.zeros(3))
    decision = gate_decision(nothing, flat(0.1), flat(0.5), CONFIG)
    message = (
        "empty evaluation set: no query group can be judged on ndcg@10 "
        "(no impression with a click on the held-out day)"
    )
    assert decision.checks == [Check("evaluation set", False, message)]
    assert not decision.promote
    assert decision.reason == message
    assert decision.difference is None


def test_a_single_judged_group_is_enough_to_be_judged() -> None:
    decision = gate_decision(flat(0.9, 1), flat(0.1, 1), None, CONFIG)
    assert decision.promote
    assert [c.name for c in decision.checks] == ["beats popularity", "champion"]


def test_a_nan_metric_is_the_only_check() -> None:
    broken = MetricParts(np.array([0.5, np.nan]), np.ones(2))
    decision = gate_decision(broken, flat(0.1, 2), flat(0.5, 2), CONFIG)
    message = "challenger ndcg@10 is NaN: its scores are not all finite numbers"
    assert decision.checks == [Check("metric", False, message)]
    assert not decision.promote
    assert decision.reason == message


def test_a_popularity_baseline_of_zero_is_beaten_by_any_positive_metric() -> None:
    decision = gate_decision(flat(0.2), flat(0.0), None, CONFIG)
    assert decision.checks[0] == Check(
        "beats popularity", True, "ndcg@10 0.2000 vs popularity 0.0000 (lift +inf%, needs > +0.0%)"
    )
    assert decision.promote


@pytest.mark.parametrize(
    ("ours", "passes", "detail"),
    [
        (0.53, True, "ndcg@10 0.5300 vs popularity 0.5000 (lift +6.0%, needs > +5.0%)"),
        (0.52, False, "ndcg@10 0.5200 vs popularity 0.5000 (lift +4.0%, needs > +5.0%)"),
    ],
)
def test_the_lift_over_popularity_must_exceed_its_configured_minimum(
    ours: float, passes: bool, detail: str
) -> None:
    config = {**CONFIG, "min_lift_over_popularity": 0.05}
    decision = gate_decision(flat(ours), flat(0.5), None, config)
    assert decision.checks[0] == Check("beats popularity", passes, detail)
    assert decision.promote is passes


def test_a_first_model_is_promoted_explicitly_with_plain_data() -> None:
    decision = gate_decision(flat(0.6), flat(0.5), None, CONFIG)
    assert decision.checks[1] == Check(
        "champion", True, "first model: there is no champion to compare"
    )
    assert decision.reason == "first model: there is no champion to compare; all 2 checks passed"
    record = decision.as_dict()
    assert record == {
        "promote": True,
        "reason": decision.reason,
        "metric": "ndcg@10",
        "challenger": pytest.approx(0.6),
        "popularity": pytest.approx(0.5),
        "champion": None,
        "difference": None,
        "checks": [
            {
                "name": "beats popularity",
                "passed": True,
                "detail": "ndcg@10 0.6000 vs popularity 0.5000 (lift +20.0%, needs > +0.0%)",
            },
            {
                "name": "champion",
                "passed": True,
                "detail": "first model: there is no champion to compare",
            },
        ],
        "segments": [],
        "lists": {},
        "overlap": {},
    }
    json.dumps(record)  # the ledger and the report store it as JSON


@pytest.mark.parametrize(("margin", "promoted"), [(-0.25, False), (-0.2501, True)])
def test_a_lower_bound_exactly_at_the_margin_does_not_exceed_it(
    margin: float, promoted: bool
) -> None:
    # every group is exactly 0.25 worse, so every resample and both bounds are -0.25 exactly
    config = {**CONFIG, "min_difference_lower_bound": margin}
    decision = gate_decision(flat(0.25), flat(0.1), flat(0.5), config, segments=[])
    assert decision.difference == Interval(-0.25, -0.25, -0.25)
    assert decision.promote is promoted
    detail = (
        f"ndcg@10 challenger - champion = -0.2500 (95% CI -0.2500 .. -0.2500, "
        f"lower bound must exceed {margin:+.4f}) over 64 groups"
    )
    assert decision.checks[1] == Check("vs champion", promoted, detail)
    expected = detail if not promoted else f"{detail}; all 2 checks passed"
    assert decision.reason == expected


def test_the_comparison_uses_the_configured_resamples_seed_and_confidence() -> None:
    rng = np.random.default_rng(5)
    champion = MetricParts(rng.uniform(0.3, 0.7, 300), np.ones(300))
    challenger = MetricParts(champion.numerator + rng.normal(0.05, 0.1, 300), np.ones(300))
    config = {**CONFIG, "bootstrap_resamples": 400, "bootstrap_seed": 3, "confidence": 0.8}
    decision = gate_decision(challenger, flat(0.1, 300), champion, config)
    expected = paired_bootstrap(challenger, champion, 400, 3, 0.8)
    assert decision.difference == expected
    assert expected != paired_bootstrap(challenger, champion, 400, 3, 0.95)
    assert expected != paired_bootstrap(challenger, champion, 400, 4, 0.8)
    assert expected != paired_bootstrap(challenger, champion, 399, 3, 0.8)
    assert (
        f"(80% CI {expected.low:+.4f} .. {expected.high:+.4f}, lower bound must exceed -0.0100)"
        in decision.checks[1].detail
    )
    assert decision.promote
    assert decision.as_dict()["difference"] == {
        "estimate": expected.estimate,
        "low": expected.low,
        "high": expected.high,
    }


def segment(name: str, queries: int, ours: float, theirs: float, status: str) -> SegmentResult:
    """A segment result whose interval spans 0.05 either side of its difference."""
    difference = ours - theirs
    return SegmentResult(
        name,
        queries,
        ours,
        theirs,
        Interval(difference, difference - 0.05, difference + 0.05),
        status,
    )


def test_each_segment_is_a_check_and_a_regressed_one_is_the_reason() -> None:
    segments = [
        segment("country=EE", 10, 0.2, 0.6, "too_few_queries"),
        segment("country=FR", 120, 0.4, 0.5, "regressed"),
        segment("country=DE", 300, 0.55, 0.5, "ok"),
    ]
    decision = gate_decision(flat(0.6), flat(0.1), flat(0.6), CONFIG, segments=segments)
    assert decision.checks[2:] == [
        Check(
            "segment country=EE", True, "segment country=EE not judged: 10 queries, fewer than 50"
        ),
        Check(
            "segment country=FR",
            False,
            "segment country=FR: 0.4000 vs 0.5000 (-0.1000, CI -0.1500 .. -0.0500)",
        ),
        Check(
            "segment country=DE",
            True,
            "segment country=DE: 0.5500 vs 0.5000 (+0.0500, CI +0.0000 .. +0.1000)",
        ),
    ]
    assert failed(decision) == ["segment country=FR"]
    assert not decision.promote
    assert (
        decision.reason == "segment country=FR: 0.4000 vs 0.5000 (-0.1000, CI -0.1500 .. -0.0500)"
    )
    assert decision.segments == segments
    assert decision.as_dict()["segments"][1] == {
        "name": "country=FR",
        "queries": 120,
        "challenger": 0.4,
        "champion": 0.5,
        "difference": {
            "estimate": pytest.approx(-0.1),
            "low": pytest.approx(-0.15),
            "high": pytest.approx(-0.05),
        },
        "status": "regressed",
    }


def test_segments_too_small_to_judge_pass_and_are_counted_in_the_reason() -> None:
    segments = [
        segment("country=EE", 10, 0.2, 0.6, "too_few_queries"),
        segment("country=LT", 49, 0.2, 0.6, "too_few_queries"),
        segment("country=DE", 300, 0.55, 0.5, "ok"),
    ]
    decision = gate_decision(flat(0.25), flat(0.1), flat(0.25), CONFIG, segments=segments)
    assert decision.promote, decision.reason
    assert decision.reason == (
        "ndcg@10 challenger - champion = +0.0000 (95% CI +0.0000 .. +0.0000, lower bound must "
        "exceed -0.0100) over 64 groups; all 5 checks passed, 2 segments too small to judge"
    )


def test_the_first_failing_check_is_the_reason() -> None:
    lists = {
        "challenger": {
            "catalog_coverage": 0.1,
            "distinct_categories": 0.5,
            "distinct_sellers": 1.0,
            "top_seller_share": 0.6,
        }
    }
    decision = gate_decision(flat(0.4), flat(0.5), None, CONFIG, lists=lists)
    assert failed(decision) == [
        "beats popularity",
        "lists: distinct_categories",
        "lists: top_seller_share",
    ]
    assert decision.reason.startswith("ndcg@10 0.4000 vs popularity 0.5000")
    assert decision.lists == lists


def test_a_summary_names_the_comparison_that_matters() -> None:
    checks = [Check("beats popularity", True, "pop"), Check("vs champion", True, "versus")]
    assert passed_summary(checks) == "versus; all 2 checks passed"
    checks.append(Check("segment x", True, "segment x not judged: 3 queries, fewer than 50"))
    assert passed_summary(checks) == "versus; all 3 checks passed, 1 segments too small to judge"
    # without a champion check the last check speaks
    others = [Check("a", True, "first"), Check("b", True, "second"), Check("c", True, "last")]
    assert passed_summary(others) == "last; all 3 checks passed"


# --------------------------------------------------------------------------- list guardrails

HEALTHY = {
    "catalog_coverage": 0.5,
    "distinct_categories": 6.0,
    "distinct_sellers": 8.0,
    "top_seller_share": 0.2,
}


def checks_of(challenger: dict[str, float], champion: dict[str, float] | None) -> dict[str, Check]:
    """The guardrail checks by name."""
    lists = (
        {"challenger": challenger}
        if champion is None
        else {"challenger": challenger, "champion": champion}
    )
    return {check.name: check for check in guardrail_checks(lists, CONFIG)}


def test_a_figure_exactly_at_its_floor_passes_and_just_below_fails_with_its_floor() -> None:
    floor = HEALTHY["distinct_sellers"] * (1.0 - CONFIG["guardrails"]["relative_tolerance"])
    at = checks_of({**HEALTHY, "distinct_sellers": floor}, HEALTHY)["lists: distinct_sellers"]
    assert at == Check(
        "lists: distinct_sellers", True, "lists: distinct_sellers 6.4000 (floor 6.4000)"
    )
    below = checks_of({**HEALTHY, "distinct_sellers": 6.3999}, HEALTHY)["lists: distinct_sellers"]
    assert below == Check(
        "lists: distinct_sellers", False, "lists: distinct_sellers 6.3999 (floor 6.4000)"
    )


def test_the_floor_is_the_higher_of_the_absolute_and_the_champion_relative_one() -> None:
    # 4 categories would clear the absolute floor (1) but not 80% of the champion's 6
    check = checks_of({**HEALTHY, "distinct_categories": 4.0}, HEALTHY)[
        "lists: distinct_categories"
    ]
    assert check == Check(
        "lists: distinct_categories", False, "lists: distinct_categories 4.0000 (floor 4.8000)"
    )
    # a champion below the absolute floor does not lower it
    poor = {**HEALTHY, "distinct_categories": 1.0}
    check = checks_of({**HEALTHY, "distinct_categories": 0.9}, poor)["lists: distinct_categories"]
    assert check == Check(
        "lists: distinct_categories", False, "lists: distinct_categories 0.9000 (floor 1.0000)"
    )


def test_a_first_model_is_held_to_the_absolute_floors() -> None:
    checks = checks_of({**HEALTHY, "distinct_categories": 0.5, "catalog_coverage": 0.0}, None)
    assert checks["lists: distinct_categories"] == Check(
        "lists: distinct_categories", False, "lists: distinct_categories 0.5000 (floor 1.0000)"
    )
    assert checks["lists: catalog_coverage"] == Check(
        "lists: catalog_coverage", True, "lists: catalog_coverage 0.0000 (floor 0.0000)"
    )
    assert checks["lists: top_seller_share"] == Check(
        "lists: top_seller_share", True, "lists: top_seller_share 0.2000 (ceiling 0.5000)"
    )


def test_the_seller_share_ceiling_is_named_when_exceeded() -> None:
    check = checks_of({**HEALTHY, "top_seller_share": 0.2501}, HEALTHY)["lists: top_seller_share"]
    assert check == Check(
        "lists: top_seller_share", False, "lists: top_seller_share 0.2501 (ceiling 0.2500)"
    )
    at = checks_of({**HEALTHY, "top_seller_share": 0.25}, HEALTHY)["lists: top_seller_share"]
    assert at.passed

"""The promotion gate: challenger vs champion on the same query groups, by segment, and as lists.

A challenger replaces the champion only when every check passes:

* the held-out day has query groups to judge on, and the challenger's metric is a number;
* it beats the popularity baseline;
* the paired bootstrap interval (over query groups) of challenger minus champion has its lower
  bound above a margin (a small negative margin is a non-inferiority test: a fresh model that is
  as good as the champion replaces it);
* no named segment (new or returning users, a country, a top category, cold-start items) is
  confidently worse by more than its tolerance; a segment with too few queries is not judged;
* its top-k lists keep catalogue coverage, category and seller diversity, and do not give the
  biggest sellers much more of the slots than the champion's lists.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rankflow.evaluation.metrics import group_codes, ndcg_parts

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def gate_evidence(
    frame: Any,
    rankers: dict[str, np.ndarray],
    weights: np.ndarray | None,
    config: dict[str, Any],
    shadow: tuple[Any, int, dict[str, np.ndarray]] | None = None,
) -> Any:
    """Decide on the challenger from the held-out rows and, if given, the shadow-scored lists."""
    from rankflow.evaluation.lists import list_health, list_overlap, top_lists

    metric = str(config["gate_metric"])
    parts = {
        name: metric_parts(frame, rankers[name], metric, config, weights)
        for name in ("challenger", "popularity", "champion")
        if name in rankers
    }
    segments = None
    if "champion" in rankers:
        segments = compare_segments(
            frame, rankers["challenger"], rankers["champion"], weights, config
        )
    lists: dict[str, dict[str, float]] = {}
    overlap: dict[str, float] = {}
    if shadow is not None:
        candidates, catalogue_size, scores = shadow
        depth = int(config["overlap_depth"])
        tops = {name: top_lists(candidates, values, depth) for name, values in scores.items()}
        rails = config["guardrails"]
        lists = {
            name: list_health(top, catalogue_size, float(rails["top_seller_percent"]))
            for name, top in tops.items()
        }
        if "champion" in tops:
            overlap = list_overlap(
                tops["champion"], tops["challenger"], depth, float(config["rbo_p"])
            )
    return gate_decision(
        parts["challenger"],
        parts["popularity"],
        parts.get("champion"),
        config,
        segments=segments,
        lists=lists,
        overlap=overlap,
    )


def metric_intervals(
    frame: Any, rankers: dict[str, np.ndarray], weights: np.ndarray | None, config: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Bootstrap interval of the gate metric for every ranker (for the report)."""
    from dataclasses import asdict

    metric = str(config["gate_metric"])
    return {
        name: asdict(
            bootstrap_interval(
                metric_parts(frame, scores, metric, config, weights),
                int(config["bootstrap_resamples"]),
                int(config["bootstrap_seed"]),
                float(config["confidence"]),
            )
        )
        for name, scores in rankers.items()
    }


class GateRejectedError(RuntimeError):
    """The challenger may not replace the champion."""


@dataclass(frozen=True)
class Interval:
    """A difference with its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class MetricParts:
    """Per-group numerators and denominators of a metric (value = ratio of their sums)."""

    numerator: np.ndarray
    denominator: np.ndarray

    @property
    def value(self) -> float:
        """The metric over every group (NaN when no group can be judged)."""
        total = float(self.denominator.sum())
        return float(self.numerator.sum()) / total if total > 0 else math.nan

    @property
    def groups(self) -> int:
        """Number of groups that can be judged (a non-zero denominator)."""
        return int(np.count_nonzero(self.denominator))


def metric_parts(
    frame: pd.DataFrame,
    scores: np.ndarray,
    metric: str,
    config: dict[str, Any],
    weights: np.ndarray | None,
) -> MetricParts:
    """Per-group parts of ``ndcg@k`` or ``ipw_ndcg@k`` of one ranker on the held-out rows.

    Scores that are not all finite (a broken model) give NaN parts, so the metric is NaN.
    """
    name, _, cutoff = metric.partition("@")
    if name not in ("ndcg", "ipw_ndcg") or not cutoff.isdigit():
        raise ValueError(f"the gate metric must be ndcg@k or ipw_ndcg@k, got {metric!r}")
    if name == "ipw_ndcg" and weights is None:
        raise ValueError(f"{metric} needs the examination curve (propensity weights)")
    if not np.all(np.isfinite(scores)):
        groups = len(np.unique(frame["qid"].to_numpy()))
        return MetricParts(np.full(groups, math.nan), np.ones(groups))
    numerator, denominator = ndcg_parts(
        group_codes(frame["qid"].to_numpy()),
        frame["label"].to_numpy(dtype="float64"),
        scores,
        int(cutoff),
        ndcg_empty=config["ndcg_empty"],
        propensity_weight=weights if name == "ipw_ndcg" else None,
    )
    return MetricParts(numerator, denominator)


def paired_bootstrap(
    challenger: MetricParts,
    champion: MetricParts,
    resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> Interval:
    """Percentile interval of challenger minus champion, resampling the same query groups."""
    estimate = challenger.value - champion.value
    n = len(challenger.numerator)
    if n == 0 or math.isnan(estimate):
        return Interval(estimate, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    parts = np.stack(
        [challenger.numerator, challenger.denominator, champion.numerator, champion.denominator],
        axis=1,
    )
    chunk = max(1, 4_000_000 // n)
    differences: list[np.ndarray] = []
    for start in range(0, resamples, chunk):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, resamples - start))
        sums = counts @ parts
        with np.errstate(invalid="ignore", divide="ignore"):
            differences.append(sums[:, 0] / sums[:, 1] - sums[:, 2] / sums[:, 3])
    values = np.concatenate(differences)
    values = values[~np.isnan(values)]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail]) if len(values) else (math.nan, math.nan)
    return Interval(estimate, float(low), float(high))


def bootstrap_interval(
    parts: MetricParts, resamples: int, seed: int, confidence: float = 0.95
) -> Interval:
    """Percentile interval of one ranker's metric over resampled query groups."""
    nothing = MetricParts(np.zeros_like(parts.numerator), np.ones_like(parts.denominator))
    return paired_bootstrap(parts, nothing, resamples, seed, confidence)


@dataclass(frozen=True)
class SegmentResult:
    """The gate metric of challenger and champion on one segment of the held-out rows."""

    name: str
    queries: int
    challenger: float
    champion: float
    difference: Interval
    status: str  # "ok", "regressed" or "too_few_queries"


def segment_masks(frame: pd.DataFrame, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Rows of each named segment: new / returning users, countries, top categories, cold items.

    User segments keep whole query groups; item segments keep the segment's rows of every group
    (the sub-list a user of that category saw), so both rankers are judged on the same rows.
    """
    masks: dict[str, np.ndarray] = {}
    new = frame["user_days_since_signup"].to_numpy() < float(config["new_user_days"])
    masks["new users"] = new
    masks["returning users"] = ~new
    if "country" in frame:
        for country in sorted(frame["country"].dropna().unique()):
            masks[f"country={country}"] = (frame["country"] == country).to_numpy()
    if "category" in frame:
        top = frame["category"].value_counts().head(int(config["top_categories"])).index
        for category in sorted(top):
            masks[f"category={category}"] = (frame["category"] == category).to_numpy()
    cold = frame["item_impressions_28d"].to_numpy() < float(config["cold_start_max_impressions"])
    masks["cold-start items"] = cold
    return masks


def segment_status(
    queries: int, difference: Interval, champion: float, segments: dict[str, Any]
) -> str:
    """Judge one segment: too few queries, regressed (worse by the tolerance and CI < 0) or ok.

    The tolerance is relative to the champion's value on the segment; a drop that the interval
    does not confirm (its upper bound at or above 0) is not a regression.
    """
    if queries < int(segments["min_queries"]):
        return "too_few_queries"
    worse = difference.estimate < -float(segments["tolerance"]) * abs(champion)
    if worse and difference.high < 0:
        return "regressed"
    return "ok"


def compare_segments(
    frame: pd.DataFrame,
    challenger: np.ndarray,
    champion: np.ndarray,
    weights: np.ndarray | None,
    config: dict[str, Any],
) -> list[SegmentResult]:
    """Judge every segment: regressed when worse beyond the tolerance and confidently worse."""
    segments = config["segments"]
    metric = str(config["gate_metric"])
    results = []
    for index, (name, mask) in enumerate(segment_masks(frame, segments).items()):
        rows = frame[mask]
        row_weights = weights[mask] if weights is not None else None
        ours = metric_parts(rows, challenger[mask], metric, config, row_weights)
        theirs = metric_parts(rows, champion[mask], metric, config, row_weights)
        queries = ours.groups
        interval = paired_bootstrap(
            ours,
            theirs,
            int(config["bootstrap_resamples"]),
            int(config["bootstrap_seed"]) + index,
            float(config["confidence"]),
        )
        status = segment_status(queries, interval, theirs.value, segments)
        results.append(SegmentResult(name, queries, ours.value, theirs.value, interval, status))
    return results


@dataclass(frozen=True)
class Check:
    """One rule of the gate, its outcome and why."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """Whether a challenger is promoted, every check behind it, and the figures."""

    promote: bool
    reason: str
    metric: str
    challenger: float
    popularity: float
    champion: float | None
    difference: Interval | None = None
    checks: list[Check] = field(default_factory=list)
    segments: list[SegmentResult] = field(default_factory=list)
    lists: dict[str, dict[str, float]] = field(default_factory=dict)
    overlap: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the decision as plain data (logged, recorded in the ledger and the report)."""
        return asdict(self)


def guardrail_checks(lists: dict[str, dict[str, float]], config: dict[str, Any]) -> list[Check]:
    """Compare the challenger's list figures with the champion's (or floors on a first run)."""
    rails = config["guardrails"]
    ours = lists["challenger"]
    theirs = lists.get("champion")
    checks = []
    relative = float(rails["relative_tolerance"])
    for name in ("catalog_coverage", "distinct_categories", "distinct_sellers"):
        floor = float(rails["floors"][name])
        if theirs is not None:
            floor = max(floor, theirs[name] * (1.0 - relative))
        checks.append(
            Check(
                f"lists: {name}",
                ours[name] >= floor,
                f"lists: {name} {ours[name]:.4f} (floor {floor:.4f})",
            )
        )
    ceiling = float(rails["max_top_seller_share"])
    if theirs is not None:
        ceiling = min(
            ceiling, theirs["top_seller_share"] + float(rails["top_seller_share_increase"])
        )
    share = ours["top_seller_share"]
    checks.append(
        Check(
            "lists: top_seller_share",
            share <= ceiling,
            f"lists: top_seller_share {share:.4f} (ceiling {ceiling:.4f})",
        )
    )
    return checks


def passed_summary(checks: list[Check]) -> str:
    """One line for a promotion: the comparison that matters and how many checks passed."""
    headline = next(
        (c.detail for c in checks if c.name in ("vs champion", "champion")), checks[-1].detail
    )
    not_judged = sum("not judged" in c.detail for c in checks)
    unjudged = f", {not_judged} segments too small to judge" if not_judged else ""
    return f"{headline}; all {len(checks)} checks passed{unjudged}"


def gate_decision(
    challenger: MetricParts,
    popularity: MetricParts,
    champion: MetricParts | None,
    config: dict[str, Any],
    segments: list[SegmentResult] | None = None,
    lists: dict[str, dict[str, float]] | None = None,
    overlap: dict[str, float] | None = None,
) -> GateDecision:
    """Run every check in order; the first failing one is the reason for a rejection."""
    metric = str(config["gate_metric"])
    ours, baseline = challenger.value, popularity.value
    theirs = champion.value if champion is not None else None
    checks: list[Check] = []
    difference = None

    def decide() -> GateDecision:
        failed = [check for check in checks if not check.passed]
        reason = failed[0].detail if failed else passed_summary(checks)
        return GateDecision(
            not failed,
            reason,
            metric,
            ours,
            baseline,
            theirs,
            difference,
            checks,
            segments or [],
            lists or {},
            overlap or {},
        )

    if challenger.groups == 0:
        checks.append(
            Check(
                "evaluation set",
                False,
                f"empty evaluation set: no query group can be judged "
                f"on {metric} (no impression with a click on the held-out day)",
            )
        )
        return decide()
    if math.isnan(ours):
        checks.append(
            Check(
                "metric",
                False,
                f"challenger {metric} is NaN: its scores are not all finite numbers",
            )
        )
        return decide()
    lift = ours / baseline - 1.0 if baseline > 0 else math.inf
    min_lift = float(config["min_lift_over_popularity"])
    checks.append(
        Check(
            "beats popularity",
            lift > min_lift,
            f"{metric} {ours:.4f} vs popularity {baseline:.4f} (lift {lift:+.1%}, needs > "
            f"{min_lift:+.1%})",
        )
    )
    if champion is None or theirs is None:
        checks.append(Check("champion", True, "first model: there is no champion to compare"))
    else:
        difference = paired_bootstrap(
            challenger,
            champion,
            int(config["bootstrap_resamples"]),
            int(config["bootstrap_seed"]),
            float(config["confidence"]),
        )
        margin = float(config["min_difference_lower_bound"])
        checks.append(
            Check(
                "vs champion",
                difference.low > margin,
                f"{metric} challenger - champion = {difference.estimate:+.4f} "
                f"({config['confidence']:.0%} CI {difference.low:+.4f} .. {difference.high:+.4f}"
                f", lower bound must exceed {margin:+.4f}) over {challenger.groups} groups",
            )
        )
    for segment in segments or []:
        if segment.status == "too_few_queries":
            checks.append(
                Check(
                    f"segment {segment.name}",
                    True,
                    f"segment {segment.name} not judged: {segment.queries} queries, fewer than "
                    f"{config['segments']['min_queries']}",
                )
            )
        else:
            checks.append(
                Check(
                    f"segment {segment.name}",
                    segment.status == "ok",
                    f"segment {segment.name}: {segment.challenger:.4f} vs {segment.champion:.4f} "
                    f"({segment.difference.estimate:+.4f}, CI {segment.difference.low:+.4f} .. "
                    f"{segment.difference.high:+.4f})",
                )
            )
    if lists:
        checks.extend(guardrail_checks(lists, config))
    return decide()

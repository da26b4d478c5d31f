"""Offline evaluation on a held-out day: the model, the baselines, the oracle, and the gate."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rankflow.features import MODEL_FEATURES
from rankflow.metrics import evaluate_ranking

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

BASELINES = ("popularity", "recency", "random", "logged_order", "oracle")


class GateRejectedError(RuntimeError):
    """The challenger may not replace the champion."""


@dataclass(frozen=True)
class GateDecision:
    """Whether a challenger is promoted, and why."""

    promote: bool
    reason: str
    metric: str
    challenger: float
    popularity: float
    champion: float | None

    def as_dict(self) -> dict[str, Any]:
        """Return the decision as plain data (logged and recorded)."""
        return asdict(self)


def baseline_scores(frame: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """Score the held-out rows by each baseline (higher = ranked first)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    scores = {
        "popularity": (
            frame["item_clicks_7d"]
            + 2.0 * frame["item_saves_7d"]
            + 1e-3 * frame["item_impressions_7d"]
        ).to_numpy(dtype="float64"),
        "recency": -frame["item_age_days"].to_numpy(dtype="float64"),
        "random": rng.random(len(frame)),
        "logged_order": -frame["position"].to_numpy(dtype="float64"),
    }
    if "attractiveness" in frame and frame["attractiveness"].notna().all():
        scores["oracle"] = frame["attractiveness"].to_numpy(dtype="float64")
    return scores


def predict(booster_raw: bytes, frame: pd.DataFrame) -> np.ndarray:
    """Score rows with a serialized model, using every core (offline evaluation)."""
    from rankflow.training import booster_from_bytes

    booster = booster_from_bytes(booster_raw, nthread=0)
    return booster.inplace_predict(frame[MODEL_FEATURES].to_numpy(dtype="float32"))


def evaluation_table(
    frame: pd.DataFrame,
    rankers: dict[str, np.ndarray],
    config: dict[str, Any],
    examination: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Return metrics (NDCG@k, MAP@10, MRR, recall@K) of every ranker on the same groups.

    With an ``examination`` curve (P(examined | position), see :mod:`rankflow.propensity`) the
    table also has ``ipw_ndcg@k``, corrected for the position bias of the logged clicks.
    """
    from rankflow.metrics import group_codes
    from rankflow.propensity import inverse_propensity

    groups = group_codes(frame["qid"].to_numpy())
    labels = frame["label"].to_numpy(dtype="float64")
    cutoffs = tuple(int(k) for k in config["cutoffs"])
    weights = (
        inverse_propensity(
            frame["position"].to_numpy(), examination, clip=float(config["ipw_clip"])
        )
        if examination is not None
        else None
    )
    return {
        name: evaluate_ranking(
            groups,
            labels,
            scores,
            cutoffs=cutoffs,
            recall_k=int(config["recall_k"]),
            ndcg_empty=config["ndcg_empty"],
            propensity_weight=weights,
        )
        for name, scores in rankers.items()
    }


def gate_decision(table: dict[str, dict[str, float]], config: dict[str, Any]) -> GateDecision:
    """Promote only if the challenger beats popularity and is not worse than the champion."""
    metric = str(config["gate_metric"])
    challenger = table["challenger"][metric]
    popularity = table["popularity"][metric]
    champion = table.get("champion", {}).get(metric)
    min_lift = float(config["min_lift_over_popularity"])
    tolerance = float(config["champion_tolerance"])

    def decision(promote: bool, reason: str) -> GateDecision:
        return GateDecision(promote, reason, metric, challenger, popularity, champion)

    if math.isnan(challenger):
        return decision(False, f"challenger {metric} is NaN (no evaluable query groups)")
    lift = challenger / popularity - 1.0 if popularity > 0 else math.inf
    if lift <= min_lift:
        return decision(
            False,
            f"challenger {metric}={challenger:.4f} does not beat popularity {popularity:.4f} "
            f"(lift {lift:+.1%}, needs > {min_lift:+.1%})",
        )
    if champion is None:
        return decision(
            True, f"first model: {metric}={challenger:.4f}, lift {lift:+.1%} over popularity"
        )
    floor = champion * (1.0 - tolerance)
    if challenger < floor:
        return decision(
            False,
            f"challenger {metric}={challenger:.4f} is below the champion {champion:.4f} "
            f"beyond the tolerance ({tolerance:.1%}: floor {floor:.4f})",
        )
    return decision(
        True,
        f"{metric}={challenger:.4f} vs champion {champion:.4f} and popularity {popularity:.4f}",
    )


def format_table(table: dict[str, dict[str, float]]) -> str:
    """Render the evaluation table as aligned text (printed by the demo and logged)."""
    columns = [c for c in next(iter(table.values())) if not c.startswith("groups")]
    header = f"{'ranker':<14}" + "".join(f"{c:>12}" for c in columns)
    lines = [header, "-" * len(header)]
    for name, metrics in table.items():
        lines.append(f"{name:<14}" + "".join(f"{metrics[c]:>12.4f}" for c in columns))
    return "\n".join(lines)

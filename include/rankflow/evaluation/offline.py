"""Offline evaluation on a held-out day: the model, the champion, the baselines and the oracle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rankflow.evaluation.metrics import evaluate_ranking, ndcg_at_k
from rankflow.features.registry import popularity

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

BASELINES = ("popularity", "recency", "random", "logged_order", "oracle")


def baseline_scores(frame: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """Score the held-out rows by each baseline (higher = ranked first)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    scores = {
        # ties (items nobody clicked or saved) go to the more shown item
        "popularity": (popularity(frame) + 1e-3 * frame["item_impressions_7d"]).to_numpy(
            dtype="float64"
        ),
        "recency": -frame["item_age_days"].to_numpy(dtype="float64"),
        "random": rng.random(len(frame)),
        "logged_order": -frame["position"].to_numpy(dtype="float64"),
    }
    if "attractiveness" in frame and frame["attractiveness"].notna().all():
        scores["oracle"] = frame["attractiveness"].to_numpy(dtype="float64")
    return scores


def lacks_stream_features(booster_raw: bytes, frame: pd.DataFrame) -> bool:
    """Whether a model takes stream features that these rows were built without (null)."""
    from rankflow.model.fit import booster_from_bytes

    return stream_columns_missing(booster_from_bytes(booster_raw).feature_names or (), frame)


def stream_columns_missing(names: Sequence[str], frame: pd.DataFrame) -> bool:
    """Whether a model of these inputs takes stream features the rows hold no value of."""
    return "today_impressions" in names and (
        "today_impressions" not in frame or bool(frame["today_impressions"].isna().all())
    )


def predict(booster_raw: bytes, frame: pd.DataFrame) -> np.ndarray:
    """Score rows with a serialized model, using every core (offline evaluation)."""
    import numpy as np

    from rankflow.model.fit import booster_from_bytes, model_inputs

    if frame.empty:
        return np.empty(0, dtype=np.float32)
    booster = booster_from_bytes(booster_raw, nthread=0)
    if stream_columns_missing(booster.feature_names or (), frame):
        raise ValueError(
            "the model uses stream features but these rows were built without them (a day of "
            "the training set built with training.stream_features off): rebuild it"
        )
    return booster.inplace_predict(model_inputs(booster, frame))


def evaluation_table(
    frame: pd.DataFrame,
    rankers: dict[str, np.ndarray],
    config: dict[str, Any],
    examination: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Return metrics (NDCG@k, MAP@k, MRR) of every ranker on the same held-out groups.

    No recall: a held-out group is one logged list (about 20 items), so recall at the served K
    is 1 for every order; the served lists' recall is a monitoring figure (``served_recall``).

    With an ``examination`` curve (P(examined | position), see :mod:`~.propensity`) the
    table also has ``ipw_ndcg@k``, corrected for the position bias of the logged clicks; when
    the simulator's true attractiveness is known, ``truth_ndcg@k`` ranks against it (linear
    gain), which no logged click can bias.
    """
    from rankflow.evaluation.metrics import group_codes
    from rankflow.evaluation.propensity import inverse_propensity

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
    truth = (
        frame["attractiveness"].to_numpy(dtype="float64")
        if "attractiveness" in frame and frame["attractiveness"].notna().all()
        else None
    )
    table = {}
    for name, scores in rankers.items():
        metrics = evaluate_ranking(
            groups,
            labels,
            scores,
            cutoffs=cutoffs,
            recall_k=None,
            ndcg_empty=config["ndcg_empty"],
            propensity_weight=weights,
        )
        if truth is not None:  # the simulator's P(click | examined): what clicks estimate
            for k in cutoffs:
                metrics[f"truth_ndcg@{k}"] = ndcg_at_k(groups, truth, scores, k, gain="linear")
        table[name] = metrics
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    """Render the evaluation table as aligned text (printed by the demo and logged)."""
    columns = [c for c in next(iter(table.values())) if not c.startswith("groups")]
    width = max(14, *(len(name) + 2 for name in table))
    cell = max(12, *(len(c) + 2 for c in columns))
    header = f"{'ranker':<{width}}" + "".join(f"{c:>{cell}}" for c in columns)
    lines = [header, "-" * len(header)]
    for name, metrics in table.items():
        lines.append(
            f"{name:<{width}}"
            + "".join(f"{metrics.get(c, float('nan')):>{cell}.4f}" for c in columns)
        )
    return "\n".join(lines)

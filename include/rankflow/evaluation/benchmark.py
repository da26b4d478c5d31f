"""Public-benchmark validation: the nightly trainer and evaluator on LETOR 4.0 MQ2008's folds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankflow.config import Settings, deep_merge, repo_root
from rankflow.evaluation.letor import LETOR_FOLDS, RankingData, fold_split, read_partitions
from rankflow.evaluation.metrics import (
    EMPTY_CONVENTIONS,
    Empty,
    map_at_k_per_group,
    mean_over_groups,
    ndcg_at_k_per_group,
)
from rankflow.model.fit import FittedRanker

CUTOFFS = (1, 3, 5, 10)
OPTIMISTIC_FOLD = "Fold1"


@dataclass(frozen=True)
class PublishedFigure:
    """A published MQ2008 result to print next to ours, with its protocol and source."""

    method: str
    protocol: str
    metrics: dict[str, float]
    source: str


PUBLISHED_MQ2008 = (
    PublishedFigure(
        "XGBoost rank:ndcg",
        "Fold1, best iteration on the test set (optimistic)",
        {"ndcg@10": 0.8229},
        "CatBoost ranking benchmark (catboost/benchmarks, ranking)",
    ),
    PublishedFigure(
        "LightGBM lambdarank",
        "Fold1, best iteration on the test set (optimistic)",
        {"ndcg@10": 0.8227},
        "CatBoost ranking benchmark (catboost/benchmarks, ranking)",
    ),
    PublishedFigure(
        "CatBoost (best)",
        "Fold1, best iteration on the test set (optimistic)",
        {"ndcg@10": 0.8304},
        "CatBoost ranking benchmark (catboost/benchmarks, ranking)",
    ),
    PublishedFigure(
        "XGBoost rank:ndcg",
        "five folds, early stopping on the validation subset",
        {"ndcg@10": 0.79},
        "approximate figure quoted in rankflow issue #3",
    ),
)


def default_data_dir() -> Path:
    """Where MQ2008 is read from by default: the team's shared copy beside the checkout."""
    return repo_root().parent / "shared" / "datasets" / "mq2008"


def benchmark_config(settings: Settings) -> dict[str, Any]:
    """The nightly training config with the benchmark's overrides (rounds, learning rate)."""
    overrides = settings.pipeline["benchmark"]["mq2008"]
    training = {k: v for k, v in overrides.items() if k in settings.pipeline["training"]}
    return deep_merge(settings.pipeline["training"], training)


def fold_metrics(data: RankingData, scores: np.ndarray, convention: Empty) -> dict[str, float]:
    """NDCG@1/3/5/10 and MAP (full list) of one test subset under an empty-query convention."""
    metrics = {
        f"ndcg@{k}": mean_over_groups(
            ndcg_at_k_per_group(data.qids, data.labels, scores, k, empty=convention)
        )
        for k in CUTOFFS
    }
    metrics["map"] = mean_over_groups(
        map_at_k_per_group(data.qids, data.labels, scores, None, empty=convention)
    )
    return metrics


def ndcg10_by_convention(data: RankingData, scores: np.ndarray) -> dict[str, float]:
    """NDCG@10 under each convention for queries without a relevant document."""
    conventions: tuple[Empty, ...] = ("one", "zero", "skip")
    return {
        name: mean_over_groups(ndcg_at_k_per_group(data.qids, data.labels, scores, 10, empty=name))
        for name in conventions
    }


def matrix(data: RankingData, names: list[str] | None = None) -> Any:
    """The ranking DMatrix of a subset (with the feature names a model was fitted with)."""
    from rankflow.model.fit import ranking_matrix

    return ranking_matrix(data.features, data.labels, data.groups, names)


def predict(booster: Any, data: RankingData) -> np.ndarray:
    """A model's scores of a subset's rows."""
    scores: np.ndarray = booster.predict(matrix(data, booster.feature_names))
    return scores


# fit a ranker on a train subset, early-stopped on a validation subset (or for num_boost_round
# trees without one): the engine a benchmark runs the nightly trainer through
Trainer = Callable[[RankingData, RankingData | None, dict[str, Any]], FittedRanker]


def local_trainer(
    train: RankingData, validation: RankingData | None, config: dict[str, Any]
) -> FittedRanker:
    """The ``local`` engine: ``xgb.train`` in this process."""
    import xgboost as xgb

    from rankflow.model.fit import fit_ranker

    if validation is not None:
        return fit_ranker(matrix(train), matrix(validation), config)
    rounds = int(config["num_boost_round"])
    params = {**config["params"], "seed": int(config["seed"])}
    return FittedRanker(xgb.train(params, matrix(train), rounds), rounds - 1, float("nan"), [])


def spark_trainer(spark: Any, workers: int) -> Trainer:
    """The ``spark`` engine: SparkXGBRanker on ``workers`` barrier tasks of a classic session."""
    from rankflow.model.spark_engine import fit_on_spark, ranking_partitions

    def fit(
        train: RankingData, validation: RankingData | None, config: dict[str, Any]
    ) -> FittedRanker:
        frame = ranking_partitions(letor_frame(spark, train, validation), workers, ["row"])
        names = [f"f{i}" for i in range(train.features.shape[1])]
        try:
            return fit_on_spark(
                frame, names, config, workers, early_stopping=validation is not None
            )
        finally:
            frame.unpersist()

    return fit


def letor_frame(spark: Any, train: RankingData, validation: RankingData | None) -> Any:
    """A Spark frame of a train (and validation) subset: features, label, group, row order."""
    import pandas as pd

    from rankflow.model.spark_engine import QUERY_INDEX, VALIDATION

    parts, offset = [], 0
    for data, is_validation in ((train, False), (validation, True)):
        if data is None:
            continue
        names = [f"f{i}" for i in range(data.features.shape[1])]
        part = pd.DataFrame(data.features, columns=names)
        part["label"] = data.labels
        part[QUERY_INDEX] = np.repeat(np.arange(data.n_queries) + offset, data.groups)
        part[VALIDATION] = is_validation
        parts.append(part)
        offset += data.n_queries
    frame = pd.concat(parts, ignore_index=True)
    frame["row"] = np.arange(len(frame))
    return spark.createDataFrame(frame)


def fold_scores(
    train: RankingData,
    validation: RankingData,
    test: RankingData,
    config: dict[str, Any],
    trainer: Trainer = local_trainer,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Score the test subset with a bag of seeds, each refit on train + validation.

    Each seed's LambdaMART is early-stopped on the validation subset; with ``refit`` it is then
    retrained on train + validation for that many rounds, scaled by the added rows. The test
    subset chooses nothing. Returns the bag's scores, the first seed's early-stopped model's
    scores alone, and each seed's best iteration.
    """
    from rankflow.evaluation.letor import concatenate

    combined = concatenate([train, validation])
    growth = len(combined.labels) / len(train.labels)
    seeds = [int(config["seed"]) + i for i in range(int(config["seeds"]))]
    bag: list[np.ndarray] = []
    single: np.ndarray | None = None
    best: list[int] = []
    for seed in seeds:
        seeded = {**config, "seed": seed}
        fitted = trainer(train, validation, seeded)
        best.append(fitted.best_iteration)
        if single is None:
            single = predict(fitted.booster, test)
        model = fitted.booster
        if config["refit"]:
            rounds = max(1, round((fitted.best_iteration + 1) * growth))
            model = trainer(combined, None, {**seeded, "num_boost_round": rounds}).booster
        bag.append(predict(model, test))
    assert single is not None
    return np.mean(bag, axis=0), single, best


def run_fold(
    partitions: dict[str, RankingData],
    fold: str,
    config: dict[str, Any],
    convention: Empty,
    trainer: Trainer = local_trainer,
) -> dict[str, Any]:
    """Train on a fold's three subsets, early-stop on its validation subset, score its test."""
    train, validation, test = fold_split(partitions, fold)
    scores, single, best = fold_scores(train, validation, test, config, trainer)
    subsets = LETOR_FOLDS[fold]
    return {
        "fold": fold,
        "train": list(subsets[0]),
        "validation": subsets[1],
        "test": subsets[2],
        "test_queries": test.n_queries,
        "test_queries_without_relevant": int(
            np.count_nonzero(np.bincount(test.qids, weights=test.labels) == 0)
        ),
        "best_iterations": best,
        **fold_metrics(test, scores, convention),
        "ndcg@10_by_convention": ndcg10_by_convention(test, scores),
        "single_model_ndcg@10": fold_metrics(test, single, convention)["ndcg@10"],
    }


def run_optimistic(
    partitions: dict[str, RankingData],
    config: dict[str, Any],
    convention: Empty,
    trainer: Trainer = local_trainer,
) -> dict[str, Any]:
    """Fold1 with the best iteration chosen on the test set: the published benchmarks' protocol.

    XGBoost's ``ndcg@10`` equals :func:`~rankflow.evaluation.metrics.ndcg_at_k` with
    ``empty="one"``, so the iteration it picks on the test subset is the one our evaluator would
    pick.
    """
    train, _, test = fold_split(partitions, OPTIMISTIC_FOLD)
    rounds = int(config["optimistic_rounds"])
    params = {**config["params"], **config["optimistic_params"]}
    fitted = trainer(
        train,
        test,
        {**config, "params": params, "num_boost_round": rounds, "early_stopping_rounds": rounds},
    )
    metrics = fold_metrics(test, predict(fitted.booster, test), convention)
    reference = PUBLISHED_MQ2008[0].metrics["ndcg@10"]
    return {
        "fold": OPTIMISTIC_FOLD,
        "rounds": rounds,
        "params": config["optimistic_params"],
        "best_iteration": fitted.best_iteration,
        **metrics,
        "reference_ndcg@10": reference,
        "difference": metrics["ndcg@10"] - reference,
    }


def run_mq2008(
    folder: Path,
    settings: Settings,
    convention: Empty | None = None,
    trainer: Trainer = local_trainer,
    engine: str = "local",
) -> dict[str, Any]:
    """Run the five LETOR folds (honest) and Fold1 (optimistic); return every figure.

    ``trainer`` fits every model (``engine`` names it in the result): the local engine, or the
    spark engine's SparkXGBRanker (:func:`spark_trainer`).
    """
    started = time.perf_counter()
    options = settings.pipeline["benchmark"]["mq2008"]
    convention = convention or options["ndcg_empty"]
    if convention not in EMPTY_CONVENTIONS:
        raise ValueError(f"convention must be one of {EMPTY_CONVENTIONS}, got {convention!r}")
    config = {
        **benchmark_config(settings),
        **{
            key: options[key]
            for key in ("optimistic_rounds", "optimistic_params", "seeds", "refit")
        },
    }
    partitions = read_partitions(folder)
    folds = [run_fold(partitions, fold, config, convention, trainer) for fold in LETOR_FOLDS]
    keys = [f"ndcg@{k}" for k in CUTOFFS] + ["map"]
    return {
        "dataset": "MQ2008",
        "data": str(folder),
        "convention": convention,
        "protocol": f"train on three subsets, early stopping on the validation subset"
        f"{', refit on both' if config['refit'] else ''}, a bag of {config['seeds']} seeds, "
        "metrics on the test subset",
        "folds": folds,
        "mean": {key: float(np.mean([fold[key] for fold in folds])) for key in keys},
        "mean_single_model_ndcg@10": float(
            np.mean([fold["single_model_ndcg@10"] for fold in folds])
        ),
        "mean_ndcg@10_by_convention": {
            name: float(np.mean([fold["ndcg@10_by_convention"][name] for fold in folds]))
            for name in EMPTY_CONVENTIONS
        },
        "optimistic": run_optimistic(partitions, config, convention, trainer),
        "engine": engine,
        "published": [vars(figure) for figure in PUBLISHED_MQ2008],
        "params": {
            **config["params"],
            "seed": config["seed"],
            "num_boost_round": config["num_boost_round"],
            "early_stopping_rounds": config["early_stopping_rounds"],
            "seeds": config["seeds"],
            "refit": config["refit"],
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


CONVENTION_TEXT = {
    "one": "count as 1 (XGBoost's convention, used by published tables)",
    "zero": "count as 0",
    "skip": "left out of the mean",
}


def format_report(result: dict[str, Any]) -> str:
    """Render the benchmark result as the text table printed by ``rankflow benchmark``."""
    keys = [f"ndcg@{k}" for k in CUTOFFS] + ["map"]
    header = f"{'fold':<8}{'test':>6}{'best its':>18}" + "".join(f"{k:>9}" for k in keys)
    lines = [
        f"{result['dataset']}, LETOR 4.0 five folds: {result['protocol']}; "
        f"the {result['engine']} training engine.",
        f"Queries without a relevant document {CONVENTION_TEXT[result['convention']]}.",
        "",
        header,
        "-" * len(header),
    ]
    for fold in result["folds"]:
        lines.append(
            f"{fold['fold']:<8}{fold['test']:>6}"
            + f"{','.join(map(str, fold['best_iterations'])):>18}"
            + "".join(f"{fold[k]:>9.4f}" for k in keys)
        )
    lines.append(f"{'mean':<32}" + "".join(f"{result['mean'][k]:>9.4f}" for k in keys))
    by_convention = result["mean_ndcg@10_by_convention"]
    lines += [
        "",
        "Mean NDCG@10 by convention for queries without a relevant document: "
        + ", ".join(f"{name} {value:.4f}" for name, value in by_convention.items()),
        "Mean NDCG@10 of one early-stopped model (first seed, no refit): "
        f"{result['mean_single_model_ndcg@10']:.4f}",
    ]
    optimistic = result["optimistic"]
    lines += [
        f"Optimistic protocol ({optimistic['fold']}, best of {optimistic['rounds']} iterations "
        f"chosen on the test set: iteration {optimistic['best_iteration']}): "
        f"NDCG@10 {optimistic['ndcg@10']:.4f}, published {optimistic['reference_ndcg@10']:.4f} "
        f"({optimistic['difference']:+.4f})",
        "",
        "Published figures (NDCG@10, queries without a relevant document count as 1):",
    ]
    for figure in result["published"]:
        values = ", ".join(f"{k} {v:.4f}" for k, v in figure["metrics"].items())
        lines.append(f"  {figure['method']:<22} {values}  {figure['protocol']}; {figure['source']}")
    lines.append(f"({result['seconds']:.0f} s)")
    return "\n".join(lines)

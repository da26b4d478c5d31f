"""LambdaMART training with XGBoost, tracked and registered in MLflow."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings, repo_root
from rankflow.features import MODEL_FEATURES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xgboost as xgb

CHAMPION = "champion"


class ModelNotFoundError(RuntimeError):
    """No model is registered under the requested alias or version."""


@dataclass(frozen=True)
class TrainingWindow:
    """Days used for fitting, early stopping and held-out evaluation, all before scoring."""

    train_start: date
    train_end: date
    validation_start: date
    validation_end: date
    test_day: date


def training_window(ds: date, config: dict[str, Any]) -> TrainingWindow:
    """Split the days before and including ``ds`` in time: train, then validation, then test."""
    validation_days = int(config["validation_days"])
    validation_end = ds - timedelta(days=1)
    validation_start = validation_end - timedelta(days=validation_days - 1)
    train_end = validation_start - timedelta(days=1)
    return TrainingWindow(
        train_start=train_end - timedelta(days=int(config["train_days"]) - 1),
        train_end=train_end,
        validation_start=validation_start,
        validation_end=validation_end,
        test_day=ds,
    )


def sort_by_query(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort rows so each query group is contiguous (XGBoost's ranking requirement)."""
    return frame.sort_values(["ds", "qid", "position"], kind="stable").reset_index(drop=True)


def group_sizes(qids: pd.Series) -> np.ndarray:
    """Return the size of each contiguous query group, in order."""
    import numpy as np

    values = qids.to_numpy()
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return np.diff(np.r_[starts, len(values)])


def ranking_matrix(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    feature_names: list[str] | None = None,
) -> xgb.DMatrix:
    """Build a ranking DMatrix from dense features, labels and contiguous query-group sizes."""
    import xgboost as xgb

    matrix = xgb.DMatrix(features, label=labels, feature_names=feature_names)
    matrix.set_group(groups)
    return matrix


DEBIASING = ("none", "lambdarank_unbiased", "position_feature")
POSITION_FEATURE = "shown_position"


def model_features(debiasing: str) -> list[str]:
    """The feature columns of a model trained with a debiasing variant, in order.

    ``position_feature`` adds the position the item was shown at: the model explains the
    position's share of the clicks with it, and every prediction fixes it to one value, so the
    ranking comes from the other features alone.
    """
    if debiasing not in DEBIASING:
        raise ValueError(f"training.debiasing must be one of {DEBIASING}, got {debiasing!r}")
    return (
        [*MODEL_FEATURES, POSITION_FEATURE]
        if debiasing == "position_feature"
        else [*MODEL_FEATURES]
    )


def variant_params(config: dict[str, Any], debiasing: str) -> dict[str, Any]:
    """The training config of a debiasing variant.

    ``lambdarank_unbiased`` is XGBoost's unbiased LambdaMART: it estimates the position bias
    while fitting and reweights the pairs; it reads positions from the row order of each query
    group, which is the shown order (rows are sorted by position).
    """
    model_features(debiasing)
    params = {k: v for k, v in config["params"].items() if k != "lambdarank_unbiased"}
    if debiasing == "lambdarank_unbiased":
        params["lambdarank_unbiased"] = True
    return {**config, "debiasing": debiasing, "params": params}


def frame_matrix(frame: pd.DataFrame, debiasing: str = "none") -> xgb.DMatrix:
    """Build the ranking DMatrix of training rows sorted by query group and shown position."""
    features = model_features(debiasing)
    values = (
        frame.assign(**{POSITION_FEATURE: frame["position"]})
        if (POSITION_FEATURE in features)
        else frame
    )
    return ranking_matrix(
        values[features].to_numpy(dtype="float32"),
        frame["label"].to_numpy(dtype="float32"),
        group_sizes(frame["qid"]),
        features,
    )


def model_inputs(booster: xgb.Booster, frame: pd.DataFrame, position: float = 1.0) -> np.ndarray:
    """The feature matrix a model predicts from, in its own feature order.

    A model trained with the shown position as a feature gets it fixed to ``position`` (the top
    slot): scores then rank items as if each were shown first.
    """
    names = booster.feature_names or list(MODEL_FEATURES)
    if POSITION_FEATURE in names:
        frame = frame.assign(**{POSITION_FEATURE: position})
    matrix: np.ndarray = frame[names].to_numpy(dtype="float32")
    return matrix


@dataclass(frozen=True)
class FittedRanker:
    """A booster cut at its best validation iteration, with the validation curve."""

    booster: xgb.Booster
    best_iteration: int
    best_score: float
    validation_curve: list[float]


def fit_ranker(train: xgb.DMatrix, validation: xgb.DMatrix, config: dict[str, Any]) -> FittedRanker:
    """Fit LambdaMART, early-stopped on the validation groups, keeping only the best trees.

    ``xgb.train`` returns every tree it grew, up to ``early_stopping_rounds`` past the best
    iteration; the model is sliced so that scoring, serving and the gate all see the same one.
    """
    import xgboost as xgb

    params = {**config["params"], "seed": int(config["seed"])}
    history: dict[str, Any] = {}
    booster = xgb.train(
        params,
        train,
        num_boost_round=int(config["num_boost_round"]),
        evals=[(validation, "validation")],
        early_stopping_rounds=int(config["early_stopping_rounds"]),
        evals_result=history,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    curve = [float(v) for v in history["validation"][str(params["eval_metric"])]]
    return FittedRanker(booster[: best + 1], best, curve[best], curve)


def fit_variant(
    train: pd.DataFrame, validation: pd.DataFrame, config: dict[str, Any], debiasing: str
) -> FittedRanker:
    """Fit one debiasing variant of the configured ranker on training rows."""
    variant = variant_params(config, debiasing)
    return fit_ranker(frame_matrix(train, debiasing), frame_matrix(validation, debiasing), variant)


def code_version() -> str:
    """Return the git commit of the code (``RANKFLOW_CODE_VERSION`` wins), marked if dirty."""
    if os.environ.get("RANKFLOW_CODE_VERSION"):
        return os.environ["RANKFLOW_CODE_VERSION"]
    root = repo_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def lock_hash() -> str:
    """SHA-256 (16 hex) of ``requirements.lock``: the exact dependency set, for the lineage."""
    lock = repo_root() / "requirements.lock"
    if not lock.exists():
        return "missing"
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:16]


def model_bytes(booster: xgb.Booster) -> bytes:
    """The model as XGBoost JSON bytes: what MLflow stores, scoring loads and lineage hashes."""
    return bytes(booster.save_raw(raw_format="json"))


def lineage_of(
    settings: Settings,
    fitted: FittedRanker,
    table_versions: dict[str, int],
    window: TrainingWindow,
    train_rows: int,
    validation_rows: int,
) -> dict[str, Any]:
    """Everything needed to rebuild a model byte for byte, and to say how it was made."""
    import platform

    import xgboost as xgb

    return {
        "code_version": code_version(),
        "config_hash": settings.pipeline_hash,
        "config_version": settings.pipeline["version"],
        "training_config": settings.pipeline["training"],
        "requirements_lock_hash": lock_hash(),
        "xgboost_version": xgb.__version__,
        "python_version": platform.python_version(),
        "table_versions": table_versions,
        "window": {k: v.isoformat() for k, v in vars(window).items()},
        "train_rows": train_rows,
        "validation_rows": validation_rows,
        "best_iteration": fitted.best_iteration,
        "model_sha256": hashlib.sha256(model_bytes(fitted.booster)).hexdigest(),
    }


def load_lineage(settings: Settings, version: str) -> dict[str, Any]:
    """Read the lineage a registered model version was logged with."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure_mlflow(settings)
    try:
        run_id = MlflowClient().get_model_version(settings.model_name, version).run_id
    except MlflowException as error:
        raise ModelNotFoundError(f"model {settings.model_name} has no version {version}") from error
    lineage: dict[str, Any] = mlflow.artifacts.load_dict(f"runs:/{run_id}/lineage.json")
    if "training_config" not in lineage:
        raise ModelNotFoundError(
            f"model version {version} predates reproducible lineage (no training_config)"
        )
    return lineage


def configure_mlflow(settings: Settings) -> None:
    """Point MLflow at the tracking store; the embedded one keeps artefacts beside its DB."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)  # models live beside their runs
    if settings.mlflow_tracking_uri.startswith("sqlite:"):
        settings.paths.mlflow.mkdir(parents=True, exist_ok=True)
        if mlflow.get_experiment_by_name("rankflow") is None:
            artifacts = settings.paths.mlflow / "artifacts"
            mlflow.create_experiment("rankflow", artifact_location=artifacts.as_uri())
    mlflow.set_experiment("rankflow")


def log_and_register(
    settings: Settings,
    fitted: FittedRanker,
    lineage: dict[str, Any],
    ds: date,
    variants: dict[str, bytes] | None = None,
) -> dict[str, str]:
    """Log the training run to MLflow and register the model; return run id and version."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb

    configure_mlflow(settings)
    training = settings.pipeline["training"]
    with mlflow.start_run(run_name=f"train-{ds.isoformat()}") as run:
        mlflow.log_params(dict(training["params"]))
        mlflow.log_params(
            {
                "seed": training["seed"],
                "num_boost_round": training["num_boost_round"],
                "early_stopping_rounds": training["early_stopping_rounds"],
                "best_iteration": fitted.best_iteration,
                "config_version": settings.pipeline["version"],
            }
        )
        mlflow.set_tags(
            {
                "ds": ds.isoformat(),
                "code_version": lineage["code_version"],
                "config_hash": settings.pipeline_hash,
                "requirements_lock_hash": lineage["requirements_lock_hash"],
                "model_sha256": lineage["model_sha256"],
                **{f"delta_version.{k}": str(v) for k, v in lineage["table_versions"].items()},
            }
        )
        for step, value in enumerate(fitted.validation_curve):
            mlflow.log_metric("validation_ndcg_10", value, step=step)
        mlflow.log_dict(lineage, "lineage.json")
        mlflow.log_dict(settings.pipeline, "config.json")
        mlflow.log_dict({"features": fitted.booster.feature_names}, "features.json")
        for name, raw in (variants or {}).items():  # debiasing variants, for the comparison
            mlflow.log_text(raw.decode(), f"variants/{name}.json")
        info = mlflow.xgboost.log_model(
            fitted.booster,
            name="model",
            model_format="json",
            registered_model_name=settings.model_name,
            pip_requirements=[f"xgboost=={xgb.__version__}"],
        )
        version = str(info.registered_model_version)
        return {"run_id": run.info.run_id, "model_version": version}


def load_model(settings: Settings, alias_or_version: str = CHAMPION) -> tuple[bytes, str]:
    """Return the XGBoost JSON bytes and version of a registered model (alias or number)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure_mlflow(settings)
    client = MlflowClient()
    try:
        if alias_or_version.isdigit():
            mv = client.get_model_version(settings.model_name, alias_or_version)
        else:
            mv = client.get_model_version_by_alias(settings.model_name, alias_or_version)
    except MlflowException as error:
        raise ModelNotFoundError(
            f"no model '{settings.model_name}' with alias/version '{alias_or_version}' in "
            f"{settings.mlflow_tracking_uri}: run the nightly DAG with retrain=true first"
        ) from error
    with tempfile.TemporaryDirectory() as folder:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{settings.model_name}/{mv.version}", dst_path=folder
            )
        )
        model_files = sorted(local.rglob("model.json")) or sorted(local.rglob("model.xgb"))
        if not model_files:
            raise ModelNotFoundError(f"model version {mv.version} has no XGBoost model file")
        return model_files[0].read_bytes(), str(mv.version)


def model_trained_for(settings: Settings, version: str) -> date | None:
    """Return the logical date a registered model version was trained for (its run's ``ds``)."""
    from mlflow import MlflowClient

    configure_mlflow(settings)
    client = MlflowClient()
    run_id = client.get_model_version(settings.model_name, version).run_id
    tag = client.get_run(run_id).data.tags.get("ds") if run_id else None
    return date.fromisoformat(tag) if tag else None


def booster_from_bytes(raw: bytes, nthread: int = 1) -> xgb.Booster:
    """Load an XGBoost JSON model from bytes (used once per executor process)."""
    import xgboost as xgb

    booster = xgb.Booster(params={"nthread": nthread})
    booster.load_model(bytearray(raw))
    return booster


def run_record_path(settings: Settings, ds: date, name: str) -> Path:
    """Return where a step of the run for ``ds`` records its small JSON result."""
    return settings.paths.home / "runs" / f"ds={ds.isoformat()}" / f"{name}.json"


def write_run_record(settings: Settings, ds: date, name: str, record: dict[str, Any]) -> Path:
    """Atomically write a step's JSON result (read by later steps and the demo)."""
    path = run_record_path(settings, ds, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def read_run_record(settings: Settings, ds: date, name: str) -> dict[str, Any]:
    """Read a step's JSON result, with a clear error when the step has not run."""
    path = run_record_path(settings, ds, name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the '{name}' step for {ds} first")
    record: dict[str, Any] = json.loads(path.read_text())
    return record

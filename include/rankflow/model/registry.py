"""The one MLflow adapter: tracking set-up, model registration, aliases and model loading."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.model.fit import FittedRanker

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


CHAMPION = "champion"


class ModelNotFoundError(RuntimeError):
    """No model is registered under the requested alias or version."""


# MLflow's answers for a missing model, version or alias; anything else (401, 403, 5xx) is raised.
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def load_lineage(settings: Settings, version: str) -> dict[str, Any]:
    """Read the lineage a registered model version was logged with."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run_id = mlflow_client(settings).get_model_version(settings.model_name, version).run_id
    except MlflowException as error:
        if error.error_code not in NOT_FOUND_CODES:
            raise  # unauthenticated, forbidden or unreachable is not "no such model"
        raise ModelNotFoundError(f"model {settings.model_name} has no version {version}") from error
    lineage: dict[str, Any] = mlflow.artifacts.load_dict(f"runs:/{run_id}/lineage.json")
    if "training_config" not in lineage:
        raise ModelNotFoundError(
            f"model version {version} predates reproducible lineage (no training_config)"
        )
    return lineage


def configure_mlflow(settings: Settings, *, experiment: bool = True) -> None:
    """Point MLflow at the tracking store; the embedded one keeps artefacts beside its DB.

    ``experiment``: also make sure the ``rankflow`` experiment exists and is the active one —
    only writers (training, evaluation) do, since on a server with authentication the user
    that creates an experiment manages it: a reader (the ranking service, the Ranking page)
    polling first would lock the pipeline out of its own experiment.
    """
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)  # models live beside their runs
    embedded = settings.mlflow_tracking_uri.startswith("sqlite:")
    if embedded:
        settings.paths.mlflow.mkdir(parents=True, exist_ok=True)
    if not experiment:
        return
    if embedded and mlflow.get_experiment_by_name("rankflow") is None:
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

    from rankflow.features.registry import schema_document

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
                "feature_schema_hash": lineage["feature_schema_hash"],
                **{f"delta_version.{k}": str(v) for k, v in lineage["table_versions"].items()},
            }
        )
        for step, value in enumerate(fitted.validation_curve):
            mlflow.log_metric("validation_ndcg_10", value, step=step)
        mlflow.log_dict(lineage, "lineage.json")
        mlflow.log_dict(settings.pipeline, "config.json")
        mlflow.log_dict({"features": fitted.booster.feature_names}, "features.json")
        mlflow.log_dict(schema_document(), "feature_schema.json")
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


def find_model_version(
    settings: Settings, client: MlflowClient, alias_or_version: str = CHAMPION
) -> ModelVersion:
    """The registered version an alias (e.g. champion) or a version number names.

    Raises:
        ModelNotFoundError: nothing is registered under that alias or number.
    """
    from mlflow.exceptions import MlflowException

    try:
        if alias_or_version.isdigit():
            return client.get_model_version(settings.model_name, alias_or_version)
        return client.get_model_version_by_alias(settings.model_name, alias_or_version)
    except MlflowException as error:
        if error.error_code not in NOT_FOUND_CODES:
            raise  # unauthenticated, forbidden or unreachable is not "no such model"
        raise ModelNotFoundError(
            f"no model '{settings.model_name}' with alias/version '{alias_or_version}' in "
            f"{settings.mlflow_tracking_uri}: run the nightly DAG with retrain=true first"
        ) from error


def load_model(settings: Settings, alias_or_version: str = CHAMPION) -> tuple[bytes, str]:
    """Return the XGBoost JSON bytes and version of a registered model (alias or number)."""
    import mlflow

    mv = find_model_version(settings, mlflow_client(settings), alias_or_version)
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
    client = mlflow_client(settings)
    run_id = client.get_model_version(settings.model_name, version).run_id
    tag = client.get_run(run_id).data.tags.get("ds") if run_id else None
    return date.fromisoformat(tag) if tag else None


PREVIOUS_CHAMPION = "previous_champion"


class LifecycleRefusedError(RuntimeError):
    """A promotion or rollback was refused; nothing was changed."""


def mlflow_client(settings: Settings) -> MlflowClient:
    """An MLflow client on the configured tracking store."""
    from mlflow import MlflowClient

    configure_mlflow(settings, experiment=False)  # reading and moving aliases need no experiment
    return MlflowClient()


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """Alias -> version of a registered model (empty before the first model)."""
    from mlflow.exceptions import MlflowException

    try:
        return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    except MlflowException:
        return {}


def list_models(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    """The newest registered versions with their training day, gate outcome and aliases."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases(client, settings.model_name).items():
        by_version.setdefault(version, []).append(alias)
    try:
        versions = client.search_model_versions(f"name='{settings.model_name}'")
    except MlflowException:
        return []
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True)[:limit]:
        tags = client.get_run(mv.run_id).data.tags if mv.run_id else {}
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "ds": tags.get("ds"),
                "gate": tags.get("gate"),
                "code_version": tags.get("code_version"),
                "config_hash": tags.get("config_hash"),
                "created": mv.creation_timestamp,
                "run_id": mv.run_id,
            }
        )
    return rows


@dataclass(frozen=True)
class AliasMove:
    """The champion before and after a promotion or rollback."""

    champion_before: str | None
    champion_after: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def move_champion(settings: Settings, client: MlflowClient, version: str) -> AliasMove:
    """Point ``champion`` at ``version`` and ``previous_champion`` at the one it replaces.

    Then announce the move in Redis, so ranking services follow within their refresh interval
    without polling MLflow on every tick.
    """
    from mlflow.exceptions import MlflowException

    name = settings.model_name

    try:
        client.get_model_version(name, version)
    except MlflowException as error:
        raise LifecycleRefusedError(f"model {name} has no version {version}") from error
    before = aliases(client, name).get(CHAMPION)
    if before == version:
        raise LifecycleRefusedError(f"version {version} is already the champion")
    if before is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, before)
    client.set_registered_model_alias(name, CHAMPION, version)
    announce_move(settings, version)
    return AliasMove(before, version)


def announce_move(settings: Settings, version: str) -> None:
    """Tell ranking services the champion moved; if Redis is away they find it by polling."""
    import logging

    from rankflow.store.client import redact_url, redis_client
    from rankflow.store.versions import announce_champion

    try:
        client = redis_client(settings.redis.url, socket_timeout=2.0)
        announce_champion(client, settings.redis.key_prefix, version)
    except Exception as error:  # MLflow holds the truth; the announcement only speeds it up
        logging.getLogger(__name__).warning(
            "champion %s not announced in Redis %s (services will find it within "
            "serving.registry_poll_seconds): %s",
            version,
            redact_url(settings.redis.url),
            error,
        )


def debiasing_variants(settings: Settings, run_id: str) -> dict[str, bytes]:
    """The variants the train step fitted for the comparison (by name), in a stable order.

    The configured debiasing methods (the model's own among them when the comparison ran on a
    sample of query groups), then any other variant logged (the model without its stream
    features).
    """
    import mlflow

    listed = {
        Path(item.path).name for item in mlflow_client(settings).list_artifacts(run_id, "variants")
    }
    compared = settings.pipeline["training"]["compare_debiasing"]
    names = [name for name in compared if f"{name}.json" in listed]
    names += sorted(n.removesuffix(".json") for n in listed if n.removesuffix(".json") not in names)
    return {
        name: mlflow.artifacts.load_text(f"runs:/{run_id}/variants/{name}.json").encode()
        for name in names
    }


def served_model(settings: Settings, alias: str = CHAMPION) -> tuple[str, str | None]:
    """The version an alias points to now and the feature schema hash it was trained with.

    What the ranking service polls to follow the champion (None: a model from before the
    feature registry, which no feature version matches).
    """
    client = mlflow_client(settings)
    mv = find_model_version(settings, client, alias)
    tags = client.get_run(mv.run_id).data.tags if mv.run_id else {}
    return str(mv.version), tags.get("feature_schema_hash")

"""Model lifecycle commands: list the registered models, promote one, roll a release back.

The MLflow aliases (``champion``, ``previous_champion``) say which model the next nightly run
scores with; the Redis ``current`` pointer says which lists readers get. A rollback moves both
back together, and every change is appended to the promotion ledger.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.training import CHAMPION, configure_mlflow

if TYPE_CHECKING:
    import redis
    from mlflow import MlflowClient

PREVIOUS_CHAMPION = "previous_champion"


class LifecycleRefusedError(RuntimeError):
    """A promotion or rollback was refused; nothing was changed."""


def actor() -> str:
    """Who runs a manual command (``RANKFLOW_ACTOR`` wins, else the OS user)."""
    return os.environ.get("RANKFLOW_ACTOR") or getpass.getuser()


def mlflow_client(settings: Settings) -> MlflowClient:
    """An MLflow client on the configured tracking store."""
    from mlflow import MlflowClient

    configure_mlflow(settings)
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


def move_champion(client: MlflowClient, name: str, version: str) -> AliasMove:
    """Point ``champion`` at ``version`` and ``previous_champion`` at the one it replaces."""
    from mlflow.exceptions import MlflowException

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
    return AliasMove(before, version)


@dataclass(frozen=True)
class Rollback:
    """What a rollback changed: the Redis pointers and the champion alias."""

    surface: str
    redis_before: str
    redis_after: str
    model_before: str | None
    model_after: str
    alias: AliasMove
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (printed by ``rankflow models rollback``)."""
        return asdict(self)


def rollback_release(settings: Settings, redis_client: redis.Redis, surface: str) -> Rollback:
    """Serve the previous Redis version again and make its model the champion, together.

    Refuses, changing nothing, when there is no previous version, when its keys are expiring,
    or when its model is not registered. If the alias cannot be moved after the switch, the
    switch is undone.
    """
    import time

    from rankflow.serving import current_key, meta_key, previous_key, rollback

    started = time.perf_counter()
    prefix = settings.redis.key_prefix
    current, previous = (
        value.decode() if isinstance(value, bytes) else value
        for value in redis_client.mget(current_key(prefix, surface), previous_key(prefix, surface))
    )
    if previous is None or current is None:
        raise LifecycleRefusedError(
            f"no previous version of '{surface}' to roll back to (current: {current}); "
            "nothing was changed"
        )

    def model_of(version: str) -> str | None:
        value = redis_client.hget(meta_key(prefix, surface, version), "model_version")
        return value.decode() if isinstance(value, bytes) else value

    target_model = model_of(previous)
    if not target_model:
        raise LifecycleRefusedError(f"version {previous} records no model; nothing was changed")
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    try:
        client.get_model_version(settings.model_name, target_model)
    except MlflowException as error:
        raise LifecycleRefusedError(
            f"the model {target_model} of {previous} is not registered; nothing was changed"
        ) from error
    switched = rollback(redis_client, prefix, surface)
    if switched.status != "rolled_back":
        raise LifecycleRefusedError(f"Redis refused the rollback ({switched.reason})")
    champion = aliases(client, settings.model_name).get(CHAMPION)
    try:
        move = (
            move_champion(client, settings.model_name, target_model)
            if champion != target_model
            else AliasMove(champion, target_model)
        )
    except Exception:
        rollback(redis_client, prefix, surface)  # undo the switch: both move or neither
        raise
    return Rollback(
        surface,
        current,
        previous,
        model_of(current),
        target_model,
        move,
        round(time.perf_counter() - started, 3),
    )

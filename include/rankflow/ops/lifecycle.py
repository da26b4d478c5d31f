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
from rankflow.model.registry import (
    CHAMPION,
    AliasMove,
    LifecycleRefusedError,
    aliases,
    mlflow_client,
    move_champion,
)

if TYPE_CHECKING:
    import redis


def actor() -> str:
    """Who runs a manual command (``RANKFLOW_ACTOR`` wins, else the OS user)."""
    return os.environ.get("RANKFLOW_ACTOR") or getpass.getuser()


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

    from rankflow.store.versions import rollback, version_meta, version_pointers

    started = time.perf_counter()
    prefix = settings.redis.key_prefix
    current, previous = version_pointers(redis_client, prefix, surface)
    if previous is None or current is None:
        raise LifecycleRefusedError(
            f"no previous version of '{surface}' to roll back to (current: {current}); "
            "nothing was changed"
        )

    def model_of(version: str) -> str | None:
        return version_meta(redis_client, prefix, surface, version).get("model_version")

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
            move_champion(settings, client, target_model)
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

"""Promotion and rollback move the MLflow aliases and the Redis version together, or not at all."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import numpy as np
import pytest
import redis

from rankflow.config import Settings
from rankflow.model.fit import FittedRanker
from rankflow.model.registry import (
    LifecycleRefusedError,
    aliases,
    list_models,
    log_and_register,
    mlflow_client,
    move_champion,
)
from rankflow.ops.lifecycle import rollback_release
from rankflow.store.keys import champion_key, current_key, new_version_id, previous_key
from rankflow.store.versions import commit_version
from rankflow.store.writer import begin_version, write_fallback, write_lists

pytestmark = pytest.mark.services
SURFACE = "home"


def register(settings: Settings, ds: date) -> str:
    """Register a small real XGBoost ranker the way the train step does; return its version."""
    import xgboost as xgb

    rng = np.random.default_rng(ds.day)
    matrix = xgb.DMatrix(rng.random((40, 3)), label=rng.integers(0, 2, 40))
    matrix.set_group([10, 10, 10, 10])
    booster = xgb.train({"objective": "rank:ndcg"}, matrix, 3)
    lineage = {
        "code_version": "test",
        "table_versions": {},
        "requirements_lock_hash": "test",
        "model_sha256": "test",
        "feature_schema_hash": "test",
    }
    fitted = FittedRanker(booster, 2, 0.5, [0.5, 0.5, 0.5])
    return log_and_register(settings, fitted, lineage, ds)["model_version"]


def publish(settings: Settings, client: redis.Redis, ds: date, model_version: str) -> str:
    """Publish a small Redis version made by ``model_version``; return its id."""
    prefix = settings.redis.key_prefix
    version = new_version_id(ds)
    begin_version(client, prefix, SURFACE, version, ds=ds, model_version=model_version, k=5)
    users = np.arange(1, 51, dtype=np.int64)
    items = np.tile(np.arange(5, dtype=np.int64), (50, 1)) + int(model_version) * 100
    stats = write_lists(settings.redis.url, prefix, SURFACE, version, users, items)
    write_fallback(client, prefix, SURFACE, version, [1, 2, 3])
    assert commit_version(client, prefix, SURFACE, version, stats.users).status == "switched"
    return version


def pointers(settings: Settings, client: redis.Redis) -> tuple[Any, Any]:
    prefix = settings.redis.key_prefix
    return client.get(current_key(prefix, SURFACE)), client.get(previous_key(prefix, SURFACE))


def test_rollback_serves_the_previous_lists_and_makes_their_model_champion(
    settings: Settings, redis_client: redis.Redis
) -> None:
    client = mlflow_client(settings)
    first = register(settings, date(2026, 11, 1))
    move_champion(settings, client, first)
    old = publish(settings, redis_client, date(2026, 11, 1), first)
    second = register(settings, date(2026, 11, 2))
    move_champion(settings, client, second)
    new = publish(settings, redis_client, date(2026, 11, 2), second)

    done = rollback_release(settings, redis_client, SURFACE)

    assert (done.redis_before, done.redis_after) == (new, old)
    assert (done.model_before, done.model_after) == (second, first)
    assert pointers(settings, redis_client) == (old.encode(), new.encode())
    assert aliases(client, settings.model_name) == {
        "champion": first,
        "previous_champion": second,
    }
    announced = json.loads(redis_client.get(champion_key(settings.redis.key_prefix)))
    assert announced["version"] == first  # ranking services follow it without asking MLflow
    listed = {row["version"]: row for row in list_models(settings)}
    assert listed[first]["aliases"] == ["champion"]
    assert listed[second]["ds"] == "2026-11-02"


def test_rollback_without_a_previous_version_refuses_and_changes_nothing(
    settings: Settings, redis_client: redis.Redis
) -> None:
    client = mlflow_client(settings)
    only = register(settings, date(2026, 11, 1))
    move_champion(settings, client, only)
    version = publish(settings, redis_client, date(2026, 11, 1), only)
    with pytest.raises(LifecycleRefusedError, match=r"no previous version.*nothing was changed"):
        rollback_release(settings, redis_client, SURFACE)
    assert pointers(settings, redis_client) == (version.encode(), None)
    assert aliases(client, settings.model_name) == {"champion": only}


def test_rollback_to_lists_of_an_unregistered_model_refuses_and_changes_nothing(
    settings: Settings, redis_client: redis.Redis
) -> None:
    client = mlflow_client(settings)
    current_model = register(settings, date(2026, 11, 2))
    move_champion(settings, client, current_model)
    old = publish(settings, redis_client, date(2026, 11, 1), "99")  # 99 was never registered
    new = publish(settings, redis_client, date(2026, 11, 2), current_model)
    with pytest.raises(LifecycleRefusedError, match=r"99 .* not registered"):
        rollback_release(settings, redis_client, SURFACE)
    assert pointers(settings, redis_client) == (new.encode(), old.encode())
    assert aliases(client, settings.model_name) == {"champion": current_model}


def test_promoting_an_unknown_or_current_version_is_refused(settings: Settings) -> None:
    client = mlflow_client(settings)
    version = register(settings, date(2026, 11, 1))
    with pytest.raises(LifecycleRefusedError, match="no version 42"):
        move_champion(settings, client, "42")
    move_champion(settings, client, version)
    with pytest.raises(LifecycleRefusedError, match="already the champion"):
        move_champion(settings, client, version)

"""The ranking service under faults: every valid request still gets a 200, with a reason.

Each world is a private redis-server with rankflow's ACL users (killable) and a model name of
its own in MLflow, so the service can be shown without a feature version, without a model,
with a model trained on another feature schema, across a rollback, across a Redis crash and
past its deadline. ``rankflow serve`` runs as its own process throughout.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rankflow.config import Settings
from redis_servers import RedisServer
from serving_helpers import call, metric, register_champion, running_service, wait_for
from tiny_lake import TINY_DAY

pytestmark = [pytest.mark.spark, pytest.mark.services]


@dataclass
class World:
    """A private Redis, the settings that point at it, and the env a subprocess needs."""

    server: RedisServer
    settings: Settings
    env: dict[str, str]


def make_world(lake: Settings, folder: Path, model_name: str) -> World:
    """Start a private Redis with ACL users; settings and env of a fresh model name."""
    server = RedisServer(folder / "data", acl=True).start()
    redis_settings = replace(
        lake.redis,
        url=server.url,
        reader_url=server.reader_url,
        admin_url=server.admin_url,
        logger_url=server.logger_url,
    )
    env = {
        "RANKFLOW_REDIS_URL": server.url,
        "RANKFLOW_REDIS_READER_URL": server.reader_url,
        "RANKFLOW_REDIS_ADMIN_URL": server.admin_url,
        "RANKFLOW_REDIS_LOGGER_URL": server.logger_url,
        "RANKFLOW_MODEL_NAME": model_name,
    }
    return World(server, replace(lake, redis=redis_settings, model_name=model_name), env)


def candidates_of(spark: Any, lake: Settings) -> tuple[int, list[int]]:
    """One user of the tiny day and the ids of 30 unsold items."""
    from rankflow.lake.tables import read_partition

    items = read_partition(spark, lake, "silver/item_features", TINY_DAY).where("not is_sold")
    ids = [int(r[0]) for r in items.select("item_id").orderBy("item_id").limit(30).collect()]
    users = read_partition(spark, lake, "silver/user_features", TINY_DAY)
    return int(users.select("user_id").orderBy("user_id").first()[0]), ids


def rank(base: str, user: int, items: list[int]) -> dict[str, Any]:
    """POST /v1/rank; the request must succeed (a 200) whatever happens behind it."""
    status, body = call(
        f"{base}/v1/rank", {"user_id": user, "surface": "home", "candidates": items}
    )
    assert status == 200, body
    assert sorted(i["item_id"] for i in body["items"]) == sorted(items)
    return dict(body)


def fallbacks(base: str, reason: str) -> float:
    """The service's fallback counter for one reason."""
    return metric(base, "rankflow_rank_fallbacks_total", f'reason="{reason}"')


@pytest.fixture(scope="module")
def world(
    spark: Any,
    lake: Settings,
    feature_versions: dict[str, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """A world with the tiny day's features materialised and a champion."""
    from rankflow.steps.materialise_features import run_materialise_features

    made = make_world(lake, tmp_path_factory.mktemp("faults"), "faults-model")
    run_materialise_features(spark, made.settings, TINY_DAY, "faults")
    register_champion(made.settings, TINY_DAY, seed=1)
    yield made
    made.server.stop()


def test_without_features_or_model_it_falls_back_then_picks_them_up_while_serving(
    spark: Any,
    lake: Settings,
    feature_versions: dict[str, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from rankflow.steps.materialise_features import run_materialise_features

    empty = make_world(lake, tmp_path_factory.mktemp("empty"), "never-trained")
    user, items = candidates_of(spark, lake)
    try:
        with running_service(empty.settings, env=empty.env, ready=False) as base:
            status, ready = call(f"{base}/readyz", key=None)
            assert status == 503
            assert "no feature version" in ready["last_refresh_error"]
            answer = rank(base, user, items)
            assert answer["fallback"] is True
            assert answer["reason"] == "not_ready"
            assert answer["items"][0]["score"] is None
            # features arrive: still no model, still a fallback (the first registry query of
            # the process opens MLflow's store, which takes seconds: not a bound under test)
            run_materialise_features(spark, empty.settings, TINY_DAY, "late")
            wait_for(lambda: "never-trained" in call(f"{base}/readyz", key=None)[1].get(
                "last_refresh_error", ""), 60)  # fmt: skip
            assert rank(base, user, items)["reason"] == "not_ready"
            # a champion is registered: the service loads the pair while serving
            version = register_champion(empty.settings, TINY_DAY, seed=3)
            wait_for(lambda: call(f"{base}/readyz", key=None)[0] == 200, 10)
            answer = rank(base, user, items)
            assert answer["fallback"] is False
            assert answer["model_version"] == version
            assert fallbacks(base, "not_ready") >= 2
    finally:
        empty.server.stop()


def test_a_model_of_another_feature_schema_is_refused_and_a_rollback_arrives_in_10s(
    spark: Any, lake: Settings, world: World
) -> None:
    from rankflow.model.registry import served_model

    user, items = candidates_of(spark, lake)
    publish_lists(world, "a")
    with running_service(world.settings, env=world.env) as base:
        first = rank(base, user, items)["model_version"]
        foreign = register_champion(world.settings, TINY_DAY, seed=5, feature_schema="0" * 16)
        assert served_model(world.settings) == (foreign, "0" * 16)
        wait_for(lambda: metric(base, "rankflow_model_refusals_total") >= 1, 10)
        kept = rank(base, user, items)
        assert kept["model_version"] == first  # the old pair keeps serving
        assert kept["fallback"] is False
        # a good model becomes champion and publishes its lists; then it is rolled back
        second = register_champion(world.settings, TINY_DAY, seed=9)
        publish_lists(world, "b", model_version=second)
        wait_for(lambda: rank(base, user, items)["model_version"] == second, 10)
        rolled = subprocess.run(
            [sys.executable, "-m", "rankflow.cli", "models", "rollback", "--reason", "test"],
            env={**_environ(world)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rolled.returncode == 0, rolled.stderr[-2000:]
        took = wait_for(lambda: rank(base, user, items)["model_version"] == first, 10)
        assert took <= 10
    # the refusal reaches the nightly run (which alerts on any)
    from datetime import UTC, datetime

    from rankflow.steps.check_skew import day_refusals

    refusals = day_refusals(world.settings, datetime.now(UTC).date())
    assert [(r["model_version"], r["model_schema_hash"]) for r in refusals] == [(foreign, "0" * 16)]


def test_redis_killed_while_serving_every_request_gets_a_200_and_it_recovers(
    spark: Any, lake: Settings, world: World
) -> None:
    import redis

    user, items = candidates_of(spark, lake)
    with running_service(world.settings, env=world.env) as base:
        assert rank(base, user, items)["fallback"] is False
        with redis.Redis.from_url(world.server.admin_url) as admin:
            admin.save()  # what the server loads when it returns
        assert world.server.process is not None
        world.server.process.send_signal(signal.SIGKILL)
        world.server.process.wait()
        try:
            answers = [rank(base, user, items) for _ in range(20)]
        finally:
            world.server.start()
        assert all(a["fallback"] is True for a in answers)
        assert all("redis_unavailable" in a["reason"] for a in answers)
        assert fallbacks(base, "redis_unavailable") >= 20
        took = wait_for(lambda: rank(base, user, items)["fallback"] is False, 10)
        assert took <= 10


def test_past_the_deadline_the_answer_is_the_fallback_with_its_reason(
    spark: Any, lake: Settings, world: World, tmp_path: Path
) -> None:
    user, items = candidates_of(spark, lake)
    config = tmp_path / "deadline.yaml"
    config.write_text("serving:\n  deadline_ms: 0.000001\n")
    with running_service(world.settings, config=config, env=world.env) as base:
        answers = [rank(base, user, items) for _ in range(5)]
        assert all(a["fallback"] is True and a["reason"] == "deadline" for a in answers)
        assert fallbacks(base, "deadline") == 5


def test_with_two_workers_every_scrape_counts_every_answer(
    spark: Any, lake: Settings, world: World
) -> None:
    user, items = candidates_of(spark, lake)
    with running_service(world.settings, env=world.env, workers=2) as base:
        answers = [rank(base, user, items) for _ in range(30)]
        assert not any(a["fallback"] for a in answers)
        port = base.rsplit(":", 1)[1]
        folder = world.settings.paths.home / "run" / f"serve-metrics-{port}"
        writers = {f.name.rsplit("_", 1)[1] for f in folder.glob("counter_*.db")}
        assert len(writers) == 2, "both workers answered and wrote their counters"
        for _ in range(6):  # each scrape lands on either worker: each sees the sum
            assert metric(base, "rankflow_rank_requests_total", 'status="200"') == 30


def _environ(world: World) -> dict[str, str]:
    import os

    return {
        **os.environ,
        **world.env,
        "RANKFLOW_HOME": str(world.settings.paths.home),
        "MLFLOW_TRACKING_URI": world.settings.mlflow_tracking_uri,
    }


def publish_lists(world: World, run: str, model_version: str | None = None) -> str:
    """Publish a small list version of the home surface (the rollback goes back one)."""
    import redis

    from rankflow.model.registry import served_model
    from rankflow.store.keys import new_version_id
    from rankflow.store.versions import commit_version
    from rankflow.store.writer import begin_version, write_fallback, write_lists

    model = model_version or served_model(world.settings)[0]
    users = np.arange(1, 11, dtype=np.int64)
    version = new_version_id(TINY_DAY, f"faults-{run}")
    with redis.Redis.from_url(world.settings.redis.url) as client:
        begin_version(client, "rf", "home", version, ds=TINY_DAY, model_version=model, k=3)
        stats = write_lists(world.settings.redis.url, "rf", "home", version, users,
                            np.tile([1, 2, 3], (len(users), 1)))  # fmt: skip
        write_fallback(client, "rf", "home", version, [1, 2, 3])
        assert commit_version(client, "rf", "home", version, stats.users).status == "switched"
    return version

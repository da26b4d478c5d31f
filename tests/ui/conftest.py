"""Fixtures of the Ranking page tests: a seeded RANKFLOW_HOME, a private Redis, an API server.

The seed is what a few nightly runs leave behind, written with the same tools the pipeline uses
where they do not need Spark: monitoring rows judged by ``rankflow.monitoring.judge`` and written
as the monitor step's Delta table (partitioned by ds), two versions published into Redis with the
store's own write path, a small ``silver/item_features`` table and a champion in MLflow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from rankflow.config import Settings, load_settings
from rankflow.features.registry import MODEL_FEATURES
from rankflow.monitoring.history import MONITORING_TABLE
from rankflow.monitoring.rules import Figure, judge
from redis_servers import RedisServer

SURFACE = "home"
DAYS = 8
FIRST_DAY = date(2026, 10, 23)
LAST_DAY = FIRST_DAY + timedelta(days=DAYS - 1)
TRAINED_DAYS = {0, 1, 2, 4, 5, 7}  # nights whose run trained and evaluated a model
DRIFTING = "item_ctr_7d"  # the feature whose PSI breaches on the last day
USERS = list(range(1001, 1011))
ITEMS = list(range(5001, 5041))
SOLD_ITEM = 5003
K = 10

MONITORING_SCHEMA = pa.schema(
    [
        ("ds", pa.date32()),
        ("surface", pa.string()),
        ("group", pa.string()),
        ("metric", pa.string()),
        ("subject", pa.string()),
        ("value", pa.float64()),
        ("lower", pa.float64()),
        ("upper", pa.float64()),
        ("threshold_source", pa.string()),
        ("breached", pa.bool_()),
        ("run_id", pa.string()),
        ("computed_at", pa.timestamp("us", tz="UTC")),
    ]
)
ITEM_SCHEMA = pa.schema(
    [
        ("ds", pa.date32()),
        ("item_id", pa.int64()),
        ("seller_id", pa.int64()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("style", pa.string()),
        ("size", pa.string()),
        ("listed_ts", pa.timestamp("us", tz="UTC")),
        ("is_sold", pa.bool_()),
        ("popularity", pa.float64()),
        ("item_price", pa.float64()),
    ]
)
CATEGORIES = ("dresses", "sneakers", "jackets", "bags")


@dataclass
class Seeded:
    """What the seed wrote, for the assertions."""

    settings: Settings
    env: dict[str, str]
    surface: str = SURFACE
    users: list[int] = field(default_factory=lambda: list(USERS))
    last_day: date = LAST_DAY
    drifting: str = DRIFTING
    sold_item: int = SOLD_ITEM
    current: str = ""
    previous: str = ""
    lists: dict[int, list[int]] = field(default_factory=dict)
    champion_version: str = ""
    report_marker: str = "rankflow-test-report-7f3a"


# --------------------------------------------------------------------------- monitoring


def night_figures(day: int, rng: np.random.Generator) -> list[Figure]:
    """The figures of one night; the last night has a coverage drop and one drifting feature."""
    last = day == DAYS - 1
    figures = [
        Figure("lists", "lists", 9800.0 + day),
        Figure("lists", "list_coverage", 0.95 if last else 0.998 - 0.001 * rng.random()),
        Figure("lists", "empty_lists", 0.0),
        Figure("lists", "short_list_share", 0.002),
        Figure("lists", "catalog_coverage", 0.08 + 0.01 * rng.random()),
        Figure("lists", "distinct_categories@10", 3.1 + 0.2 * rng.random()),
        Figure("lists", "distinct_sellers@10", 8.5 + rng.random()),
        Figure("lists", "top_seller_share@10", 0.12 + 0.02 * rng.random()),
        Figure("lists", "served_sold_share", 0.0),
        Figure("score", "score_mean", 0.4 + 0.05 * rng.random()),
        Figure("publish", "published_users", 9800.0 + 15 * day),
        Figure("publish", "redis_bytes_per_user", 520.0 + 5 * rng.random()),
        Figure("publish", "redis_publish_seconds", 3.0 + rng.random()),
        Figure("publish", "s3_publish_seconds", 1.5 + rng.random()),
    ]
    if day:
        figures.append(Figure("score", "score_psi", 0.01 + 0.02 * rng.random()))
        figures.append(Figure("publish", "published_users_change", 0.0015))
    for i, name in enumerate([*MODEL_FEATURES[:7], DRIFTING]):
        value = 0.02 + 0.01 * i + 0.02 * rng.random()
        if name == DRIFTING:
            value = 0.41 if last else 0.05 + 0.03 * day
        figures.append(Figure("feature", "feature_psi", value, name))
        figures.append(Figure("feature", "feature_js", value / 8, name))
    if day in TRAINED_DAYS:
        base = {"popularity": 0.27, "logged_order": 0.28, "random": 0.24, "oracle": 0.55}
        champion = 0.41 + 0.01 * day + 0.01 * rng.random()
        for metric, shift in (("ipw_ndcg@10", 0.0), ("ndcg@10", 0.07)):
            figures.append(Figure("offline", metric, champion + shift, "champion"))
            for name, value in base.items():
                figures.append(Figure("offline", metric, value + shift + 0.01 * rng.random(), name))
        lift = champion / (base["popularity"] + 0.005) - 1
        figures.append(Figure("offline", "champion_lift_over_popularity", lift))
    return figures


def monitoring_table(settings: Settings) -> pa.Table:
    """A few nights of history, each judged against the history before it (as the step does)."""
    rng = np.random.default_rng(4)
    config = settings.pipeline["monitoring"]
    rows: list[dict[str, Any]] = []
    for day in range(DAYS):
        ds = FIRST_DAY + timedelta(days=day)
        computed_at = datetime.combine(ds + timedelta(days=1), datetime.min.time(), UTC)
        judged = judge(night_figures(day, rng), config, list(rows))
        rows += [
            {
                **row,
                "ds": ds,
                "surface": SURFACE,
                "run_id": f"scheduled__{ds.isoformat()}T00:00:00+00:00",
                "computed_at": computed_at + timedelta(hours=3),
            }
            for row in judged
        ]
    return pa.Table.from_pylist(rows, schema=MONITORING_SCHEMA)


def write_monitoring(settings: Settings) -> None:
    """Write the history as the monitor step does: one Delta table partitioned by ds."""
    from deltalake import write_deltalake

    table = monitoring_table(settings)
    write_deltalake(
        settings.paths.table(MONITORING_TABLE), table, partition_by=["ds"], mode="append"
    )


# --------------------------------------------------------------------------- items and Redis


def item_features(ds: date, brand_suffix: str) -> pa.Table:
    """One partition of silver/item_features with the columns the page shows."""
    listed = datetime.combine(ds - timedelta(days=3), datetime.min.time(), UTC)
    rows = [
        {
            "ds": ds,
            "item_id": item,
            "seller_id": 700 + item % 7,
            "category": CATEGORIES[item % len(CATEGORIES)],
            "brand": f"brand{item % 5}-{brand_suffix}",
            "style": "vintage" if item % 2 else "casual",
            "size": ("S", "M", "L")[item % 3],
            "listed_ts": listed + timedelta(hours=item % 24),
            "is_sold": item == SOLD_ITEM,
            "popularity": float(item % 11),
            "item_price": 10.0 + item % 40,
        }
        for item in ITEMS
    ]
    return pa.Table.from_pylist(rows, schema=ITEM_SCHEMA)


def write_items(settings: Settings) -> None:
    """Two days of item features whose brands differ, so the page must pick the right ds."""
    from deltalake import write_deltalake

    path = settings.paths.table("silver/item_features")
    for ds, suffix in ((LAST_DAY - timedelta(days=1), "old"), (LAST_DAY, "new")):
        write_deltalake(path, item_features(ds, suffix), partition_by=["ds"], mode="append")


def publish(seeded: Seeded) -> None:
    """Publish two versions of the surface (yesterday's becomes previous) with the store."""
    import redis

    from rankflow.store.keys import new_version_id
    from rankflow.store.versions import commit_version
    from rankflow.store.writer import begin_version, write_fallback, write_lists

    settings = seeded.settings
    prefix, url = settings.redis.key_prefix, settings.redis.url
    client = redis.Redis.from_url(url)
    try:
        for offset, ds in enumerate((LAST_DAY - timedelta(days=1), LAST_DAY)):
            rng = np.random.default_rng(offset)
            lists = {u: [int(i) for i in rng.choice(ITEMS, size=K, replace=False)] for u in USERS}
            if offset:
                lists[USERS[0]][1] = SOLD_ITEM  # a sold item the hourly repair has not removed
            version = new_version_id(ds, f"seed-{ds.isoformat()}")
            begin_version(client, prefix, SURFACE, version, ds=ds, model_version="1", k=K)
            stats = write_lists(url, prefix, SURFACE, version, USERS, list(lists.values()))
            write_fallback(client, prefix, SURFACE, version, ITEMS[:K])
            result = commit_version(client, prefix, SURFACE, version, stats.users)
            assert result.status == "switched", result
            seeded.previous, seeded.current = seeded.current, version
            seeded.lists = lists
    finally:
        client.close()


# --------------------------------------------------------------------------- MLflow


def register_champion(seeded: Seeded) -> None:
    """A training run with metrics and a run report, registered and aliased champion.

    Uses an explicit client so nothing in this process's MLflow globals changes.
    """
    from mlflow import MlflowClient

    from rankflow.model.registry import CHAMPION

    settings = seeded.settings
    uri = settings.mlflow_tracking_uri
    settings.paths.mlflow.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    artifacts = (settings.paths.mlflow / "artifacts").as_uri()
    experiment = client.create_experiment("rankflow", artifact_location=artifacts)
    run = client.create_run(experiment, run_name=f"train-{LAST_DAY.isoformat()}")
    run_id = run.info.run_id
    metrics = {
        "challenger.ipw_ndcg_at_10": 0.4265,
        "challenger.ndcg_at_10": 0.4946,
        "challenger.mrr": 0.4743,
        "popularity.ipw_ndcg_at_10": 0.2741,
        "popularity.ndcg_at_10": 0.3833,
        "popularity.mrr": 0.378,
        "oracle.ipw_ndcg_at_10": 0.5513,
        "validation_ndcg_10": 0.6977,
        "gate.difference": 0.012,
    }
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    for key, value in {
        "ds": LAST_DAY.isoformat(),
        "gate": "promoted",
        "code_version": "abc",
    }.items():
        client.set_tag(run_id, key, value)
    report = f"<!doctype html><html><body><h1>Run report {seeded.report_marker}</h1></body></html>"
    client.log_text(run_id, report, "report.html")
    client.set_terminated(run_id)
    client.create_registered_model(settings.model_name)
    version = client.create_model_version(
        settings.model_name, f"{run.info.artifact_uri}/model", run_id=run_id
    )
    client.set_registered_model_alias(settings.model_name, CHAMPION, version.version)
    seeded.champion_version = str(version.version)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of headless Chromium; skipped locally when missing, required in CI."""
    from screenshot import chromium_binary

    binary = chromium_binary()
    if binary is None:
        message = "chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}: CI must run the Ranking page's browser tests")
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the UI tests' own with rankflow's ACL users: the page reads as reader."""
    server = RedisServer(tmp_path_factory.mktemp("redis") / "data", acl=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory, private_redis: RedisServer) -> Seeded:
    """A RANKFLOW_HOME with monitoring history, item features, a champion; Redis published.

    Once per session: the seed publishes fixed versions into the session's Redis, and the page's
    and the auth matrix's servers only read it.
    """
    home = tmp_path_factory.mktemp("ranking-home")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        RANKFLOW_HOME=str(home),
        RANKFLOW_REDIS_URL=private_redis.url,
        RANKFLOW_REDIS_READER_URL=private_redis.reader_url,
        RANKFLOW_REDIS_ADMIN_URL=private_redis.admin_url,
    )
    settings = load_settings(env)
    seeded = Seeded(settings=settings, env=env)
    write_monitoring(settings)
    write_items(settings)
    publish(seeded)
    register_champion(seeded)
    return seeded


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, seeded: Seeded) -> Iterator[str]:
    """``airflow api-server`` with this checkout's plugins, reading the seeded home."""
    from screenshot import api_server, migrate, server_env

    folder = tmp_path_factory.mktemp("airflow")
    (folder / "dags").mkdir()
    log = folder / "api-server.log"
    env = server_env(seeded.env, folder / "home", folder / "dags")
    migrate(env, folder / "migrate.log")
    try:
        with api_server(env, log) as base_url:
            yield base_url
    finally:
        if os.environ.get("RANKFLOW_KEEP_UI_LOGS"):
            print(log.read_text())

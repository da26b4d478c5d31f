"""The ranking service over real HTTP scores exactly like the nightly batch scorer.

The tiny marketplace's features are materialised into the real Redis, a model is registered as
champion in MLflow, and ``rankflow serve`` runs as its own process. For a user, the service's
scores of that user's candidates must equal, bit for bit, what batch scoring computes from the
Delta tables through Spark (the same on-demand function, the same model).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rankflow.config import Settings
from rankflow.features.registry import MODEL_FEATURES
from serving_helpers import call, metric, register_champion, running_service, wait_for
from tiny_lake import TINY_DAY

pytestmark = [pytest.mark.spark, pytest.mark.services]


@pytest.fixture(scope="module")
def service(
    spark: Any,
    lake: Settings,
    feature_versions: dict[str, int],
    redis_admin_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    """Materialise the tiny day, register a champion and run `rankflow serve` on a free port.

    One service for the module (its tests only read); every user's answers log their inputs.
    """
    import redis

    from rankflow.steps.candidates import run_candidates
    from rankflow.steps.materialise_features import run_materialise_features

    admin = redis.Redis.from_url(redis_admin_url)
    admin.flushdb()
    run_candidates(spark, lake, TINY_DAY)  # idempotent: the scoring test's candidates
    run_materialise_features(spark, lake, TINY_DAY, "serve-test")
    model_version = register_champion(lake, TINY_DAY)
    config = tmp_path_factory.mktemp("serve") / "serve.yaml"
    config.write_text("serving:\n  log_vectors_percent: 100\n")
    try:
        with running_service(lake, config) as base:
            yield base, model_version
    finally:
        admin.flushdb()
        admin.close()


def test_service_scores_equal_batch_scores_bit_for_bit(
    spark: Any, lake: Settings, service: tuple[str, str]
) -> None:
    from rankflow.lake.tables import read_partition, scoring_input
    from rankflow.model.fit import booster_from_bytes, model_inputs
    from rankflow.model.registry import load_model

    base, model_version = service
    candidates = read_partition(spark, lake, "silver/candidates", TINY_DAY)
    users = [
        int(r[0])
        for r in candidates.select("user_id").distinct().orderBy("user_id").limit(3).collect()
    ]
    raw, _ = load_model(lake, model_version)
    booster = booster_from_bytes(raw)
    for user in users:
        rows = scoring_input(
            spark, lake, TINY_DAY, spark.createDataFrame([(user,)], "user_id long")
        )
        frame = rows.toPandas()
        expected = booster.inplace_predict(model_inputs(booster, frame))
        by_item = dict(zip(frame["item_id"].tolist(), expected.tolist(), strict=True))
        status, body = call(
            f"{base}/v1/rank",
            {"user_id": user, "surface": "home", "candidates": list(by_item), "k": 1000},
        )
        assert status == 200, body
        assert body["fallback"] is False
        assert body["model_version"] == model_version
        got = {item["item_id"]: item["score"] for item in body["items"]}
        assert got == by_item  # every candidate, every score identical
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True)


def test_bad_requests_get_a_400_and_unknown_callers_a_401(service: tuple[str, str]) -> None:
    base, _ = service
    rank = f"{base}/v1/rank"
    assert call(rank, {"user_id": 1, "surface": "home", "candidates": [1]}, key="wrong")[0] == 401
    assert call(rank, {"user_id": 1, "surface": "home", "candidates": [1]}, key=None)[0] == 401
    cases = {
        "non-integer": {"user_id": "u1", "surface": "home", "candidates": [1]},
        "item id": {"user_id": 1, "surface": "home", "candidates": ["a"]},
        "surface": {"user_id": 1, "surface": "nowhere", "candidates": [1]},
        "too many": {"user_id": 1, "surface": "home", "candidates": list(range(1001))},
        "repeated": {"user_id": 1, "surface": "home", "candidates": [1, 1]},
        "unknown field": {"user_id": 1, "surface": "home", "candidates": [1], "extra": 1},
    }
    for name, body in cases.items():
        status, answer = call(rank, body)
        assert status == 400, name
        assert answer["error"], name
    oversized = {"user_id": 1, "surface": "home", "candidates": [1], "context": {"x": "y" * 70_000}}
    status, answer = call(rank, oversized)
    assert status == 400
    assert "limit" in answer["error"]


def test_unknown_candidates_come_last_in_request_order(
    spark: Any, lake: Settings, service: tuple[str, str]
) -> None:
    from rankflow.lake.tables import read_partition

    base, _ = service
    items = [int(r[0]) for r in read_partition(spark, lake, "silver/item_features", TINY_DAY)
             .where("not is_sold").select("item_id").limit(3).collect()]  # fmt: skip
    unknown = [4_000_000_001, 4_000_000_000]
    status, body = call(
        f"{base}/v1/rank",
        {"user_id": 123456789, "surface": "home", "candidates": [unknown[0], *items, unknown[1]]},
    )
    assert status == 200
    returned = [i["item_id"] for i in body["items"]]
    assert sorted(returned[:3]) == sorted(items)
    assert returned[3:] == unknown
    assert [i["score"] for i in body["items"][3:]] == [None, None]


def logged_answers(base: str, wanted: int) -> int:
    """Wait until the service has appended ``wanted`` answers to the serving log."""
    logged = 'outcome="logged"'
    wait_for(lambda: metric(base, "rankflow_serving_log_records_total", logged) >= wanted, 10)
    return int(metric(base, "rankflow_serving_log_records_total", logged))


def test_served_answers_drain_and_replay_offline_without_skew(
    spark: Any, lake: Settings, service: tuple[str, str], redis_admin_url: str
) -> None:
    """The serving log drains into bronze/served; replaying it offline finds zero skew.

    Then one user's vector is changed in Redis behind the service's back: the replay names
    exactly that feature.
    """
    from datetime import UTC, datetime

    import redis

    from rankflow.features.registry import USER_FEATURES
    from rankflow.lake.tables import read_partition
    from rankflow.steps.check_skew import run_check_skew
    from rankflow.steps.drain_served import run_drain_served
    from rankflow.store.keys import FEATURES, feature_key
    from rankflow.store.versions import version_pointers

    base, model_version = service
    candidates = read_partition(spark, lake, "silver/candidates", TINY_DAY)
    per_user = candidates.groupBy("user_id").agg({"item_id": "collect_list"}).limit(4).collect()
    for user, items in per_user:
        status, body = call(
            f"{base}/v1/rank",
            {"user_id": int(user), "surface": "home", "candidates": [*items, 4_000_000_000],
             "k": 20},
        )  # fmt: skip
        assert status == 200
        assert body["fallback"] is False
    status, body = call(f"{base}/v1/rank", {"user_id": 1, "surface": "home"})  # no candidates
    assert body["fallback"] is True
    assert logged_answers(base, len(per_user) + 1) >= len(per_user) + 1
    today = datetime.now(UTC).date()
    drained = run_drain_served(spark, lake, today)
    assert drained["quarantined"] == 0
    assert drained["rows"] >= len(per_user) + 1
    report = run_check_skew(spark, lake, today)
    assert report["sampled"] >= len(per_user)
    assert report["replayed"] == report["sampled"]
    assert report["unreplayable"] == 0
    assert report["model_versions"] == [model_version]
    assert report["rows"] >= sum(len(items) for _, items in per_user) - 4 * len(per_user)
    assert report["score_parity"] == 1.0
    assert report["topk_parity"] == 1.0
    assert report["mismatched_features"] == []
    assert set(report["features"]) == set(MODEL_FEATURES)
    assert all(f["smape"] == 0.0 for f in report["features"].values())
    # a retry of the drain rewrites the same rows
    assert run_drain_served(spark, lake, today)["rows"] == drained["rows"]

    admin = redis.Redis.from_url(redis_admin_url)
    user, items = per_user[0]
    prefix = lake.redis.key_prefix
    key = feature_key(prefix, version_pointers(admin, prefix, FEATURES)[0], "u", int(user))
    original = admin.get(key)
    vector = np.frombuffer(original, "<f4").copy()
    changed = USER_FEATURES.index("user_clicks_28d")
    vector[changed] += 1.0
    admin.set(key, vector.tobytes())
    try:
        status, _ = call(
            f"{base}/v1/rank", {"user_id": int(user), "surface": "home", "candidates": items}
        )
        assert status == 200
        assert logged_answers(base, drained["rows"] + 1) > drained["rows"]
    finally:
        admin.set(key, original)
        admin.close()
    run_drain_served(spark, lake, today)
    skewed = run_check_skew(spark, lake, today)
    assert skewed["mismatched_features"] == ["user_clicks_28d"]
    rate = skewed["features"]["user_clicks_28d"]["mismatch_rate"]
    assert rate == pytest.approx(len(items) / skewed["rows"], rel=0.2)
    assert skewed["features"]["user_clicks_28d"]["smape"] > 0

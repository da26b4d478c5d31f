"""materialise_features on the tiny marketplace: Redis and the snapshot equal Delta, or no switch.

Real Spark with Delta, real Redis: the step writes a feature version, the audit reads it back
with the decoders the ranking service uses, and a corrupted vector or snapshot row blocks it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from rankflow.config import Settings
from rankflow.features.registry import AFFINITY_DIMENSIONS, ITEM_FEATURES, USER_FEATURES
from tiny_lake import TINY_DAY

pytestmark = [pytest.mark.spark, pytest.mark.services]


def current_features(client: Any, settings: Settings) -> str | None:
    from rankflow.store.keys import FEATURES
    from rankflow.store.versions import version_pointers

    return version_pointers(client, settings.redis.key_prefix, FEATURES)[0]


def test_the_features_of_the_day_become_the_current_audited_version(
    spark: Any, lake: Settings, feature_versions: dict[str, int], redis_client: Any
) -> None:
    from rankflow.lake.tables import read_partition
    from rankflow.serving.snapshot import load_snapshot
    from rankflow.steps.materialise_features import run_materialise_features
    from rankflow.store.keys import feature_key, item_bucket_key, schema_key
    from rankflow.store.vectors import decode_user, decode_vector, item_buckets

    record = run_materialise_features(spark, lake, TINY_DAY, "run-1")
    version = record["version"]
    assert record["status"] == "switched"
    assert current_features(redis_client, lake) == version
    users = read_partition(spark, lake, "silver/user_features", TINY_DAY).toPandas()
    items = read_partition(spark, lake, "silver/item_features", TINY_DAY).toPandas()
    assert record["entities"]["u"] == record["entities"]["p"] == len(users)
    assert record["entities"]["i"] == len(items)
    seen = read_partition(spark, lake, "silver/seen_pairs", TINY_DAY).toPandas()
    assert record["entities"]["h"] == seen.user_id.nunique()
    # fewer than the sample size: every entity was audited
    assert record["audited"] == {"users": len(users), "items": len(items)}
    row = users.iloc[len(users) // 2]
    stored = redis_client.get(feature_key(lake.redis.key_prefix, version, "u", int(row.user_id)))
    expected = row[USER_FEATURES].to_numpy(dtype="float64").astype("float32")
    vector, profile = decode_user(stored, len(USER_FEATURES), AFFINITY_DIMENSIONS)
    assert np.array_equal(vector, expected, equal_nan=True)
    # the profile follows the vector in the same value (codes into the version's vocabulary)
    vocabulary = json.loads(redis_client.get(schema_key(lake.redis.key_prefix, version)))
    categories = [vocabulary["vocabulary"][c] for c in profile.codes["category"].tolist()]
    assert categories == sorted(dict(row.category_affinity or {}))
    # item vectors share hash buckets, compact listpacks, as readers find them from the schema
    schema = json.loads(redis_client.get(schema_key(lake.redis.key_prefix, version)))
    assert record["item_buckets"] == schema["item_buckets"] == item_buckets(len(items))
    assert record["item_bucket_encoding"] == "listpack"
    item = items.iloc[len(items) // 3]
    key = item_bucket_key(lake.redis.key_prefix, version, int(item.item_id), record["item_buckets"])
    stored_item = redis_client.hget(key, str(int(item.item_id)))
    expected_item = item[ITEM_FEATURES].to_numpy(dtype="float64").astype("float32")
    assert np.array_equal(
        decode_vector(stored_item, len(ITEM_FEATURES)), expected_item, equal_nan=True
    )
    assert set(record["phase_seconds"]) >= {
        "read_and_count",
        "snapshot",
        "write",
        "audit",
        "commit",
    }
    snapshot = load_snapshot(record["snapshot"])
    assert snapshot.version == version
    assert snapshot.item_ids.tolist() == sorted(items["item_id"])
    assert snapshot.vectors.shape == (len(items), len(ITEM_FEATURES))
    # a retry of the same run finds the version published and changes nothing
    again = run_materialise_features(spark, lake, TINY_DAY, "run-1")
    assert again["version"] == version
    assert again["resumed"] is True
    assert again["status"] == "switched"


@pytest.mark.parametrize("corrupt", ["redis vector", "snapshot row"])
def test_a_corrupted_value_blocks_the_switch_and_the_version_is_deleted(
    spark: Any,
    lake: Settings,
    feature_versions: dict[str, int],
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    corrupt: str,
) -> None:
    import pyarrow as pa

    from rankflow.publish import features
    from rankflow.publish.feature_audit import FeatureAuditError
    from rankflow.steps.materialise_features import run_materialise_features
    from rankflow.store.keys import item_bucket_key, schema_key

    before = run_materialise_features(spark, lake, TINY_DAY, "run-good")["version"]
    real_audit = features.audit

    def corrupting_audit(spark: Any, settings: Settings, frames: Any, expected: Any,
                         version: str, snapshot: str, *args: Any) -> dict[str, int]:  # fmt: skip
        if corrupt == "redis vector":
            item = int(frames.items.select("item_id").first()[0])
            buckets = json.loads(redis_client.get(schema_key(settings.redis.key_prefix, version)))
            key = item_bucket_key(settings.redis.key_prefix, version, item, buckets["item_buckets"])
            value = bytearray(redis_client.hget(key, str(item)))
            value[0] ^= 1  # one bit of the first feature
            redis_client.hset(key, str(item), bytes(value))
        else:
            with pa.OSFile(snapshot, "rb") as source:
                table = pa.ipc.open_file(source).read_all()
            prices = table.column("item_price").to_pylist()
            prices[len(prices) // 2] += 1.0
            index = table.schema.get_field_index("item_price")
            table = table.set_column(index, "item_price", pa.array(prices, pa.float32()))
            with pa.OSFile(snapshot, "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
                out.write_table(table)
        return real_audit(spark, settings, frames, expected, version, snapshot, *args)

    monkeypatch.setattr(features, "audit", corrupting_audit)
    with pytest.raises(FeatureAuditError, match="differ from the Delta commit"):
        run_materialise_features(spark, lake, TINY_DAY, "run-corrupt")
    assert current_features(redis_client, lake) == before
    prefix = lake.redis.key_prefix
    leftovers = [
        k for k in redis_client.scan_iter(f"{prefix}:features:v:*") if before.encode() not in k
    ]
    assert leftovers == []


def test_users_whose_seen_pairs_span_files_block_the_switch(
    spark: Any,
    lake: Settings,
    feature_versions: dict[str, int],
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rankflow.lake import tables
    from rankflow.steps.materialise_features import run_materialise_features
    from rankflow.store.errors import VersionCheckError

    before = run_materialise_features(spark, lake, TINY_DAY, "run-whole")["version"]
    real_files = tables.feature_files

    def a_file_twice(settings: Settings, face: str, *args: Any) -> list[Any]:
        files = real_files(settings, face, *args)
        return files + files[:1] if face == "seen" else files  # its users are in two files

    monkeypatch.setattr(tables, "feature_files", a_file_twice)
    with pytest.raises(VersionCheckError, match="pairs span files"):
        run_materialise_features(spark, lake, TINY_DAY, "run-split")
    assert current_features(redis_client, lake) == before

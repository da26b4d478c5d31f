"""Item vectors in hash buckets: written in bulk, read by HGET, counted field by field."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pytest
import redis

from rankflow.store.errors import VersionCheckError
from rankflow.store.keys import (
    FEATURES,
    feature_key_pattern,
    item_bucket_key,
    item_bucket_pattern,
    new_version_id,
)
from rankflow.store.memory import discard_version
from rankflow.store.vectors import decode_vector, item_buckets
from rankflow.store.versions import check_written
from rankflow.store.writer import begin_version, write_buckets

pytestmark = pytest.mark.services
PREFIX = "rf"  # the writer user may write rf:* only


def vectors(ids: np.ndarray, width: int = 19) -> pa.RecordBatch:
    """One float32 vector per id (its id in every feature, NaN in the last), as writers send."""
    matrix = np.repeat(ids.astype("<f4")[:, None], width, axis=1)
    matrix[:, -1] = np.nan
    offsets = np.arange(len(ids) + 1, dtype=np.int64) * 4 * width
    values = pa.Array.from_buffers(
        pa.large_binary(), len(ids), [None, pa.py_buffer(offsets), pa.py_buffer(matrix.tobytes())]
    )
    return pa.RecordBatch.from_arrays([pa.array(ids), values], names=["user_id", "value"])


def test_buckets_hold_every_vector_once_and_stay_listpacks(
    redis_client: redis.Redis, redis_url: str
) -> None:
    rng = np.random.default_rng(3)
    ids = rng.choice(np.arange(1_000_000_000, 1_000_100_000), 1000, replace=False)
    buckets = item_buckets(len(ids))
    version = new_version_id(date(2026, 12, 4))
    begin_version(redis_client, PREFIX, FEATURES, version, ds=date(2026, 12, 4))
    first, second = ids[:600], ids[600:]
    # two parts (Spark partitions) share buckets; a retried part writes the same fields again
    for part, chunk in (("i-0", first), ("i-1", second), ("i-1", second)):
        stats = write_buckets(
            redis_url, PREFIX, FEATURES, version, [vectors(chunk)], buckets, part=part, group="i"
        )
        assert stats.users == len(chunk)
    for item in ids[::97]:
        value = redis_client.hget(item_bucket_key(PREFIX, version, int(item), buckets), str(item))
        decoded = decode_vector(value, 19)
        assert decoded[0] == np.float32(item)
        assert np.isnan(decoded[-1])
    keys = list(redis_client.scan_iter(item_bucket_pattern(PREFIX, version)))
    assert len(keys) == buckets
    assert {redis_client.object("encoding", k) for k in keys} == {b"listpack"}
    assert sum(redis_client.hlen(k) for k in keys) == len(ids)

    patterns = (feature_key_pattern(PREFIX, version), item_bucket_pattern(PREFIX, version))
    check_written(redis_client, PREFIX, FEATURES, version, len(ids), None, *patterns)
    redis_client.hdel(item_bucket_key(PREFIX, version, int(ids[5]), buckets), str(ids[5]))
    with pytest.raises(VersionCheckError, match="has 999 user keys"):
        check_written(redis_client, PREFIX, FEATURES, version, len(ids), None, *patterns)
    discard_version(redis_client, PREFIX, FEATURES, version)

"""S3 exports against the real local S3 endpoint: parts, manifest last, pointer, backfills."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from datetime import date

import pytest

from rankflow.publish.s3 import export_rankings, pointer_key, s3_client

pytestmark = [pytest.mark.spark, pytest.mark.services]


@pytest.fixture
def s3(settings):
    # a bucket of its own per run: the local endpoint keeps objects until `make down`, and
    # a second run would find this test's pointer and complete exports already there
    return replace(settings.s3, bucket=f"{settings.s3.bucket[:40]}-{uuid.uuid4().hex[:8]}-s3")


def ranked_frame(spark, users: int, fail_user: int | None = None):
    from pyspark.sql import functions as F

    frame = spark.range(1, users + 1, numPartitions=3).select(
        F.col("id").alias("user_id"),
        F.array(F.col("id") * 10, F.col("id") * 10 + 1).alias("item_ids"),
        F.array(F.lit(0.9).cast("float"), F.lit(0.1).cast("float")).alias("scores"),
    )
    if fail_user is not None:
        boom = F.udf(lambda u: 1 // (u - fail_user), "long")
        frame = frame.withColumn("user_id", F.col("user_id") + 0 * boom("user_id"))
    return frame


def body(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_export_writes_parts_then_manifest_then_pointer(spark, s3) -> None:
    result = export_rankings(
        ranked_frame(spark, 50), s3, "home", date(2026, 10, 5), "v1", {"model_version": "3"}
    )
    client = s3_client(s3)
    manifest = json.loads(body(client, s3.bucket, result.manifest_key))
    assert manifest["users"] == 50
    assert manifest["model_version"] == "3"
    assert manifest["schema_version"] == 1
    for part in manifest["parts"]:
        data = body(client, s3.bucket, part["key"])
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
        assert len(data) == part["bytes"]
    pointer = json.loads(body(client, s3.bucket, pointer_key(s3, "home")))
    assert pointer == {"ds": "2026-10-05", "version": "v1", "manifest": result.manifest_key}


def test_backfill_of_an_older_day_does_not_move_the_pointer(spark, s3) -> None:
    newer = export_rankings(ranked_frame(spark, 5), s3, "home", date(2026, 10, 5), "v2", {})
    older = export_rankings(ranked_frame(spark, 5), s3, "home", date(2026, 10, 1), "v0", {})
    assert newer.pointer_updated
    assert not older.pointer_updated
    pointer = json.loads(body(s3_client(s3), s3.bucket, pointer_key(s3, "home")))
    assert pointer["version"] == "v2"


def test_a_failed_export_leaves_no_manifest_and_the_pointer_alone(spark, s3) -> None:
    export_rankings(ranked_frame(spark, 5), s3, "home", date(2026, 10, 5), "good", {})
    with pytest.raises(Exception, match=r"division by zero|ZeroDivisionError"):
        export_rankings(
            ranked_frame(spark, 30, fail_user=17), s3, "home", date(2026, 10, 6), "bad", {}
        )
    client = s3_client(s3)
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix="rankings/home/ds=2026-10-06/bad/")
    keys = [obj["Key"] for obj in listed.get("Contents", [])]
    assert not any(key.endswith("_manifest.json") for key in keys)
    pointer = json.loads(body(client, s3.bucket, pointer_key(s3, "home")))
    assert pointer["version"] == "good"


def test_a_retry_keeps_a_complete_export_and_points_at_it(spark, s3) -> None:
    day = date(2026, 10, 7)
    first = export_rankings(ranked_frame(spark, 40), s3, "home", day, "same", {})
    # the first attempt died after its manifest and pointer, before the step recorded them
    again = export_rankings(ranked_frame(spark, 4).coalesce(1), s3, "home", day, "same", {})
    assert (again.resumed, again.users, again.parts) == (True, 40, first.parts)
    assert again.pointer_updated
    client = s3_client(s3)
    pointer = json.loads(body(client, s3.bucket, pointer_key(s3, "home")))
    assert pointer["manifest"] == first.manifest_key
    manifest = json.loads(body(client, s3.bucket, first.manifest_key))
    for part in manifest["parts"]:  # nothing the pointer leads to was deleted or rewritten
        assert hashlib.sha256(body(client, s3.bucket, part["key"])).hexdigest() == part["sha256"]


def test_a_retry_after_a_death_before_the_manifest_replaces_the_parts(spark, s3) -> None:
    day = date(2026, 10, 8)
    with pytest.raises(Exception, match=r"division by zero|ZeroDivisionError"):
        export_rankings(ranked_frame(spark, 30, fail_user=17), s3, "home", day, "v", {})
    again = export_rankings(ranked_frame(spark, 4).coalesce(1), s3, "home", day, "v", {})
    client = s3_client(s3)
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=again.prefix)
    parts = [o["Key"] for o in listed["Contents"] if o["Key"].endswith(".parquet")]
    assert (again.resumed, again.users, len(parts)) == (False, 4, 1)


def test_an_older_export_racing_a_newer_one_never_moves_the_pointer_back(s3) -> None:
    """Between the older export's read of the pointer and its write, a newer day moves it."""
    from rankflow.publish.s3 import ensure_bucket, update_pointer

    client = s3_client(s3)
    ensure_bucket(client, s3.bucket)
    key = pointer_key(s3, "home")
    old = {"ds": "2026-10-01", "version": "v1", "manifest": "m1"}
    assert update_pointer(client, s3, "home", date(2026, 10, 1), old)
    newer = {"ds": "2026-10-05", "version": "v5", "manifest": "m5"}
    real_get = client.get_object
    raced = {"done": False}

    def get_then_race(**kwargs):
        reply = real_get(**kwargs)
        if not raced["done"]:  # the newer export lands right after our read
            raced["done"] = True
            client.put_object(Bucket=s3.bucket, Key=key, Body=json.dumps(newer).encode())
        return reply

    client.get_object = get_then_race
    backfill = {"ds": "2026-10-03", "version": "v3", "manifest": "m3"}
    assert not update_pointer(client, s3, "home", date(2026, 10, 3), backfill)
    client.get_object = real_get
    assert json.loads(body(client, s3.bucket, key)) == newer

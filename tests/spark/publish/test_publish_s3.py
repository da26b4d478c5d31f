"""S3 exports against the real local S3 endpoint: parts, manifest last, pointer, backfills."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import date

import pytest

from rankflow.publish.s3 import export_rankings, pointer_key, s3_client

pytestmark = [pytest.mark.spark, pytest.mark.services]


@pytest.fixture
def s3(settings):
    return replace(settings.s3, bucket=settings.s3.bucket[:50] + "-s3")


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


def test_a_retry_replaces_the_export_folder(spark, s3) -> None:
    day = date(2026, 10, 7)
    export_rankings(ranked_frame(spark, 40), s3, "home", day, "same", {})
    again = export_rankings(ranked_frame(spark, 4).coalesce(1), s3, "home", day, "same", {})
    client = s3_client(s3)
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=again.prefix)
    parts = [o["Key"] for o in listed["Contents"] if o["Key"].endswith(".parquet")]
    assert len(parts) == again.parts == 1
    assert json.loads(body(client, s3.bucket, again.manifest_key))["users"] == 4

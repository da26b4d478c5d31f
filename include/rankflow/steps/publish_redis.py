"""Step ``publish_redis``: publish the gold lists of ``ds`` as a new Redis version and switch."""

from __future__ import annotations

import argparse
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.lake.ledger import record_event
from rankflow.store.client import checked_client
from rankflow.store.keys import publication_version

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_publish_redis(
    spark: SparkSession, settings: Settings, ds: date, surface: str, run_id: str
) -> dict[str, Any]:
    """Write the gold lists of ``ds`` as a new Redis version, check it, switch readers to it."""
    from rankflow.lake.gold import GoldSnapshot, check_unchanged
    from rankflow.publish.redis import publish_snapshot, sample_user
    from rankflow.runs import read_run_record, write_run_record
    from rankflow.store.errors import VersionNotWritableError
    from rankflow.store.versions import bytes_per_user, expire_old_versions, version_pointers

    scored = read_run_record(settings, ds, f"score-{surface}")
    snapshot = GoldSnapshot.from_record(scored["gold"])
    check_unchanged(snapshot, ds, surface)
    version = publication_version(scored, run_id)
    prefix = settings.redis.key_prefix
    client = checked_client(settings.redis.url, "Nothing was published.")
    started = time.monotonic()
    try:
        published = publish_snapshot(
            spark,
            client,
            settings.redis.url,
            snapshot,
            prefix=prefix,
            surface=surface,
            version=version,
            ds=ds,
            model_version=str(scored["model_version"]),
            k=int(scored["top_k"]),
            fallback=scored["fallback"],
            mset_batch=settings.redis.mset_batch,
        )
    except VersionNotWritableError:
        if version_pointers(client, prefix, surface)[0] != version:
            raise
        return read_run_record(settings, ds, f"publish-redis-{surface}")  # a retry after success
    expired = expire_old_versions(
        client, prefix, surface, ttl_seconds=settings.redis.old_version_ttl_seconds
    )
    record = {
        "ds": ds.isoformat(),
        "surface": surface,
        "version": version,
        "status": published.result.status,
        "reason": published.result.reason,
        "users": published.users,
        "value_bytes": published.value_bytes,
        "gold_files": published.files,
        "bytes_per_user": bytes_per_user(client, prefix, surface, version),
        "expired_versions": expired.versions,
        "sample_user": sample_user(snapshot),
        "model_version": scored["model_version"],
        "seconds": round(time.monotonic() - started, 3),
    }
    write_run_record(settings, ds, f"publish-redis-{surface}", record)
    if published.result.status == "switched":
        record_event(
            spark,
            settings,
            "publish_redis",
            ds=ds,
            surface=surface,
            model_version=str(scored["model_version"]),
            airflow_run_id=run_id,
            redis_version=version,
            gold_version=snapshot.commit,
            reason=published.result.reason or None,
        )
    return record


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``publish_redis`` step for a job's parsed arguments (``jobs/publish_redis.py``)."""
    return run_publish_redis(
        spark, settings, args.ds, args.surface or settings.default_surface, args.run_id
    )

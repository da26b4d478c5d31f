"""Step ``publish_redis``: publish the gold lists of ``ds`` as a new Redis version and switch."""

from __future__ import annotations

import argparse
import logging
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.lake.gold import GoldSnapshot, check_unchanged
from rankflow.lake.ledger import record_event
from rankflow.publish.redis import publish_snapshot, sample_user
from rankflow.runs import read_run_record, write_run_record
from rankflow.store.client import checked_client
from rankflow.store.keys import publication_version
from rankflow.store.versions import (
    bytes_per_user,
    earlier_outcome,
    expire_old_versions,
    user_bucket_encoding,
    version_meta,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_publish_redis(
    spark: SparkSession, settings: Settings, ds: date, surface: str, run_id: str
) -> dict[str, Any]:
    """Write the gold lists of ``ds`` as a new Redis version, check it, switch readers to it.

    Safe to retry after a crash at any point: what an earlier attempt decided is read back from
    Redis (:func:`~rankflow.store.versions.earlier_outcome`), and the finishing work (expiry of
    old versions, the ledger event, the run record) is redone, each part idempotent, so a
    publication reaches the ledger exactly once and "already done" is a success.
    """
    scored = read_run_record(settings, ds, f"score-{surface}")
    snapshot = GoldSnapshot.from_record(scored["gold"])
    check_unchanged(snapshot, ds, surface)
    version = publication_version(scored, run_id)
    prefix = settings.redis.key_prefix
    client = checked_client(settings.redis.url, "Nothing was published.")
    started = time.monotonic()
    result = earlier_outcome(client, prefix, surface, version)
    resumed = result is not None
    if result is None:
        result = publish_snapshot(
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
            abandoned_after_seconds=settings.redis.abandoned_after_seconds,
        ).result
    meta = version_meta(client, prefix, surface, version)
    expired = expire_old_versions(
        client, prefix, surface, ttl_seconds=settings.redis.old_version_ttl_seconds
    )
    if result.status == "switched":
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
        )
    user = sample_user(snapshot)
    bucket_encoding = user_bucket_encoding(client, prefix, surface, version, user)
    if bucket_encoding not in ("", "listpack"):
        log.warning(
            "the lists' hash buckets are %s-encoded, about twice the memory of a listpack: set "
            "Redis's hash-max-listpack-value to at least 4 x K bytes (docs/redis-layout.md)",
            bucket_encoding,
        )
    record = {
        "ds": ds.isoformat(),
        "surface": surface,
        "version": version,
        "status": result.status,
        "reason": result.reason,
        "resumed": resumed,
        "users": snapshot.users,
        "value_bytes": int(meta.get("value_bytes") or 0),
        "gold_files": int(meta.get("gold_files") or len(snapshot.files)),
        "bytes_per_user": bytes_per_user(client, prefix, surface, version),
        "user_buckets": int(meta.get("user_buckets") or 0),
        "user_bucket_encoding": bucket_encoding,
        "expired_versions": expired.versions,
        "sample_user": user,
        "model_version": scored["model_version"],
        "seconds": round(time.monotonic() - started, 3),
    }
    write_run_record(settings, ds, f"publish-redis-{surface}", record)
    return record


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``publish_redis`` step for a job's parsed arguments (``jobs/publish_redis.py``)."""
    return run_publish_redis(
        spark, settings, args.ds, args.surface or settings.default_surface, args.run_id
    )

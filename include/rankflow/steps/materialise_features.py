"""Step ``materialise_features``: the features of ``ds`` as a new online feature version."""

from __future__ import annotations

import argparse
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.runs import read_run_record, write_run_record

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_materialise_features(
    spark: SparkSession, settings: Settings, ds: date, run_id: str
) -> dict[str, Any]:
    """Publish the Delta commit the features step wrote to Redis and the item snapshot, audited.

    Safe to retry: the version id names the run and the commits, and what an earlier attempt
    decided is read back from Redis.
    """
    from dataclasses import asdict

    from rankflow.publish.features import FeatureCommit, materialise
    from rankflow.store.client import checked_client
    from rankflow.store.keys import FEATURES, new_version_id
    from rankflow.store.versions import earlier_outcome, expire_old_versions, version_meta

    features = read_run_record(settings, ds, "features")
    commit = FeatureCommit(ds, {k: int(v) for k, v in features["delta_versions"].items()})
    commits = ",".join(f"{k}={v}" for k, v in sorted(commit.versions.items()))
    version = new_version_id(ds, f"{run_id}|features|{commits}")
    prefix = settings.redis.key_prefix
    client = checked_client(settings.redis.url, "No features were materialised.")
    started = time.monotonic()
    earlier = earlier_outcome(client, prefix, FEATURES, version)
    online = settings.pipeline["online"]
    record: dict[str, Any] = {"ds": ds.isoformat(), "version": version, "resumed": bool(earlier)}
    if earlier is None:
        done = materialise(
            spark,
            settings,
            commit,
            version,
            int(online["audit_sample"]),
            int(online["audit_seed"]),
        )
        record |= asdict(done)
    else:
        record |= {"status": earlier.status, "reason": earlier.reason}
        record["meta"] = version_meta(client, prefix, FEATURES, version)
    expired = expire_old_versions(
        client, prefix, FEATURES, ttl_seconds=settings.redis.old_version_ttl_seconds
    )
    record |= {
        "expired_versions": expired.versions,
        "seconds": round(time.monotonic() - started, 3),
    }
    write_run_record(settings, ds, "materialise-features", record)
    return record


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``materialise_features`` step (``jobs/materialise_features.py``)."""
    return run_materialise_features(spark, settings, args.ds, args.run_id)

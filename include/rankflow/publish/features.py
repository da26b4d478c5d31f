"""Materialise the batch features of one Delta commit: Redis vectors and an item snapshot file.

The features step's three tables, read at the versions it wrote, become one feature version:
item and user vectors, user profiles (affinities) and histories in Redis, written by Spark
tasks beside the current version, and an Arrow file of the items for the ranking service's
in-process copy. An audit then reads a hash sample back and compares it with the Delta rows at
float32; only a version that matches exactly is switched to (``docs/feature-store.md``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rankflow.features.on_demand import ITEM_ATTRIBUTES
from rankflow.features.registry import (
    AFFINITY_DIMENSIONS,
    ITEM_FEATURES,
    USER_FEATURES,
    schema_hash,
)
from rankflow.publish.feature_audit import audit
from rankflow.publish.feature_files import (
    deal_units,
    make_feature_writer,
    vocabulary,
    write_feature_files,
    write_units,
)
from rankflow.store.vectors import FEATURE_ENCODING, GROUPS, KEY_GROUPS, item_buckets

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from rankflow.config import Settings
    from rankflow.features.listings import ListingContext
    from rankflow.lake.tables import DataFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureCommit:
    """The Delta versions of the feature tables the features step wrote for ``ds``."""

    ds: date
    versions: dict[str, int]  # face (items, users, seen) -> Delta version

    def as_source(self) -> dict[str, str]:
        """The feature version's meta fields naming where its values come from."""
        return {f"delta_version.{face}": str(v) for face, v in sorted(self.versions.items())}


# --------------------------------------------------------------------------- the publication


@dataclass(frozen=True)
class Materialised:
    """What one materialisation wrote, what its audit compared, and the switch."""

    version: str
    entities: dict[str, int]  # group -> entities written (profiles: in the users' values)
    value_bytes: int
    snapshot: str
    snapshot_bytes: int
    audited: dict[str, int]
    status: str
    reason: str
    item_buckets: int = 0
    item_bucket_encoding: str = ""  # Redis's encoding of a bucket: listpack unless misconfigured
    phase_seconds: dict[str, float] = field(default_factory=dict)  # where the time goes


def snapshot_location(settings: Settings, version: str) -> str:
    """Where a feature version's item snapshot lives (beside the lake, so executors reach it)."""
    return settings.paths.table(f"online/feature_versions/{version}/items.arrow")


def schema_document(vocabulary: list[str], snapshot: str, item_buckets: int) -> dict[str, Any]:
    """The schema a feature version's readers decode its values with (stored in Redis)."""
    return {
        "schema_hash": schema_hash(),
        "encoding": FEATURE_ENCODING,
        # item vectors: HGET {version}:i:{item_id mod buckets} {item_id}
        "item_buckets": item_buckets,
        "groups": {
            GROUPS["user"]: USER_FEATURES,
            GROUPS["item"]: ITEM_FEATURES,
            # the profile follows the vector in a user's ``u`` value
            GROUPS["profile"]: {"affinity_dimensions": list(AFFINITY_DIMENSIONS)},
            GROUPS["history"]: ["item_id", "seen_before", "clicked_before"],
        },
        "vocabulary": vocabulary,
        "snapshot": snapshot,
    }


def materialise(
    spark: SparkSession,
    settings: Settings,
    commit: FeatureCommit,
    version: str,
    audit_sample: int,
    audit_seed: int,
) -> Materialised:
    """Write the feature version, audit it, and switch readers to it; a failure deletes it.

    Raises:
        FeatureAuditError: a sampled value differs from Delta; readers keep the old version.
        VersionCheckError: writers' acknowledgements or counts differ; nothing switched.
    """
    import contextlib
    import time

    from rankflow.lake.session import task_slots
    from rankflow.lake.tables import feature_files, read_features
    from rankflow.publish.redis import cleanup_errors
    from rankflow.serving.snapshot import snapshot_table, write_snapshot
    from rankflow.store.client import checked_client
    from rankflow.store.keys import FEATURES, feature_key_pattern, item_bucket_pattern, schema_key
    from rankflow.store.memory import discard_version, reclaim_abandoned
    from rankflow.store.versions import commit_version
    from rankflow.store.writer import begin_version

    prefix, url = settings.redis.key_prefix, settings.redis.url
    seconds: dict[str, float] = {}
    clock = [time.monotonic()]

    def lap(phase: str) -> None:
        now = time.monotonic()
        seconds[phase] = round(now - clock[0], 3)
        clock[0] = now

    client = checked_client(url, "No features were materialised.")
    reclaim_abandoned(
        client,
        prefix,
        FEATURES,
        keep=version,
        older_than_seconds=settings.redis.abandoned_after_seconds,
    )
    frames = read_features(spark, settings, commit.ds, commit.versions)
    files = {
        face: feature_files(settings, face, commit.ds, delta_version)
        for face, delta_version in commit.versions.items()
    }
    vocab = vocabulary(spark, files, task_slots(spark))
    users, items = (sum(f.rows for f in files[face]) for face in ("users", "items"))
    expected = {GROUPS["item"]: items, GROUPS["user"]: users}
    # each seen file's writer counts its users: the sum equals this only if no user's pairs
    # span two files (a file holds whole users, see rankflow.features.batch.seen_pairs)
    expected[GROUPS["history"]] = frames.seen.select("user_id").distinct().count()
    buckets = item_buckets(items)
    lap("read_and_count")
    location = snapshot_location(settings, version)
    source = {**commit.as_source(), "schema_hash": schema_hash(), "snapshot": location}
    begin_version(
        client, prefix, FEATURES, version, ds=commit.ds, source=source, encoding=FEATURE_ENCODING
    )
    try:
        schema = schema_document(vocab, location, buckets)
        client.set(schema_key(prefix, version), json.dumps(schema))
        origin = {"ds": commit.ds.isoformat(), "delta_versions": commit.versions}
        items_read = read_items(files["items"])
        table = snapshot_table(
            items_read,
            ITEM_FEATURES,
            ITEM_ATTRIBUTES,
            vocab,
            version,
            schema_hash(),
            origin,
            listing_context(items_read, commit.ds, settings),
        )
        snapshot_bytes = write_snapshot(table, location)
        lap("snapshot")
        tasks = deal_units(write_units(files), task_slots(spark))
        writer = make_feature_writer(
            url, prefix, version, tasks, vocab, buckets, settings.redis.mset_batch
        )
        acks = write_feature_files(spark, tasks, writer)
        lap("write")
        encoding = bucket_encoding(client, prefix, version, table, buckets)
        written = written_entities(acks)
        if written[GROUPS["history"]] > expected[GROUPS["history"]]:
            from rankflow.store.errors import VersionCheckError

            raise VersionCheckError(
                f"feature version {version}: the seen files hold {written[GROUPS['history']]} "
                f"per-file histories for {expected[GROUPS['history']]} users, so some users' "
                "pairs span files (written before seen pairs were partitioned by user?): "
                f"re-run the features step for {commit.ds}; not switching"
            )
        if written != expected:
            from rankflow.store.errors import VersionCheckError

            raise VersionCheckError(
                f"feature version {version}: writers wrote {written} entities per group, the "
                f"Delta commit holds {expected}; not switching"
            )
        audited = audit(
            spark, settings, frames, expected, version, location, audit_sample, audit_seed
        )
        lap("audit")
        result = commit_version(
            client,
            prefix,
            FEATURES,
            version,
            sum(written.values()),  # keys, and item vectors in buckets
            expected_parts={part: n for part, (n, _) in acks.items()},
            required_key=schema_key(prefix, version),
            key_pattern=feature_key_pattern(prefix, version),
            bucket_pattern=item_bucket_pattern(prefix, version),
        )
    except Exception:
        with contextlib.suppress(*cleanup_errors()):
            discard_version(client, prefix, FEATURES, version)
        raise
    lap("commit")
    return Materialised(
        version=version,
        entities={**written, GROUPS["profile"]: written[GROUPS["user"]]},  # in the user's value
        value_bytes=sum(b for _, b in acks.values()),
        snapshot=location,
        snapshot_bytes=snapshot_bytes,
        audited=audited,
        status=result.status,
        reason=result.reason,
        item_buckets=buckets,
        item_bucket_encoding=encoding,
        phase_seconds=seconds,
    )


def listing_context(items: pa.Table, ds: date, settings: Settings) -> ListingContext:
    """What live listings' features need of the day's catalogue (kept in the snapshot)."""
    from rankflow.features.listings import context_of_items

    day_end = datetime.combine(ds + timedelta(days=1), datetime.min.time(), UTC)
    weight = float(settings.pipeline["features"]["ctr_prior_weight"])
    return context_of_items(items, int(day_end.timestamp() * 1000), weight)


def read_items(files: list[DataFile]) -> pa.Table:
    """The item rows the snapshot is built from, read from the commit's files with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rankflow.lake.delta_log import arrow_filesystem

    columns = ["item_id", *ITEM_FEATURES, *ITEM_ATTRIBUTES, "is_sold"]
    tables = []
    for file in files:
        fs, path = arrow_filesystem(file.location)
        tables.append(pq.read_table(path, columns=columns, filesystem=fs))
    if not tables:
        return pa.table({name: pa.array([], pa.float64()) for name in columns})
    return pa.concat_tables(tables)


def bucket_encoding(client: Any, prefix: str, version: str, items: pa.Table, buckets: int) -> str:
    """Redis's encoding of an item bucket, with a warning unless it is a compact listpack."""
    from rankflow.store.commands import _text
    from rankflow.store.keys import item_bucket_key

    if not items.num_rows:
        return ""
    first = int(items.column("item_id")[0].as_py())
    encoding = _text(client.object("encoding", item_bucket_key(prefix, version, first, buckets)))
    if encoding not in ("listpack", "ziplist", None):
        log.warning(
            "item buckets are %s-encoded, several times larger than a listpack: set Redis's "
            "hash-max-listpack-value to at least %d (docs/feature-store.md)",
            encoding,
            4 * len(ITEM_FEATURES),
        )
    return encoding or ""


def written_entities(acks: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Entities per key group the writers acknowledged (parts are ``<group>-<partition>``)."""
    totals = dict.fromkeys(KEY_GROUPS, 0)
    for part, (entities, _) in acks.items():
        group = part.split("-", 1)[0]
        totals[group] = totals.get(group, 0) + entities
    return totals

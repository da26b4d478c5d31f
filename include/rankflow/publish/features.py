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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from rankflow.features.on_demand import ITEM_ATTRIBUTES, MAP_COLUMNS, map_entries
from rankflow.features.registry import (
    AFFINITY_DIMENSIONS,
    ITEM_FEATURES,
    USER_FEATURES,
    schema_hash,
)
from rankflow.publish.feature_audit import audit
from rankflow.store.vectors import (
    FEATURE_ENCODING,
    GROUPS,
    NO_CODE,
    item_buckets,
    pack_rows,
    within_row_index,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from rankflow.config import Settings
    from rankflow.features.batch import FeatureFrames

log = logging.getLogger(__name__)
ACK_SCHEMA = "part string, entities long, bytes long"


@dataclass(frozen=True)
class FeatureCommit:
    """The Delta versions of the feature tables the features step wrote for ``ds``."""

    ds: date
    versions: dict[str, int]  # face (items, users, seen) -> Delta version

    def as_source(self) -> dict[str, str]:
        """The feature version's meta fields naming where its values come from."""
        return {f"delta_version.{face}": str(v) for face, v in sorted(self.versions.items())}


def vocabulary(frames: FeatureFrames) -> list[str]:
    """Every attribute value items, affinities and declared sizes use, sorted (code = index)."""
    from pyspark.sql import functions as F

    values = [frames.items.select(F.col(d).alias("value")) for d in ITEM_ATTRIBUTES]
    values.append(frames.users.select(F.col("declared_size").alias("value")))
    values += [
        frames.users.select(F.explode(F.map_keys(F.col(m))).alias("value")) for m in MAP_COLUMNS
    ]
    union = values[0]
    for more in values[1:]:
        union = union.unionByName(more)
    rows = union.where(F.col("value").isNotNull()).distinct().collect()
    return sorted(str(row[0]) for row in rows)


# --------------------------------------------------------------------------- encoders (Arrow)


def vector_values(batch: pa.RecordBatch, names: list[str]) -> pa.Array:
    """One float32 little-endian vector per row of ``names`` (nulls become NaN), in bulk."""
    import pyarrow as pa
    import pyarrow.compute as pc

    matrix = np.empty((batch.num_rows, len(names)), dtype="<f4")
    for j, name in enumerate(names):
        column = pc.fill_null(batch.column(name).cast(pa.float64()), np.nan)
        matrix[:, j] = column.to_numpy()
    width = 4 * len(names)
    offsets = np.arange(batch.num_rows + 1, dtype=np.int64) * width
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(matrix.tobytes())]
    return pa.Array.from_buffers(pa.large_binary(), batch.num_rows, buffers)


def codes_of(strings: pa.Array, vocab: pa.Array) -> np.ndarray:
    """Vocabulary codes of a string column (-1 for null or unknown)."""
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(pc.index_in(strings, vocab), -1).to_numpy(), dtype=np.int64)


def profile_values(batch: pa.RecordBatch, vocab: pa.Array) -> pa.Array:
    """Each user's profile (``store.vectors``): declared size, then sorted affinity entries."""
    import pyarrow as pa

    rows = batch.num_rows
    sizes = codes_of(batch.column("declared_size"), vocab)
    sizes = np.where(sizes < 0, NO_CODE, sizes).astype("<u4")
    every_row = np.arange(rows, dtype=np.int64)
    fields: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [
        (every_row, np.zeros(rows, dtype=np.int64), sizes)
    ]
    for name in MAP_COLUMNS:
        entries, counts = map_entries(batch.column(name))
        owner = np.repeat(every_row, counts)
        codes = codes_of(entries.field("key"), vocab)
        if (codes < 0).any():
            raise ValueError(f"{name} holds values missing from the vocabulary")
        shares = np.asarray(entries.field("value").to_numpy(zero_copy_only=False), "<f4")
        order = np.lexsort((codes, owner))
        owner, codes, shares = owner[order], codes[order], shares[order]
        index = within_row_index(owner)
        fields.append((every_row, np.zeros(rows, np.int64), counts.astype("<u4")))
        fields.append((owner, index, codes.astype("<u4")))
        fields.append((owner, index, shares))
    offsets, data = pack_rows(rows, fields)
    return pa.Array.from_buffers(
        pa.large_binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def history_values(rows: pa.RecordBatch) -> tuple[pa.Array, pa.Array]:
    """Each user's history (``store.vectors``) from flat ``user_id, item_id, seen, clicked`` rows.

    Every row of a user must be in ``rows`` (the writer encodes a whole partition at once);
    returns the users (ascending) and their values: item ids ascending, times shown, clicks.
    """
    import pyarrow as pa

    users = np.asarray(rows.column("user_id").to_numpy(), np.int64)
    items = np.asarray(rows.column("item_id").to_numpy(), np.int64)
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    first = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, bool)
    owner = np.cumsum(first) - 1
    index = within_row_index(owner)

    def floats(name: str) -> np.ndarray:
        values = rows.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(values, "<f4")[order]

    fields = [
        (owner, index, items.astype("<u4")),
        (owner, index, floats("seen_before")),
        (owner, index, floats("clicked_before")),
    ]
    count = int(first.sum())
    offsets, data = pack_rows(count, fields)
    values = pa.Array.from_buffers(
        pa.large_binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return pa.array(users[first]), values


# --------------------------------------------------------------------------- Spark writers

# one batch of rows -> (group, entity ids, encoded values) per group
Encoder = Callable[["pa.RecordBatch"], "list[tuple[str, pa.Array, pa.Array]]"]


def make_group_writer(
    redis_url: str,
    prefix: str,
    version: str,
    encode: Encoder,
    mset_batch: int,
    buckets: dict[str, int] | None = None,
    whole_partition: bool = False,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Build the ``mapInArrow`` task: encode each batch, write its groups, acknowledge per group.

    A part is ``<group>-<partition>``: a retried task writes the same keys and acknowledges the
    same part again (MSET and HSET are idempotent). A partition's encoded values are held until
    it is read to the end (one acknowledgement per group and partition): a few tens of MB.
    Groups named in ``buckets`` go into that many hash buckets (item vectors), the others one
    key per entity. With ``whole_partition`` the partition's rows are encoded at once (an
    entity's rows may span Arrow batches: histories from flat rows).
    """
    bucketed = dict(buckets or {})

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        from pyspark import TaskContext

        from rankflow.store.keys import FEATURES
        from rankflow.store.writer import write_arrow, write_buckets

        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        encoded: dict[str, list[pa.RecordBatch]] = {}
        if whole_partition:
            every = [b for b in batches if b.num_rows]
            whole = pa.Table.from_batches(every).combine_chunks() if every else None
            batches = iter(whole.to_batches() if whole is not None else [])
        for batch in batches:
            if not batch.num_rows:
                continue
            for group, ids, values in encode(batch):
                part = pa.RecordBatch.from_arrays([ids, values], names=["user_id", "value"])
                encoded.setdefault(group, []).append(part)
        for group, parts in encoded.items():
            part = f"{group}-{partition}"
            stats = (
                write_buckets(
                    redis_url, prefix, FEATURES, version, parts, bucketed[group],
                    part=part, group=group,
                )
                if group in bucketed
                else write_arrow(
                    redis_url, prefix, FEATURES, version, parts,
                    mset_batch=mset_batch, part=part, group=group,
                )
            )  # fmt: skip
            yield pa.RecordBatch.from_pydict(
                {
                    "part": [f"{group}-{partition}"],
                    "entities": [stats.users],
                    "bytes": [stats.bytes],
                }
            )

    return write


def write_group(
    frame: DataFrame, writer: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]
) -> dict[str, tuple[int, int]]:
    """Run a writer over a frame's partitions; return part -> (entities, bytes)."""
    rows = frame.mapInArrow(writer, ACK_SCHEMA).collect()
    return {str(r["part"]): (int(r["entities"]), int(r["bytes"])) for r in rows}


def item_encoder(batch: pa.RecordBatch) -> list[tuple[str, pa.Array, pa.Array]]:
    """The item group of one batch of item feature rows."""
    return [(GROUPS["item"], batch.column("item_id"), vector_values(batch, ITEM_FEATURES))]


def make_user_encoder(vocabulary: list[str]) -> Encoder:
    """The user and profile groups of one batch of user feature rows."""

    def encode(batch: pa.RecordBatch) -> list[tuple[str, pa.Array, pa.Array]]:
        import pyarrow as pa

        vocab = pa.array(vocabulary, pa.string())
        users = batch.column("user_id")
        return [
            (GROUPS["user"], users, vector_values(batch, USER_FEATURES)),
            (GROUPS["profile"], users, profile_values(batch, vocab)),
        ]

    return encode


def history_encoder(rows: pa.RecordBatch) -> list[tuple[str, pa.Array, pa.Array]]:
    """The history group of a partition's ``user_id, item_id, seen, clicked`` rows."""
    users, values = history_values(rows)
    return [(GROUPS["history"], users, values)]


def histories(seen: DataFrame, partitions: int) -> DataFrame:
    """The shown pairs with every row of a user in one partition (no per-user lists in Spark).

    A ``collect_list`` of structs per user cost most of the materialisation at 500k users
    (``make bench-materialise``): a hash repartition and numpy grouping in the writer do not.
    """
    return seen.select("user_id", "item_id", "seen_before", "clicked_before").repartition(
        partitions, "user_id"
    )


# --------------------------------------------------------------------------- the publication


@dataclass(frozen=True)
class Materialised:
    """What one materialisation wrote, what its audit compared, and the switch."""

    version: str
    entities: dict[str, int]  # group -> entities written
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

    from rankflow.lake.tables import read_features
    from rankflow.publish.redis import cleanup_errors
    from rankflow.serving.snapshot import snapshot_table, write_snapshot
    from rankflow.store.client import checked_client
    from rankflow.store.commands import _text
    from rankflow.store.keys import (
        FEATURES,
        feature_key_pattern,
        item_bucket_key,
        item_bucket_pattern,
        schema_key,
    )
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
    vocab = vocabulary(frames)
    expected = expected_entities(frames)
    buckets = item_buckets(expected[GROUPS["item"]])
    lap("read_and_count")
    location = snapshot_location(settings, version)
    source = {**commit.as_source(), "schema_hash": schema_hash(), "snapshot": location}
    begin_version(
        client, prefix, FEATURES, version, ds=commit.ds, source=source, encoding=FEATURE_ENCODING
    )
    try:
        schema = schema_document(vocab, location, buckets)
        client.set(schema_key(prefix, version), json.dumps(schema))
        items = frames.items.select("item_id", *ITEM_FEATURES, *ITEM_ATTRIBUTES, "is_sold")
        origin = {"ds": commit.ds.isoformat(), "delta_versions": commit.versions}
        table = snapshot_table(
            items.toArrow(), ITEM_FEATURES, ITEM_ATTRIBUTES, vocab, version, schema_hash(), origin
        )
        snapshot_bytes = write_snapshot(table, location)
        lap("snapshot")
        batch = settings.redis.mset_batch
        acks = write_group(
            items.select("item_id", *ITEM_FEATURES),
            make_group_writer(url, prefix, version, item_encoder, batch, {GROUPS["item"]: buckets}),
        )
        first = int(table.column("item_id")[0].as_py()) if table.num_rows else 0
        bucket = item_bucket_key(prefix, version, first, buckets)  # one that holds an item
        encoding = _text(client.object("encoding", bucket)) or ""
        if encoding not in ("listpack", "ziplist", ""):
            log.warning(
                "item buckets are %s-encoded, several times larger than a listpack: set Redis's "
                "hash-max-listpack-value to at least %d (docs/feature-store.md)",
                encoding,
                4 * len(ITEM_FEATURES),
            )
        lap("write_items")
        users = frames.users.select("user_id", *USER_FEATURES, "declared_size", *MAP_COLUMNS)
        acks |= write_group(
            users,
            make_group_writer(url, prefix, version, make_user_encoder(vocab), batch),
        )
        lap("write_users")
        acks |= write_group(
            histories(frames.seen, int(settings.spark.shuffle_partitions)),
            make_group_writer(url, prefix, version, history_encoder, batch, whole_partition=True),
        )
        lap("write_histories")
        written = written_entities(acks)
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
            sum(written.values()),
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
        entities=written,
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


def expected_entities(frames: FeatureFrames) -> dict[str, int]:
    """Entities per group the Delta commit holds (users have a vector and a profile each)."""
    users = frames.users.count()
    return {
        GROUPS["item"]: frames.items.count(),
        GROUPS["user"]: users,
        GROUPS["profile"]: users,
        GROUPS["history"]: frames.seen.select("user_id").distinct().count(),
    }


def written_entities(acks: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Entities per group the writers acknowledged (parts are ``<group>-<partition>``)."""
    totals = dict.fromkeys(GROUPS.values(), 0)
    for part, (entities, _) in acks.items():
        group = part.split("-", 1)[0]
        totals[group] = totals.get(group, 0) + entities
    return totals

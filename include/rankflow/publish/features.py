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
from collections.abc import Callable, Iterable, Iterator
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
    from pyspark.sql import SparkSession

    from rankflow.config import Settings
    from rankflow.features.batch import FeatureFrames
    from rankflow.lake.tables import DataFile

log = logging.getLogger(__name__)
ACK_SCHEMA = "part string, entities long, bytes long, rows long"  # rows: read from the file
HISTORY_COLUMNS = ("user_id", "item_id", "seen_before", "clicked_before")


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

    Every row of a user must be in ``rows``; returns the users (ascending) and their values:
    item ids ascending, times shown, clicks. Rows already sorted by user and item (as the
    features step writes them) are not sorted again.
    """
    import pyarrow as pa

    users = np.asarray(rows.column("user_id").to_numpy(), np.int64)
    items = np.asarray(rows.column("item_id").to_numpy(), np.int64)
    order = None if pairs_sorted(users, items) else np.lexsort((items, users))
    if order is not None:
        users, items = users[order], items[order]
    first = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, bool)
    owner = np.cumsum(first) - 1
    index = within_row_index(owner)

    def floats(name: str) -> np.ndarray:
        values = rows.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        values = np.asarray(values, "<f4")
        return values if order is None else values[order]

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


def pairs_sorted(users: np.ndarray, items: np.ndarray) -> bool:
    """Tell whether ``(user, item)`` pairs are in ascending order."""
    if len(users) < 2:
        return True
    later_user = users[1:] > users[:-1]
    same_user = users[1:] == users[:-1]
    return bool(np.all(later_user | (same_user & (items[1:] >= items[:-1]))))


@dataclass
class RowTally:
    """Rows a reader has read (a file's are checked against its Delta statistics)."""

    rows: int = 0


def user_histories(batches: Iterable[pa.RecordBatch], tally: RowTally) -> Iterator[pa.RecordBatch]:
    """Encode the histories of rows sorted by user, batch by batch (a user may cross batches).

    Bounded memory: only the last user of a batch waits for the next one.

    Raises:
        ValueError: the rows are not sorted by user (the file was not written clustered).
    """
    import pyarrow as pa

    held: pa.Table | None = None
    for batch in batches:
        tally.rows += batch.num_rows
        if not batch.num_rows:
            continue
        rows = pa.Table.from_batches([batch])
        if held is not None:
            rows = pa.concat_tables([held, rows])
        users = np.asarray(rows.column("user_id").to_numpy(), np.int64)
        if len(users) > 1 and bool(np.any(users[1:] < users[:-1])):
            raise ValueError("seen pairs are not sorted by user: re-run the features step")
        last = int(np.searchsorted(users, users[-1], side="left"))
        if last:
            yield _history_batch(rows.slice(0, last))
        held = rows.slice(last)
    if held is not None:
        yield _history_batch(held)


def _history_batch(rows: pa.Table) -> pa.RecordBatch:
    """The ``user_id, value`` batch of whole users' rows."""
    import pyarrow as pa

    users, values = history_values(rows.combine_chunks().to_batches()[0])
    return pa.RecordBatch.from_arrays([users, values], names=["user_id", "value"])


# --------------------------------------------------------------------------- Spark writers

# the columns each group's values are encoded from
GROUP_COLUMNS = {
    GROUPS["item"]: ("item_id", *ITEM_FEATURES),
    GROUPS["user"]: ("user_id", *USER_FEATURES),
    GROUPS["profile"]: ("user_id", "declared_size", *MAP_COLUMNS),
    GROUPS["history"]: HISTORY_COLUMNS,
}
GROUP_FACES = {
    GROUPS["item"]: "items",
    GROUPS["user"]: "users",
    GROUPS["profile"]: "users",
    GROUPS["history"]: "seen",
}


@dataclass(frozen=True)
class WriteUnit:
    """One file of the features commit encoded as one group: a Spark task's unit of work."""

    part: str  # ``<group>-<file index>``: what the writer acknowledges
    group: str
    location: str
    rows: int
    size: int


def write_units(files: dict[str, list[DataFile]]) -> list[WriteUnit]:
    """Every (group, file) pair of the commit: item vectors, user vectors, profiles, histories."""
    return [
        WriteUnit(f"{group}-{i}", group, file.location, file.rows, file.size)
        for group, face in GROUP_FACES.items()
        for i, file in enumerate(files[face])
    ]


def deal(units: list[WriteUnit], slots: int) -> list[list[WriteUnit]]:
    """Units dealt to ``slots`` tasks, largest file first to the least loaded task."""
    tasks: list[list[WriteUnit]] = [[] for _ in range(max(slots, 1))]
    loads = [0] * len(tasks)
    for unit in sorted(units, key=lambda u: (-u.size, u.part)):
        least = loads.index(min(loads))
        tasks[least].append(unit)
        loads[least] += max(unit.size, 1)
    return [task for task in tasks if task]


def read_file_columns(
    location: str, columns: tuple[str, ...], batch_rows: int = 262_144
) -> Iterator[pa.RecordBatch]:
    """Yield ``columns`` of one Parquet data file in batches, read with pyarrow."""
    import pyarrow.parquet as pq

    from rankflow.lake.delta_log import arrow_filesystem

    fs, path = arrow_filesystem(location)
    with fs.open_input_file(path) as source, pq.ParquetFile(source) as parquet:
        yield from parquet.iter_batches(batch_size=batch_rows, columns=list(columns))


def encoded_values(unit: WriteUnit, vocab: pa.Array, tally: RowTally) -> Iterator[pa.RecordBatch]:
    """The ``user_id, value`` batches of a unit's file (``user_id`` is the item id for items)."""
    import pyarrow as pa

    batches = read_file_columns(unit.location, GROUP_COLUMNS[unit.group])
    if unit.group == GROUPS["history"]:
        yield from user_histories(batches, tally)
        return
    for batch in batches:
        tally.rows += batch.num_rows
        if unit.group == GROUPS["item"]:
            ids, values = batch.column("item_id"), vector_values(batch, ITEM_FEATURES)
        elif unit.group == GROUPS["user"]:
            ids, values = batch.column("user_id"), vector_values(batch, USER_FEATURES)
        else:
            ids, values = batch.column("user_id"), profile_values(batch, vocab)
        yield pa.RecordBatch.from_arrays([ids, values], names=["user_id", "value"])


def make_feature_writer(
    redis_url: str,
    prefix: str,
    version: str,
    tasks: list[list[WriteUnit]],
    vocabulary: list[str],
    item_buckets: int,
    mset_batch: int,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Build the ``mapInArrow`` task over ``range(len(tasks))``: write task ``id``'s units.

    Each unit is a file read with pyarrow (no rows pass through the JVM), encoded in bulk and
    written by :func:`~rankflow.store.writer.write_arrow` (a key per entity) or
    :func:`~rankflow.store.writer.write_buckets` (item vectors), acknowledged per unit; a
    retried task writes the same keys and acknowledges the same parts again.
    """

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        from rankflow.store.keys import FEATURES
        from rankflow.store.writer import write_arrow, write_buckets

        vocab = pa.array(vocabulary, pa.string())
        for batch in batches:
            for task in batch.column("id").to_pylist():
                for unit in tasks[task]:
                    tally = RowTally()
                    values = encoded_values(unit, vocab, tally)
                    if unit.group == GROUPS["item"]:
                        stats = write_buckets(
                            redis_url, prefix, FEATURES, version, values, item_buckets,
                            part=unit.part, group=unit.group,
                        )  # fmt: skip
                    else:
                        stats = write_arrow(
                            redis_url, prefix, FEATURES, version, values,
                            mset_batch=mset_batch, part=unit.part, group=unit.group,
                        )  # fmt: skip
                    yield pa.RecordBatch.from_pydict(
                        {
                            "part": [unit.part],
                            "entities": [stats.users],
                            "bytes": [stats.bytes],
                            "rows": [tally.rows],
                        }
                    )

    return write


def write_feature_files(
    spark: SparkSession,
    tasks: list[list[WriteUnit]],
    writer: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
) -> dict[str, tuple[int, int]]:
    """Run one Spark task per list of units; return part -> (entities, bytes).

    Raises:
        VersionCheckError: a file read back another number of rows than the Delta log records
            (or a unit did not report): nothing is switched.
    """
    from rankflow.store.errors import VersionCheckError

    if not tasks:
        return {}
    recorded = {unit.part: unit.rows for task in tasks for unit in task}
    ids = spark.range(0, len(tasks), 1, len(tasks))  # one id, so one task, per partition
    results = ids.mapInArrow(writer, ACK_SCHEMA).collect()
    read = {str(r["part"]): int(r["rows"]) for r in results}
    if read != recorded:
        wrong = [(p, read.get(p), n) for p, n in recorded.items() if read.get(p) != n]
        raise VersionCheckError(
            "feature files read back other row counts than the Delta log records "
            f"(part, read, recorded): {wrong[:3]}; not switching"
        )
    return {str(r["part"]): (int(r["entities"]), int(r["bytes"])) for r in results}


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
    vocab = vocabulary(frames)
    files = {
        face: feature_files(settings, face, commit.ds, delta_version)
        for face, delta_version in commit.versions.items()
    }
    users, items = (sum(f.rows for f in files[face]) for face in ("users", "items"))
    expected = {GROUPS["item"]: items, GROUPS["user"]: users, GROUPS["profile"]: users}
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
        table = snapshot_table(
            read_items(files["items"]),
            ITEM_FEATURES,
            ITEM_ATTRIBUTES,
            vocab,
            version,
            schema_hash(),
            origin,
        )
        snapshot_bytes = write_snapshot(table, location)
        lap("snapshot")
        tasks = deal(write_units(files), task_slots(spark))
        writer = make_feature_writer(
            url, prefix, version, tasks, vocab, buckets, settings.redis.mset_batch
        )
        acks = write_feature_files(spark, tasks, writer)
        lap("write")
        encoding = bucket_encoding(client, prefix, version, table, buckets)
        written = written_entities(acks)
        # each seen file holds whole users and was read to its recorded last row: the sum of
        # its writers' user counts is the commit's number of histories
        expected[GROUPS["history"]] = written[GROUPS["history"]]
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
    """Entities per group the writers acknowledged (parts are ``<group>-<partition>``)."""
    totals = dict.fromkeys(GROUPS.values(), 0)
    for part, (entities, _) in acks.items():
        group = part.split("-", 1)[0]
        totals[group] = totals.get(group, 0) + entities
    return totals

"""Publish the gold lists of one scoring run to Redis: Spark tasks write files, the driver commits.

Spark tasks read the gold Parquet files with pyarrow and stream them into the new version
(:func:`~rankflow.store.writer.write_user_lists`: hash buckets of about 32 users); no list
passes through the JVM or pandas. The driver then checks every file's acknowledgement against
the row counts recorded at scoring time, stores the fallback list and switches readers
atomically.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.lake.delta_log import arrow_filesystem, table_file
from rankflow.lake.gold import GoldSnapshot
from rankflow.publish.tasks import TaskFunction, deal, run_tasks

if TYPE_CHECKING:
    import pyarrow as pa
    import redis
    from pyspark.sql import DataFrame, SparkSession

    from rankflow.store.versions import SwitchResult

WRITTEN_SCHEMA = "part string, users long, bytes long"  # one acknowledgement row per file
_BATCH_ROWS = 65_536  # rows per Arrow batch read from a file: ~30 MB of RESP at K=100


@dataclass(frozen=True)
class RedisPublication:
    """What a publication wrote and how the switch went."""

    version: str
    users: int
    value_bytes: int
    files: int
    result: SwitchResult


def placed_by_bucket(lists: DataFrame, users: int, partitions: int) -> DataFrame:
    """Place the lists of each Redis hash bucket in one of ``partitions`` partitions.

    ``users`` is the lists' count, from which publishing derives the bucket count. Gold files
    written from these partitions hold whole buckets, so each file's writer sends one ``HSET``
    a bucket instead of one a bucket per file (at 200k users: 126 ms of Redis server time
    instead of 208 ms, measured with ``INFO commandstats``). Only placement: any layout
    publishes the same version.
    """
    from pyspark.sql import functions as F

    from rankflow.store.keys import USERS_PER_BUCKET, bucket_count

    buckets = bucket_count(users, USERS_PER_BUCKET)
    return lists.repartition(partitions, F.pmod(F.col("user_id"), F.lit(buckets)))


def read_list_file(location: str, batch_rows: int = _BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Yield the ``user_id`` and encoded-list batches of one gold Parquet file.

    The ``items_u32le`` column is read when the file has it: a binary column decodes about ten
    times faster than the ``item_ids`` list column it encodes.
    """
    import pyarrow.parquet as pq

    from rankflow.store.encoding import VALUE_COLUMN

    fs, path = arrow_filesystem(location)
    with fs.open_input_file(path) as source, pq.ParquetFile(source) as parquet:
        names = parquet.schema_arrow.names
        values = VALUE_COLUMN if VALUE_COLUMN in names else "item_ids"
        yield from parquet.iter_batches(batch_size=batch_rows, columns=["user_id", values])


def make_file_writer(
    redis_url: str, prefix: str, surface: str, version: str, tasks: list[list[tuple[str, str]]]
) -> TaskFunction:
    """Build the ``mapInArrow`` task over ``range(len(tasks))``: write its files, ack each."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        from rankflow.store.writer import write_user_lists

        for batch in batches:
            for task in batch.column("id").to_pylist():
                for part, location in tasks[task]:
                    stats = write_user_lists(
                        redis_url, prefix, surface, version, read_list_file(location), part=part
                    )
                    written = {"part": [part], "users": [stats.users], "bytes": [stats.bytes]}
                    yield pa.RecordBatch.from_pydict(written)  # WRITTEN_SCHEMA

    return write


def write_files(
    spark: SparkSession,
    snapshot: GoldSnapshot,
    redis_url: str,
    prefix: str,
    surface: str,
    version: str,
) -> list[tuple[str, int, int]]:
    """Write every file of the snapshot from Spark tasks; return (file, users, bytes) per file.

    Files are dealt by rows to one task per core: the Redis server is one more process on the
    same cores, and a task per file only adds scheduling.

    Raises:
        VersionCheckError: a file held another number of rows than its Delta statistics say.
    """
    from rankflow.lake.session import task_slots
    from rankflow.store.errors import VersionCheckError

    rows = dict(snapshot.files)
    units = [(part, table_file(snapshot.table, part)) for part in rows]
    tasks = deal(units, task_slots(spark), size=lambda unit: rows[unit[0]])
    writer = make_file_writer(redis_url, prefix, surface, version, tasks)
    results = [tuple(row) for row in run_tasks(spark, tasks, writer, WRITTEN_SCHEMA)]
    wrong = [(part, users, rows[part]) for part, users, _ in results if users != rows[part]]
    if wrong or len(results) != len(units):
        raise VersionCheckError(
            f"gold files read back other row counts than recorded (file, read, recorded): "
            f"{wrong[:3]}; {len(results)} of {len(units)} files reported; not switching"
        )
    return [(str(p), int(u), int(b)) for p, u, b in results]


def publish_snapshot(
    spark: SparkSession,
    client: redis.Redis,
    redis_url: str,
    snapshot: GoldSnapshot,
    *,
    prefix: str,
    surface: str,
    version: str,
    ds: date,
    model_version: str,
    k: int,
    fallback: Sequence[int],
    abandoned_after_seconds: float = 3600,
) -> RedisPublication:
    """Write a scored snapshot as a new version, check it and switch readers to it.

    First reclaims the surface's versions abandoned by crashed writers and refuses a version that
    would not fit under ``maxmemory``; a publication that fails deletes its version.

    Raises:
        VersionWontFitError: the version would not fit; nothing was written.
        VersionNotWritableError: the version is already published (the caller treats a retry).
        VersionCheckError: the written version failed its checks; readers still see the old one.
    """
    from rankflow.store.keys import USERS_PER_BUCKET, bucket_count
    from rankflow.store.memory import check_room, discard_version, reclaim_abandoned
    from rankflow.store.versions import commit_version
    from rankflow.store.writer import begin_version, record_written, write_fallback

    reclaim_abandoned(
        client, prefix, surface, keep=version, older_than_seconds=abandoned_after_seconds
    )
    check_room(client, prefix, surface, snapshot.users)
    source = {"gold_table": snapshot.table, "gold_commit": str(snapshot.commit)}
    begin_version(
        client,
        prefix,
        surface,
        version,
        ds=ds,
        model_version=model_version,
        k=k,
        source=source,
        user_buckets=bucket_count(snapshot.users, USERS_PER_BUCKET),
    )
    try:
        written = write_files(spark, snapshot, redis_url, prefix, surface, version)
        write_fallback(client, prefix, surface, version, list(fallback))
        value_bytes = sum(b for _, _, b in written)
        record_written(
            client, prefix, surface, version, value_bytes=value_bytes, files=len(written)
        )
        result = commit_version(
            client,
            prefix,
            surface,
            version,
            snapshot.users,
            expected_parts=dict(snapshot.files),
        )
    except Exception:
        # a failed publication gives its memory back at once (a full Redis must not stay full);
        # a crash that kills the process leaves it to a retry or to reclaim_abandoned
        with contextlib.suppress(*cleanup_errors()):
            discard_version(client, prefix, surface, version)  # refuses a version readers get
        raise
    return RedisPublication(
        version=version,
        users=snapshot.users,
        value_bytes=value_bytes,
        files=len(written),
        result=result,
    )


def cleanup_errors() -> tuple[type[Exception], ...]:
    """What a failed clean-up may raise; it must never hide the error that caused it."""
    import redis

    from rankflow.store.errors import RedisStoreError

    return redis.RedisError, RedisStoreError


def sample_user(snapshot: GoldSnapshot) -> int | None:
    """Return the first user of the snapshot's first non-empty file (for the demo's lookup)."""
    for location, rows in snapshot.locations():
        if rows:
            for batch in read_list_file(location, batch_rows=1):
                value: Any = batch.column("user_id")[0].as_py()
                return int(value)
    return None

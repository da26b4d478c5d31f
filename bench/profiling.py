"""Profiling experiments around the benchmark: where the time of (a) and (b) goes.

Not part of the measurement. ``python bench/profiling.py`` takes the options of
``bench_score_publish.py``, runs the benchmark and, before its summary, times the parts: the
Spark scoring plan stage by stage (scan, Arrow transfer to the Python workers, the library's
scorer), one task's per-row Python steps, and the Redis writer's parts in one process (pyarrow
read of the gold files; fields, values and the bucket ``HSET`` stream built by Arrow kernels)::

    .venv/bin/python bench/profiling.py --users 50000
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from bench_score_publish import main as run_bench
from bench_score_publish import whole_files
from synthetic import (
    PREFIX,
    SURFACE,
    Scale,
    feature_batches,
    noop_write,
    pickle_by_value,
    say,
    timed,
)

from rankflow.config import Settings
from rankflow.lake.gold import GoldSnapshot

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession


def drain(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Drain the Arrow batches of a partition and yield one row: the Arrow transfer's cost."""
    import pyarrow as pa

    rows = sum(batch.num_rows for batch in batches)
    yield pa.RecordBatch.from_pydict({"rows": [rows]})


def profile_spark(spark: SparkSession, path: str, model_raw: bytes, scale: Scale) -> None:
    """Time the Spark path stage by stage, each with a noop sink, on files read whole."""
    from rankflow.model.scoring import score_candidates

    with whole_files(spark, path):
        source = spark.read.parquet(path)
        stages = {
            "scan Parquet": source,
            "+ Arrow to the Python workers": source.mapInArrow(drain, "rows long"),
            "+ predict + best k (score_candidates)": score_candidates(
                source, model_raw, "bench-model", scale.top_k, placed_by_user=True
            ),
        }
        say(f"profile: Spark scoring ({source.rdd.getNumPartitions()} partitions), noop sink")
        for name, frame in stages.items():
            seconds = timed(partial(noop_write, frame))[1]
            say(f"    {name:<40} {seconds:7.1f} s  {scale.rows / seconds:12,.0f} rows/s")
    profile_python(path, model_raw, scale)


def profile_python(path: str, model_raw: bytes, scale: Scale, rows: int = 500_000) -> None:
    """Time the scorer's per-batch Python steps on one batch, single-threaded like a task."""
    import numpy as np

    from rankflow.model.fit import arrow_model_inputs, booster_from_bytes
    from rankflow.model.scoring import BestPerUser

    booster = booster_from_bytes(model_raw, nthread=1)
    batch = next(feature_batches(path, rows))
    matrix, to_matrix = timed(lambda: arrow_model_inputs(booster, batch, {}))
    scores, predict = timed(lambda: booster.inplace_predict(matrix))
    users = np.asarray(batch.column("user_id").to_numpy(), dtype=np.int64)
    items = np.asarray(batch.column("item_id").to_numpy(), dtype=np.int64)

    def best_k() -> None:
        """Keep the best k of the batch's users and build their lists."""
        best = BestPerUser(scale.top_k)
        best.add(users, items, np.asarray(scores, dtype=np.float32))
        best.ranked()

    n = batch.num_rows
    say(f"profile: one task's Python steps per candidate row ({n:,} rows, 1 thread)")
    for name, seconds in {
        "Arrow columns -> float32 matrix": to_matrix,
        "inplace_predict (nthread=1)": predict,
        "best k per user -> Arrow lists": timed(best_k)[1],
    }.items():
        say(f"    {name:<40} {seconds / n * 1e6:7.2f} us/row")


def profile_publish(settings: Settings, snapshot: GoldSnapshot) -> None:
    """Time the writer's parts in this process: reading the gold files, and building commands."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from rankflow.publish.redis import read_list_file
    from rankflow.store.encoding import batch_values, hset_stream, mset_arguments
    from rankflow.store.keys import USERS_PER_BUCKET, bucket_count, bucket_key_prefix

    locations = [location for location, _ in snapshot.locations()]
    buckets = bucket_count(snapshot.users, USERS_PER_BUCKET)
    key_base = bucket_key_prefix(PREFIX, SURFACE, "profile", "b").encode()

    def read_all() -> list[Any]:
        """Read every gold file into Arrow batches, as the writer tasks do."""
        return [batch for location in locations for batch in read_list_file(location)]

    batches, read_seconds = timed(read_all)

    def build_all() -> int:
        """Build each file's bucket HSET stream as ``write_buckets`` does; return the commands."""
        sent = 0
        for batch in batches:
            ids = np.asarray(batch.column("user_id").to_numpy(), dtype=np.int64)
            bucket = ids % buckets
            order = np.argsort(bucket, kind="stable")
            fields = pc.cast(pa.array(ids[order]), pa.string()).cast(pa.binary())
            values = batch_values(batch.take(pa.array(order)))
            used, starts = np.unique(bucket[order], return_index=True)
            arguments = mset_arguments(fields, values)
            sent += len(hset_stream(arguments, key_base, used, np.append(starts, len(ids)))[1])
        return sent

    commands, build_seconds = timed(build_all)
    n = snapshot.users
    say(f"profile: writer parts, one process, {n:,} users, {len(locations)} files")
    for name, seconds in [
        ("pyarrow read of the gold files", read_seconds),
        (f"fields + values + {commands} bucket HSETs", build_seconds),
    ]:
        say(f"    {name:<40} {seconds:7.2f} s  {n / seconds:12,.0f} users/s")


def profile_all(
    spark: SparkSession,
    settings: Settings,
    scale: Scale,
    snapshot: GoldSnapshot,
    path: str | None,
    model_raw: bytes | None,
) -> None:
    """Profile the writer, then (unless --publish-only skipped scoring) the Spark scoring."""
    profile_publish(settings, snapshot)
    if path is not None and model_raw is not None:
        profile_spark(spark, path, model_raw, scale)


def main(argv: Sequence[str]) -> int:
    """Run the benchmark with these options and every profile before its summary; exit 0."""
    return run_bench(argv, profiler=profile_all)


# Spark's Python workers cannot import bench/: ship this module's functions (drain) to them by
# value, also when it is imported rather than run
pickle_by_value(__name__)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Profiling experiments around the benchmark: where the time of (a) and (b) goes.

Not part of the measurement. ``python bench/profiling.py`` takes the options of
``bench_score_publish.py``, runs the benchmark and, before its summary, times the parts: the
Spark scoring plan stage by stage, two prototype scorers (B: ``mapInArrow``, C: predict before
the shuffle + ``max_by(..., k)``), one task's per-row Python steps, and the Redis writer's
parts in one process (pyarrow read of the gold files; keys, values and RESP built by Arrow
kernels)::

    .venv/bin/python bench/profiling.py --users 50000
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from bench_score_publish import main as run_bench
from synthetic import (
    PREFIX,
    SURFACE,
    Scale,
    feature_batches,
    noop_write,
    pickle_by_value,
    say,
    timed,
    to_matrix,
)

from rankflow.config import Settings
from rankflow.features.registry import MODEL_FEATURES
from rankflow.lake.gold import GoldSnapshot

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession


def consume_only(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Drain the Arrow batches of a partition and yield one row: the Arrow transfer's cost."""
    import pandas as pd

    rows = sum(len(b) for b in batches)
    yield pd.DataFrame({"rows": [rows]})


def ranked_batch(users: np.ndarray, items: np.ndarray, scores: np.ndarray, k: int) -> Any:
    """Return the top-``k`` lists of users' rows as one Arrow batch (lists built from offsets)."""
    import numpy as np
    import pyarrow as pa

    from rankflow.store.encoding import encode_list_array

    order = np.lexsort((items, -scores, users))
    users, items, scores = users[order], items[order], scores[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    keep = np.arange(len(users)) - np.repeat(starts, sizes) < k
    offsets = pa.array(np.r_[0, np.cumsum(np.minimum(sizes, k))].astype(np.int32))
    lists = pa.ListArray.from_arrays(offsets, pa.array(items[keep]))
    return pa.RecordBatch.from_arrays(
        [
            pa.array(users[starts]),
            lists,
            pa.ListArray.from_arrays(offsets, pa.array(scores[keep].astype(np.float32))),
            encode_list_array(lists),
        ],
        names=["user_id", "item_ids", "scores", "items_u32le"],
    )


def make_arrow_scorer(model_broadcast: Any, model_key: str, k: int) -> Callable[..., Any]:
    """Prototype ``mapInArrow`` scorer: no pandas; only (user, item, score) is carried over."""

    def score(batches: Iterator[Any]) -> Iterator[Any]:
        """Predict each batch and yield the top-``k`` lists of the users it completes."""
        import numpy as np

        from rankflow.model.scoring import cached_booster

        booster = cached_booster(model_key, model_broadcast.value)
        empty = np.empty(0, dtype=np.int64)
        users, items, scores = empty, empty, np.empty(0, dtype=np.float32)  # the carried user
        for batch in batches:
            if not batch.num_rows:
                continue
            users = np.concatenate([users, batch.column("user_id").to_numpy()])
            items = np.concatenate([items, batch.column("item_id").to_numpy()])
            scores = np.concatenate([scores, booster.inplace_predict(to_matrix(batch))])
            cut = int(np.searchsorted(users, users[-1]))  # rows arrive sorted by user
            if cut:
                yield ranked_batch(users[:cut], items[:cut], scores[:cut], k)
            users, items, scores = users[cut:], items[cut:], scores[cut:]
        if len(users):
            yield ranked_batch(users, items, scores, k)

    return score


def make_arrow_predictor(model_broadcast: Any, model_key: str) -> Callable[..., Any]:
    """Prototype ``mapInArrow`` step that predicts in place: ``user_id, item_id, score`` out."""

    def predict(batches: Iterator[Any]) -> Iterator[Any]:
        """Yield each batch's ``user_id, item_id`` with the model's score."""
        import pyarrow as pa

        from rankflow.model.scoring import cached_booster

        booster = cached_booster(model_key, model_broadcast.value)
        for batch in batches:
            scores = booster.inplace_predict(to_matrix(batch))
            yield pa.RecordBatch.from_arrays(
                [batch.column("user_id"), batch.column("item_id"), pa.array(scores)],
                names=["user_id", "item_id", "score"],
            )

    return predict


def score_arrow_sorted(scored_input: DataFrame, model_raw: bytes, k: int) -> DataFrame:
    """Prototype B: the library's plan (shuffle + sort by user) with the ``mapInArrow`` scorer."""
    from rankflow.model.scoring import RANKED_SCHEMA

    spark = scored_input.sparkSession
    broadcast = spark.sparkContext.broadcast(model_raw)
    partitions = max(spark.sparkContext.defaultParallelism * 2, 2)
    return (
        scored_input.repartition(partitions, "user_id")
        .sortWithinPartitions("user_id")
        .mapInArrow(make_arrow_scorer(broadcast, "bench-arrow", k), RANKED_SCHEMA)
    )


def score_predict_first(scored_input: DataFrame, model_raw: bytes, k: int) -> DataFrame:
    """Prototype C: predict where the rows are, then a native top-k (``max_by``) per user.

    Only ``user_id, item_id, score`` (20 bytes a row) is shuffled instead of every feature, and
    the aggregate keeps at most ``k`` entries per user on each side of the shuffle.
    """
    from pyspark.sql import functions as F

    spark = scored_input.sparkSession
    broadcast = spark.sparkContext.broadcast(model_raw)
    scored = scored_input.select("user_id", "item_id", *MODEL_FEATURES).mapInArrow(
        make_arrow_predictor(broadcast, "bench-arrow"),
        "user_id long, item_id long, score float",
    )
    best = F.max_by(
        F.struct("item_id", "score"), F.struct("score", (-F.col("item_id")).alias("tie")), k
    )
    return (
        scored.groupBy("user_id")
        .agg(best.alias("top"))
        .select(
            "user_id",
            F.col("top.item_id").alias("item_ids"),
            F.col("top.score").alias("scores"),
        )
    )


def profile_spark(spark: SparkSession, path: str, model_raw: bytes, scale: Scale) -> None:
    """Time the Spark path stage by stage, then two prototype scorers, all with a noop sink."""
    from rankflow.model.scoring import score_candidates

    partitions = max(spark.sparkContext.defaultParallelism * 2, 2)
    source = spark.read.parquet(path)
    shuffled = source.repartition(partitions, "user_id").sortWithinPartitions("user_id")
    stages = {
        "scan Parquet": source,
        "+ repartition by user + sort": shuffled,
        "+ Arrow to pandas in Python workers": shuffled.mapInPandas(consume_only, "rows long"),
        "+ predict + top-K (score_candidates)": score_candidates(
            source, model_raw, "bench-model", scale.top_k
        ),
        "B: same plan, mapInArrow scorer": score_arrow_sorted(source, model_raw, scale.top_k),
        "C: predict first, max_by top-k": score_predict_first(source, model_raw, scale.top_k),
    }
    say(f"profile: Spark scoring ({partitions} scoring partitions), noop sink")
    for name, frame in stages.items():
        seconds = timed(partial(noop_write, frame))[1]
        say(f"    {name:<40} {seconds:7.1f} s  {scale.rows / seconds:12,.0f} rows/s")
    profile_python(path, model_raw, scale)


def profile_python(path: str, model_raw: bytes, scale: Scale, rows: int = 500_000) -> None:
    """Time the scorer's per-batch Python steps on one batch, single-threaded like a task."""
    import pandas as pd
    import pyarrow as pa

    from rankflow.model.fit import booster_from_bytes
    from rankflow.model.scoring import top_k_per_user

    booster = booster_from_bytes(model_raw, nthread=1)
    batch = next(feature_batches(path, rows))
    frame, to_pandas = timed(batch.to_pandas)
    _, concat = timed(lambda: pd.concat([frame.iloc[:1000], frame], ignore_index=True))
    matrix, to_numpy = timed(lambda: frame[MODEL_FEATURES].to_numpy(dtype="float32"))
    _, from_arrow = timed(lambda: to_matrix(batch))
    scores, predict = timed(lambda: booster.inplace_predict(matrix))
    users, items = frame["user_id"].to_numpy(), frame["item_id"].to_numpy()
    ranked, top_k = timed(lambda: top_k_per_user(users, items, scores, scale.top_k))
    _, back = timed(lambda: pa.RecordBatch.from_pandas(ranked, preserve_index=False))
    _, arrow_top_k = timed(lambda: ranked_batch(users, items, scores, scale.top_k))
    n = len(frame)
    say(f"profile: one task's Python steps per candidate row ({n:,} rows, 1 thread)")
    for name, seconds in {
        "Arrow -> pandas": to_pandas,
        "pd.concat with the carried user": concat,
        "pandas features -> float32 matrix": to_numpy,
        "  (Arrow columns -> float32 matrix)": from_arrow,
        "inplace_predict (nthread=1)": predict,
        "top_k_per_user": top_k,
        "top-K lists -> Arrow": back,
        "  (ranked_batch: top-K straight to Arrow)": arrow_top_k,
    }.items():
        say(f"    {name:<40} {seconds / n * 1e6:7.2f} us/row")


def profile_publish(settings: Settings, snapshot: GoldSnapshot) -> None:
    """Time the writer's parts in this process: reading the gold files, and building commands."""
    from rankflow.publish.redis import read_list_file
    from rankflow.store.encoding import batch_values, mset_arguments, mset_commands, user_key_array

    locations = [location for location, _ in snapshot.locations()]

    def read_all() -> list[Any]:
        """Read every gold file into Arrow batches, as the writer tasks do."""
        return [batch for location in locations for batch in read_list_file(location)]

    batches, read_seconds = timed(read_all)

    def build_all() -> int:
        """Build the keys, values and MSET commands of every batch; return the command count."""
        sent = 0
        for batch in batches:
            keys = user_key_array(PREFIX, SURFACE, "profile", batch.column("user_id"))
            values = batch_values(batch)
            args = mset_arguments(keys, values)
            sent += sum(1 for _ in mset_commands(args, settings.redis.mset_batch))
        return sent

    commands, build_seconds = timed(build_all)
    n = snapshot.users
    say(f"profile: writer parts, one process, {n:,} users, {len(locations)} files")
    for name, seconds in [
        ("pyarrow read of the gold files", read_seconds),
        (f"keys + values + RESP, {commands} MSETs", build_seconds),
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


# Spark's Python workers cannot import bench/: ship this module's functions (consume_only, the
# prototype scorers) to them by value, also when it is imported rather than run
pickle_by_value(__name__)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

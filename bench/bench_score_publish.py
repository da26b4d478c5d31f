"""Benchmark batch scoring and Redis publishing against in-process references (``make bench``).

Measured in one run, on the same rows and the same model:

(a) scoring rows/s through ``model.scoring.score_candidates`` (Spark, ``mapInArrow``) as the
    score step calls it, on rows placed by user (read from Parquet, the lists written back), and
    its ratio to ``Booster.inplace_predict`` over the same rows in this process (all cores);
(b) Redis publish users/s through ``rankflow.publish.redis.publish_snapshot`` (the nightly
    task's code: ``begin_version``, Spark tasks reading gold files into ``write_arrow``,
    ``write_fallback``, ``commit_version``) and its ratio to ``redis-benchmark -P 16 -t set``
    with values of the same size;
(c) Redis bytes per user (``MEMORY USAGE`` sample) and its ratio to the K x 4-byte payload.

It is a benchmark, not a test: it always exits 0 once it has measured, and prints PASS/FAIL
against the team's current targets (0.5 for both ratios). Scale comes from ``BENCH_*`` variables
or the options::

    .venv/bin/python bench/bench_score_publish.py --users 50000

The synthetic rows and model come from ``synthetic.py``; ``profiling.py`` takes the same options
and also times the parts. The publication uses its own prefix and surface (``rfbench:bench``) and
deletes every key under it afterwards, so the serving keys of a running demo are never touched.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from synthetic import (
    BENCH_DS,
    FIRST_USER,
    PREFIX,
    SURFACE,
    Scale,
    ensure_candidates,
    env_int,
    feature_batches,
    make_gold,
    noop_write,
    say,
    timed,
    to_matrix,
    train_model,
    write_synthetic_lists,
)

from rankflow.config import Settings, load_settings
from rankflow.lake.gold import GoldSnapshot

if TYPE_CHECKING:
    import pandas as pd
    import redis
    from pyspark.sql import SparkSession

    # run after the measurement, before the summary (profiling.py): spark, settings, scale, the
    # gold snapshot, and the candidate table and model (None when --publish-only skipped them)
    Profiler = Callable[
        [SparkSession, Settings, Scale, GoldSnapshot, str | None, bytes | None], None
    ]

# PASS/FAIL thresholds of the two ratios: the team's current targets
TARGET_SCORING = 0.5
TARGET_PUBLISH = 0.5
WARM_UP_SURFACE = "warmup"
# publications of the same snapshot, each into a fresh version, each between two redis-benchmark
# runs: its ratio is over the mean of its two neighbours (median of the ratios, with the range)
PUBLISH_RUNS = 5
SCORING_RUNS = 3  # runs of each scoring path over the same rows (median, with the range)
NIGHTLY_USERS = 1_000_000  # the marketplace size of issue #15's night: (b) is measured there too


def parse_args(argv: Sequence[str], settings: Settings) -> Scale:
    """Build the scale from ``BENCH_*`` variables, overridden by command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=env_int("BENCH_USERS", 200_000))
    parser.add_argument("--candidates", type=int, default=env_int("BENCH_CANDIDATES", 200))
    parser.add_argument("--top-k", type=int, default=env_int("BENCH_TOP_K", 100))
    parser.add_argument("--seed", type=int, default=env_int("BENCH_SEED", 7))
    parser.add_argument("--trees", type=int, default=env_int("BENCH_TREES", 250))
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("BENCH_DIR", str(settings.paths.home / "bench"))),
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated Parquet files")
    parser.add_argument(
        "--publish-users",
        type=int,
        default=env_int("BENCH_PUBLISH_USERS", NIGHTLY_USERS),
        help="also publish this many users' synthetic lists (the nightly's size, where a "
        "publication's fixed cost, a Spark job's start, weighs less)",
    )
    parser.add_argument(
        "--publish-only",
        action="store_true",
        help="skip (a): generate the top-K lists directly in Spark and measure (b) and (c)",
    )
    args = parser.parse_args(argv)
    return Scale(
        users=args.users,
        candidates=args.candidates,
        top_k=args.top_k,
        seed=args.seed,
        trees=args.trees,
        workdir=args.workdir.resolve(),
        keep=args.keep,
        publish_only=args.publish_only,
        publish_users=args.users if args.publish_only else args.publish_users,
    )


# --------------------------------------------------------------------------- (a) scoring


@dataclass(frozen=True)
class ScoringResult:
    """Seconds of each run of both scoring paths over the same rows."""

    spark_seconds: list[float]
    reference_seconds: list[float]
    convert_seconds: float
    rows: int

    @property
    def ratio(self) -> float:
        """Return the median Spark rows/s over the median reference rows/s."""
        return statistics.median(self.reference_seconds) / statistics.median(self.spark_seconds)

    def rates(self, seconds: list[float]) -> str:
        """Return ``median rows/s [slowest .. fastest]`` of a path's runs."""
        rates = sorted(self.rows / s for s in seconds)
        return f"{statistics.median(rates):,.0f} rows/s [{rates[0]:,.0f} .. {rates[-1]:,.0f}]"


@contextmanager
def whole_files(spark: SparkSession, path: str) -> Iterator[None]:
    """Plan the reads inside the block so that no candidate file is read in pieces.

    The files hold whole users (``synthetic.candidate_frame``), as the score step's input holds
    them after ``scoring_input`` placed each user's rows in one partition (a shuffle of narrow
    pairs, measured by the nightly benchmark); a file read whole keeps its users whole.
    """
    largest = max(f.stat().st_size for f in Path(path).glob("*.parquet"))
    # a split as large as the largest file, and a file costing a whole split to open: one file
    # a partition (a few million rows, as the score step's partitions of at most
    # ROWS_PER_USER_PARTITION)
    keys = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")
    before = {key: spark.conf.get(key) for key in keys}
    for key in keys:
        spark.conf.set(key, str(largest + 1))
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)


def score_with_spark(spark: SparkSession, path: str, out: str, model_raw: bytes, k: int) -> float:
    """Score every row as the score step does (placed by user) and write the lists; seconds."""
    from rankflow.model.scoring import score_candidates

    def run() -> None:
        """Score the candidate table and write the ranked lists to ``out``."""
        with whole_files(spark, path):
            rows = spark.read.parquet(path)
            ranked = score_candidates(rows, model_raw, "bench-model", k, placed_by_user=True)
            ranked.write.mode("overwrite").parquet(out)

    return timed(run)[1]


def warm_up(spark: SparkSession, path: str, model_raw: bytes, k: int) -> None:
    """Score a few users once so Python workers are started and have imported their modules."""
    from pyspark.sql import functions as F

    from rankflow.model.scoring import score_candidates

    with whole_files(spark, path):
        few = spark.read.parquet(path).where(F.col("user_id") < FIRST_USER + 100)
        noop_write(score_candidates(few, model_raw, "bench-model", k, placed_by_user=True))


def score_in_process(path: str, model_raw: bytes, k: int) -> tuple[float, float, pd.DataFrame]:
    """Time ``inplace_predict`` (all cores) over every row; return predict s, convert s, check.

    The check frame holds the reference top-``k`` of the first batch's users.
    """
    import numpy as np

    from rankflow.model.fit import booster_from_bytes
    from rankflow.model.scoring import top_k_per_user

    booster = booster_from_bytes(model_raw, nthread=os.cpu_count() or 1)
    predict = convert = 0.0
    check = None
    for batch in feature_batches(path):
        matrix, seconds = timed(partial(to_matrix, batch))
        convert += seconds
        scores, seconds = timed(partial(booster.inplace_predict, matrix))
        predict += seconds
        if check is None:
            users = batch.column("user_id").to_numpy()
            items = batch.column("item_id").to_numpy()
            check = top_k_per_user(users, items, np.asarray(scores, dtype=np.float32), k)
            check = check.to_pandas()
    assert check is not None
    return predict, convert, check


def check_same_lists(spark: SparkSession, out: str, reference: pd.DataFrame) -> str:
    """Compare the Spark lists of a few users with the reference lists; return a verdict."""
    import numpy as np
    from pyspark.sql import functions as F

    # the first batch may cut its last user's candidates short: compare users before it
    sample = reference.iloc[: max(1, min(20, len(reference) - 1))]
    wanted = [int(u) for u in sample["user_id"]]
    got = {
        int(r["user_id"]): list(r["item_ids"])
        for r in spark.read.parquet(out).where(F.col("user_id").isin(wanted)).collect()
    }
    same = sum(
        got.get(int(u), []) == list(np.asarray(items).tolist())
        for u, items in zip(sample["user_id"], sample["item_ids"], strict=True)
    )
    return f"{same}/{len(sample)} sampled users have identical lists in both paths"


def bench_scoring(
    spark: SparkSession, path: str, out: str, model_raw: bytes, scale: Scale
) -> ScoringResult:
    """Measure (a): Spark scoring and in-process ``inplace_predict`` over the same rows, 3 x."""
    warm_up(spark, path, model_raw, scale.top_k)
    say(f"(a) scoring through Spark: score_candidates -> Parquet, {SCORING_RUNS} runs ...")
    spark_seconds = []
    for _ in range(SCORING_RUNS):
        spark_seconds.append(score_with_spark(spark, path, out, model_raw, scale.top_k))
        say(f"    {scale.rows / spark_seconds[-1]:,.0f} rows/s ({spark_seconds[-1]:.1f} s)")
    say(
        "(a) reference: inplace_predict, all cores, float32 matrices from the same Parquet, "
        f"{SCORING_RUNS} runs ..."
    )
    reference_seconds = []
    for _ in range(SCORING_RUNS):
        predict, convert, check = score_in_process(path, model_raw, scale.top_k)
        reference_seconds.append(predict)
        say(
            f"    {scale.rows / predict:,.0f} rows/s ({predict:.1f} s predicting; "
            f"Parquet -> float32 took another {convert:.1f} s, not counted)"
        )
    say(f"    check: {check_same_lists(spark, out, check)}")
    lists = spark.read.parquet(out).count()
    if lists != scale.users:  # a user split over two partitions would get two lists
        raise RuntimeError(f"{lists:,} lists for {scale.users:,} users: rows were not placed")
    say(f"    check: {lists:,} lists, one per user")
    return ScoringResult(spark_seconds, reference_seconds, convert, scale.rows)


# --------------------------------------------------------------------------- (b) publishing


@dataclass(frozen=True)
class PublishResult:
    """The publications' seconds, the redis-benchmark runs around them, memory per user.

    ``benchmark_rates`` interleave with ``run_seconds``: reference, publication, reference, ...,
    reference (one more reference than publications). redis-benchmark alone moved 1.6-2x within
    one run, so each publication is compared with the references measured just before and just
    after it, not with a median of runs minutes away.
    """

    users: int
    run_seconds: tuple[float, ...]
    benchmark_rates: tuple[float, ...]
    bytes_per_user: float | None

    @property
    def rates(self) -> list[float]:
        """Return every publication's users per second, in run order."""
        return [self.users / seconds for seconds in self.run_seconds]

    @property
    def ratios(self) -> list[float]:
        """Return each publication's rate over the mean of the two references around it."""
        around = itertools.pairwise(self.benchmark_rates)
        return [
            rate / ((before + after) / 2)
            for rate, (before, after) in zip(self.rates, around, strict=True)
        ]

    @property
    def rate(self) -> float:
        """Return the median publication's users per second."""
        return statistics.median(self.rates)

    @property
    def ratio(self) -> float:
        """Return the median of the publications' ratios to their neighbouring references."""
        return statistics.median(self.ratios)


def redis_benchmark(url: str, value_bytes: int, requests: int) -> float:
    """Run ``redis-benchmark -P 16 -t set`` against the server of ``url``; return SET/s."""
    parsed = urlparse(url)
    db = (parsed.path or "/0").strip("/") or "0"
    command = [
        "redis-benchmark",
        *("-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 6379)),
        *("--dbnum", db, "-P", "16", "-t", "set", "-d", str(value_bytes)),
        *("-n", str(requests), "-q"),
    ]
    if parsed.username:  # an ACL user (redis-benchmark 7.0 has no --no-auth-warning)
        command += ["--user", parsed.username]
    if parsed.password:
        command += ["-a", parsed.password]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.findall(r"SET: ([\d.]+) requests per second", output)
    if not found:
        raise RuntimeError(f"cannot parse redis-benchmark output: {output!r}")
    return float(found[-1])


def delete_namespace(client: redis.Redis) -> int:
    """Delete every key under ``rfbench:`` (the benchmark's versions); return the count."""
    from rankflow.store.commands import scan_keys

    deleted = 0
    batch: list[bytes] = []
    for key in scan_keys(client, f"{PREFIX}:*"):
        batch.append(key)
        if len(batch) == 1000:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


@dataclass(frozen=True)
class Publication:
    """One publication of the benchmark version: what was written and how long it took."""

    version: str
    users: int
    seconds: float


def publish(
    spark: SparkSession, client: redis.Redis, settings: Settings, snapshot: GoldSnapshot, k: int
) -> Publication:
    """Publish a gold snapshot as a new ``rfbench:bench`` version with the nightly task's code."""
    from rankflow.publish.redis import publish_snapshot
    from rankflow.store.keys import new_version_id

    version = new_version_id(BENCH_DS)
    start = time.perf_counter()
    done = publish_snapshot(
        spark,
        client,
        settings.redis.url,
        snapshot,
        prefix=PREFIX,
        surface=SURFACE,
        version=version,
        ds=BENCH_DS,
        model_version="bench",
        k=k,
        fallback=list(range(k)),
    )
    seconds = time.perf_counter() - start
    if done.result.status != "switched":
        raise RuntimeError(f"benchmark version not committed: {done.result}")
    return Publication(version, done.users, seconds)


def warm_up_publish(
    spark: SparkSession, client: redis.Redis, settings: Settings, gold_path: str, k: int
) -> None:
    """Publish a small gold partition first so every Python worker is started; report its cost.

    A nightly publish task is a fresh ``spark-submit`` and pays this once; the measurement
    below is the steady rate.
    """
    from pyspark.sql import functions as F

    from rankflow.lake.gold import write_gold

    few = (
        spark.read.format("delta")
        .load(gold_path)
        .where(F.col("user_id") < FIRST_USER + 2000)
        .withColumn("surface", F.lit(WARM_UP_SURFACE))
        .repartition(spark.sparkContext.defaultParallelism)  # one file per worker to warm
    )
    snapshot = write_gold(few, gold_path, BENCH_DS, WARM_UP_SURFACE)
    cold = publish(spark, client, settings, snapshot, k)
    say(
        f"    warm-up: {cold.users:,} users in {cold.seconds:.1f} s "
        "(first publication job of the session, not counted)"
    )
    delete_namespace(client)


def bench_publish(
    spark: SparkSession, settings: Settings, gold_path: str, snapshot: GoldSnapshot, k: int
) -> PublishResult:
    """Measure (b) and (c): gold -> Redis publications, each between two redis-benchmark runs."""
    from rankflow.store.client import checked_client
    from rankflow.store.versions import bytes_per_user

    url = settings.redis.url  # the admin user's (as_admin)
    client = checked_client(url, "the publish bench did not run")
    stray = b"key:__rand_int__"  # the one key redis-benchmark SETs without -r
    had_stray = bool(client.exists(stray))
    delete_namespace(client)
    users = snapshot.users
    say(
        f"(b) publishing {len(snapshot.files)} gold files (begin_version, Spark tasks: pyarrow -> "
        f"write_user_lists, write_fallback, commit_version) {PUBLISH_RUNS} times, each between "
        f"two runs of redis-benchmark -P 16 -t set -d {k * 4} -n {users} ..."
    )
    try:
        warm_up_publish(spark, client, settings, gold_path, k)
        references = [redis_benchmark(url, k * 4, users)]
        runs: list[Publication] = []
        for run in range(PUBLISH_RUNS):
            if run:
                delete_namespace(client)
            runs.append(publish(spark, client, settings, snapshot, k))
            references.append(redis_benchmark(url, k * 4, users))
            say(
                f"    redis-benchmark {references[-2]:,.0f} SET/s, publication "
                f"{runs[-1].seconds:.2f} s = {users / runs[-1].seconds:,.0f} users/s, "
                f"redis-benchmark {references[-1]:,.0f} SET/s"
            )
        # only the last publication is still in Redis (earlier ones were deleted before the next)
        per_user = bytes_per_user(client, PREFIX, SURFACE, runs[-1].version, sample=1000)
    finally:
        removed = delete_namespace(client)
        if not had_stray:
            client.delete(stray)
        say(f"    cleanup: deleted {removed:,} keys under {PREFIX}:")
    return PublishResult(users, tuple(r.seconds for r in runs), tuple(references), per_user)


def publish_nightly_size(spark: SparkSession, settings: Settings, scale: Scale) -> PublishResult:
    """Measure (b) and (c) again on synthetic lists of ``--publish-users`` users."""
    import dataclasses

    night = dataclasses.replace(scale, users=scale.publish_users)
    ranked_path = str(scale.workdir / f"ranked-night-{os.getpid()}")
    gold_path = str(scale.workdir / f"gold-night-{os.getpid()}")
    say(f"(b) at the nightly's size: top-{night.top_k} lists of {night.users:,} users")
    try:
        write_synthetic_lists(spark, night, ranked_path)
        snapshot = make_gold(spark, ranked_path, gold_path)
        return bench_publish(spark, settings, gold_path, snapshot, night.top_k)
    finally:
        shutil.rmtree(ranked_path, ignore_errors=True)
        shutil.rmtree(gold_path, ignore_errors=True)


# --------------------------------------------------------------------------- report


def verdict(value: float, target: float) -> str:
    """Return PASS or FAIL against a target ratio."""
    return "PASS" if value >= target else "FAIL"


def publish_line(published: PublishResult) -> str:
    """Return the summary line of one publication size, with its verdict."""
    rates, ratios = sorted(published.rates), sorted(published.ratios)
    references = published.benchmark_rates
    return (
        f"(b) publish  {published.users:,} users  Redis {published.rate:,.0f} users/s "
        f"[{rates[0]:,.0f} .. {rates[-1]:,.0f}]  benchmark "
        f"{statistics.median(references):,.0f} SET/s [{min(references):,.0f} .. "
        f"{max(references):,.0f}]  ratio {published.ratio:.3f} [{ratios[0]:.3f} .. "
        f"{ratios[-1]:.3f}]  target >= {TARGET_PUBLISH}  "
        f"{verdict(published.ratio, TARGET_PUBLISH)}"
    )


def summary(
    scale: Scale, scoring: ScoringResult | None, published: list[PublishResult], total: float
) -> str:
    """Return the final block: the three measurements, their ratios and the verdicts.

    (b) has a line per size published; (c) is the last publication's (``--publish-users``).
    """
    payload = scale.top_k * 4
    memory = published[-1].bytes_per_user
    memory_text = (
        f"{memory:,.0f} B/user vs K x 4 = {payload} B  ratio {memory / payload:.2f}"
        if memory
        else "n/a"
    )
    lines = [
        "=" * 78,
        f"SUMMARY  {scale.users:,} users x {scale.candidates} candidates, K={scale.top_k}, "
        f"{os.cpu_count()} cores, run {total / 60:.1f} min, load {os.getloadavg()[1]:.1f} (5 min)",
        (
            f"(a) scoring  Spark {scoring.rates(scoring.spark_seconds)}  "
            f"reference {scoring.rates(scoring.reference_seconds)}  "
            f"ratio {scoring.ratio:.3f}  target >= {TARGET_SCORING}  "
            f"{verdict(scoring.ratio, TARGET_SCORING)}"
            if scoring
            else "(a) scoring  skipped (--publish-only)"
        ),
        *(publish_line(result) for result in published),
        f"(c) memory   {memory_text}",
        "=" * 78,
    ]
    return "\n".join(lines)


def describe(scale: Scale, settings: Settings) -> None:
    """Print the scale and the machine."""
    import platform

    import pyspark
    import xgboost

    say(
        f"bench: {scale.users:,} users x {scale.candidates} candidates = {scale.rows:,} rows, "
        f"K={scale.top_k}, {scale.trees} trees, seed {scale.seed}"
    )
    say(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, Spark {pyspark.__version__} "
        f"({settings.spark.master}), XGBoost {xgboost.__version__}, load "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    where = urlparse(settings.redis.url)  # host and port only: the URL carries a password
    say(f"redis: {where.hostname}:{where.port}; data: {scale.workdir}")


def as_admin(settings: Settings) -> Settings:
    """The settings with Redis as the admin user: the writer may only write ``rf:*`` keys, and
    the benchmark publishes under its own prefix (``rfbench``) and runs redis-benchmark."""
    import dataclasses

    admin = settings.redis.admin_url or settings.redis.url
    return dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, url=admin))


def main(argv: Sequence[str], profiler: Profiler | None = None) -> int:
    """Generate, train, measure (a), (b) and (c), run ``profiler``, print the summary; exit 0."""
    from rankflow.lake.session import get_session

    started = time.perf_counter()
    settings = as_admin(load_settings())
    scale = parse_args(argv, settings)
    describe(scale, settings)
    scale.workdir.mkdir(parents=True, exist_ok=True)
    ranked_path = str(scale.workdir / f"ranked-{os.getpid()}")
    gold_path = str(scale.workdir / f"gold-{os.getpid()}")
    spark = get_session(settings, "rankflow-bench")
    scoring: ScoringResult | None = None
    path: str | None = None
    model_raw: bytes | None = None
    try:
        if scale.publish_only:
            write_synthetic_lists(spark, scale, ranked_path)
        else:
            path = ensure_candidates(spark, scale)
            model_raw = train_model(spark, path, scale, settings)
            scoring = bench_scoring(spark, path, ranked_path, model_raw, scale)
        snapshot = make_gold(spark, ranked_path, gold_path)
        published = [bench_publish(spark, settings, gold_path, snapshot, scale.top_k)]
        if scale.publish_users != scale.users:
            published.append(publish_nightly_size(spark, settings, scale))
        if profiler:
            profiler(spark, settings, scale, snapshot, path, model_raw)
    finally:
        spark.stop()
        shutil.rmtree(ranked_path, ignore_errors=True)
        shutil.rmtree(gold_path, ignore_errors=True)
        if not scale.keep and not scale.publish_only:
            shutil.rmtree(scale.data_dir, ignore_errors=True)
    print(summary(scale, scoring, published, time.perf_counter() - started), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

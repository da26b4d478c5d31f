"""Benchmark materialisation at scale: ``make bench-materialise`` (``--users``, ``--items``).

The demo's feature day (``make demo``) is too small to judge the materialisation target
(>= 0.5 M entities/s with the atomic switch): there every phase is Spark's per-job cost. This
benchmark scales the demo's last feature day up by copying its users and items with id offsets
(copy ``c`` of a user also shifts its history's items to copy ``c mod items-copies``, so every
history points at items that exist), writes the three feature tables into a lake of its own,
then runs ``rankflow.publish.features.materialise`` - the nightly task's code - on a warm Spark
session, three times, each into a new version of its own Redis prefix (``rfbench``), and prints
per phase the seconds and the rate, with the median and range of the three runs.

Entities are what the step counts, (entity, group) values: a user's vector, profile and history,
and an item's vector (the target is judged on them). The summary also gives users + items per
second, and Redis values per second (a user's vector and profile share one value, an item's
vector is a field of a bucket) against the reference measured in the same run:
``redis-benchmark -P 16 -t set`` with values of the mean Redis value size, what one Redis on
this machine accepts, pipelined, from one client.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from rankflow.config import Settings
    from rankflow.publish.features import Materialised

PREFIX = "rfbench"
TARGET_ENTITIES_PER_S = 500_000
ITEM_ID_STEP = 10_000_000  # item copies: ids stay below 2^32 (histories store them as uint32)
USER_ID_STEP = 100_000_000


def say(message: str) -> None:
    """Print a progress line at once."""
    print(message, flush=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=int(os.environ.get("BENCH_USERS", 500_000)))
    parser.add_argument("--items", type=int, default=int(os.environ.get("BENCH_ITEMS", 250_000)))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the scaled lake for a rerun")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def bench_settings(settings: Settings, workdir: Path) -> Settings:
    """The settings of the benchmark's lake and Redis prefix (the admin user may write it)."""
    home = workdir / "home"
    paths = dataclasses.replace(settings.paths, home=home, lake=str(workdir / "lake"))
    redis = dataclasses.replace(
        settings.redis,
        key_prefix=PREFIX,
        url=settings.redis.admin_url or settings.redis.url,
        old_version_ttl_seconds=60,
    )
    return dataclasses.replace(settings, paths=paths, redis=redis)


def source_day(settings: Settings) -> tuple[date, dict[str, int]]:
    """The demo's last feature day and the Delta versions its features step wrote."""
    runs = sorted(settings.paths.home.glob("runs/ds=*/features.json"))
    if not runs:
        raise SystemExit("no features run record: run `make demo` first")
    record = json.loads(runs[-1].read_text())
    ds = date.fromisoformat(runs[-1].parent.name.removeprefix("ds="))
    return ds, {k: int(v) for k, v in record["delta_versions"].items()}


def scaled(frame: DataFrame, copies: int, id_column: str, step: int) -> DataFrame:
    """``copies`` copies of ``frame`` with ``id_column`` shifted by ``copy * step``."""
    from pyspark.sql import functions as F

    numbers = frame.sparkSession.range(copies).withColumnRenamed("id", "copy")
    shifted = frame.crossJoin(numbers).withColumn(
        id_column, F.col(id_column) + F.col("copy") * F.lit(step)
    )
    return shifted


def build_lake(
    spark: SparkSession, settings: Settings, bench: Settings, users: int, items: int
) -> tuple[date, dict[str, int], dict[str, int]]:
    """Write the scaled feature day into the benchmark's lake; return its ds, versions, sizes."""
    from pyspark.sql import functions as F

    from rankflow.lake.tables import read_features, write_features

    ds, versions = source_day(settings)
    frames = read_features(spark, settings, ds, versions)
    demo_users = frames.users.count()
    demo_items = frames.items.count()
    user_copies = max(1, math.ceil(users / demo_users))
    item_copies = max(1, math.ceil(items / demo_items))
    say(
        f"  source: the demo's features of {ds} ({demo_users:,} users, {demo_items:,} items) x "
        f"{user_copies} users, x {item_copies} items"
    )
    item_rows = scaled(frames.items.drop("as_of"), item_copies, "item_id", ITEM_ID_STEP)
    user_rows = scaled(frames.users.drop("as_of"), user_copies, "user_id", USER_ID_STEP)
    seen = scaled(frames.seen.drop("as_of"), user_copies, "user_id", USER_ID_STEP)
    seen = seen.withColumn(
        "item_id", F.col("item_id") + (F.col("copy") % F.lit(item_copies)) * F.lit(ITEM_ID_STEP)
    )
    # as the features step lays them out (rankflow.features.batch.seen_pairs): by user
    seen = seen.repartition("user_id")
    built = {
        face: frame.drop("copy").withColumn("ds", F.lit(ds))
        for face, frame in (("items", item_rows), ("users", user_rows), ("seen", seen))
    }
    # the features step's own write: one tagged commit per face
    written = write_features(built, bench, ds)
    sizes = {"users": demo_users * user_copies, "items": demo_items * item_copies}
    return ds, written, sizes


def redis_benchmark_rate(url: str, value_bytes: int, requests: int) -> float:
    """SETs/s of ``redis-benchmark -P 16 -t set`` with values of ``value_bytes`` (as make bench)."""
    import re
    from urllib.parse import urlparse

    where = urlparse(url)
    command = [
        shutil.which("redis-benchmark") or "redis-benchmark",
        "-h", where.hostname or "127.0.0.1", "-p", str(where.port or 6379),
        "-P", "16", "-t", "set", "-d", str(value_bytes), "-n", str(requests), "-q",
    ]  # fmt: skip
    if where.username:
        command += ["--user", where.username]
    if where.password:  # as make bench does: a local benchmark, the admin's password in argv
        command += ["-a", where.password]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.findall(r"SET: ([\d.]+) requests per second", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"redis-benchmark failed: {(done.stderr or done.stdout)[-500:]}")
    return float(found[-1])


def delete_other_versions(url: str, keep: str) -> None:
    """Delete the benchmark's feature versions but ``keep`` (bounded Redis memory between runs)."""
    from rankflow.store.client import redis_client
    from rankflow.store.commands import scan_keys

    client = redis_client(url)
    mine = f"{PREFIX}:features:v:{keep}:".encode()
    batch: list[bytes] = []
    for key in scan_keys(client, f"{PREFIX}:features:v:*"):
        if not key.startswith(mine):
            batch.append(key)
        if len(batch) == 1000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
    client.close()


def without_benchmark_key(url: str, measure: Any) -> Any:
    """Run ``measure()``; delete the one key redis-benchmark writes unless it existed before."""
    from rankflow.store.client import redis_client

    client = redis_client(url)
    existed = bool(client.exists("key:__rand_int__"))
    try:
        return measure()
    finally:
        if not existed:
            client.delete("key:__rand_int__")
        client.close()


def delete_prefix(url: str) -> int:
    """Delete every key of the benchmark's prefix (its versions); return the count."""
    from rankflow.store.client import redis_client
    from rankflow.store.commands import scan_keys

    client = redis_client(url)
    keys = list(scan_keys(client, f"{PREFIX}:*"))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])
    client.close()
    return len(keys)


def run_once(
    spark: SparkSession, bench: Settings, ds: date, versions: dict[str, int], n: int
) -> Any:
    """One materialisation of the scaled day into a new version; the step's own figures."""
    from rankflow.publish.features import FeatureCommit, materialise
    from rankflow.store.keys import new_version_id

    online = bench.pipeline["online"]
    version = new_version_id(ds, f"bench-materialise-{os.getpid()}-{n}-{time.time_ns()}")
    started = time.perf_counter()
    done = materialise(
        spark,
        bench,
        FeatureCommit(ds, versions),
        version,
        int(online["audit_sample"]),
        int(online["audit_seed"]),
    )
    seconds = time.perf_counter() - started
    if done.status != "switched":
        raise RuntimeError(f"benchmark version not switched: {done.status} {done.reason}")
    delete_other_versions(bench.redis.url, version)
    return done, seconds


def spread(values: list[float]) -> str:
    """``median [min .. max]``."""
    return f"{statistics.median(values):,.1f} [{min(values):,.1f} .. {max(values):,.1f}]"


def main(argv: Sequence[str]) -> int:
    """Build the scaled lake, materialise it ``--runs`` times, print the figures; exit 0."""
    from rankflow.config import load_settings
    from rankflow.lake.session import get_session

    options = parse_args(argv)
    settings = load_settings()
    workdir = options.workdir or settings.paths.home / "bench" / "materialise"
    bench = bench_settings(settings, workdir)
    spark = get_session(settings, "rankflow-bench-materialise")
    started = time.perf_counter()
    try:
        say(f"(1) scaling the demo's feature day to {options.users:,} users ...")
        (ds, versions, sizes), build_s = timed(
            lambda: build_lake(spark, settings, bench, options.users, options.items)
        )
        say(f"  wrote the scaled day in {build_s:.0f} s: {sizes}")
        say("(2) a warm-up materialisation (starts every Python worker; not counted) ...")
        _, warm_s = run_once(spark, bench, ds, versions, 0)
        say(f"  {warm_s:.1f} s")
        runs = []
        for n in range(1, options.runs + 1):
            done, seconds = run_once(spark, bench, ds, versions, n)
            entities = sum(done.entities.values())
            runs.append((done, seconds, entities))
            phases = ", ".join(f"{k} {v:.1f}" for k, v in done.phase_seconds.items())
            say(f"(3) run {n}: {entities:,} entities in {seconds:.1f} s ({phases})")
        stored = redis_values(runs[0][0])
        value_bytes = max(4, round(runs[0][0].value_bytes / max(stored, 1)))
        references = without_benchmark_key(
            bench.redis.url,
            lambda: [
                redis_benchmark_rate(bench.redis.url, value_bytes, 1_000_000) for _ in range(3)
            ],
        )
    finally:
        deleted = delete_prefix(bench.redis.url)
        spark.stop()
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    entities = runs[0][2]
    whole = [e / s for _, s, e in runs]
    writing = [e / d.phase_seconds["write"] for d, _, e in runs]
    switch = [
        e / sum(d.phase_seconds[p] for p in ("snapshot", "write", "commit")) for d, _, e in runs
    ]
    write_switch_s = [
        sum(d.phase_seconds[p] for p in ("snapshot", "write", "commit")) for d, _, _ in runs
    ]
    people = [(sizes["users"] + sizes["items"]) / s for s in write_switch_s]
    values = [stored / s for s in write_switch_s]
    reference = statistics.median(references)
    print("=" * 100)
    print(
        f"SUMMARY  {sizes['users']:,} users, {sizes['items']:,} items ({entities:,} entities = "
        f"(entity, group) values, in {stored:,} Redis values of {value_bytes} B on average), "
        f"{options.runs} runs; {os.cpu_count()} cores; "
        f"{time.perf_counter() - started:.0f} s; deleted {deleted:,} benchmark keys"
    )
    print("-" * 100)
    for phase in runs[0][0].phase_seconds:
        print(f"  {phase:<28} {spread([d.phase_seconds[phase] for d, _, _ in runs])} s")
    print(f"  {'whole materialise()':<28} {spread([s for _, s, _ in runs])} s")
    print(f"entities/s, whole step          {spread(whole)}")
    print(
        f"entities/s, write + switch      {spread(switch)}   (snapshot, writes, commit; no audit)"
    )
    print(f"entities/s, Redis writes only   {spread(writing)}")
    print(f"users + items/s, write + switch {spread(people)}")
    print(f"Redis values/s, write + switch  {spread(values)}")
    print(f"redis-benchmark -P 16 SET/s     {spread(references)} ({value_bytes} B values)")
    print(f"Redis values/s / redis-benchmark {statistics.median(values) / reference:.2f}")
    met = statistics.median(switch) >= TARGET_ENTITIES_PER_S
    print(
        f"target: >= {TARGET_ENTITIES_PER_S:,} entities/s with the atomic switch: "
        f"{'met' if met else 'NOT MET'} (judged on write + switch)"
    )
    print("=" * 100)
    if options.json is not None:
        figures = {
            "users": sizes["users"],
            "items": sizes["items"],
            "entities": entities,
            "redis_values": stored,
            "value_bytes": value_bytes,
            "runs": options.runs,
            "phase_seconds": [d.phase_seconds for d, _, _ in runs],
            "write_and_switch_per_s": summary_of(switch),
            "whole_per_s": summary_of(whole),
            "redis_writes_per_s": summary_of(writing),
            "users_and_items_per_s": summary_of(people),
            "redis_values_per_s": summary_of(values),
            "redis_benchmark_per_s": summary_of(references),
            "target_per_s": TARGET_ENTITIES_PER_S,
            "met": met,
        }
        options.json.write_text(json.dumps(figures, indent=2))
    return 0


def redis_values(done: Materialised) -> int:
    """Values the version stores in Redis: keys, and item vectors as bucket fields."""
    from rankflow.store.vectors import KEY_GROUPS

    return sum(done.entities.get(group, 0) for group in KEY_GROUPS)


def summary_of(values: list[float]) -> dict[str, float]:
    """Median, min and max of a figure's runs (for ``--json``)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def timed(fn: Any) -> tuple[Any, float]:
    """``fn()`` and its seconds."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The nightly run at marketplace scale: ``make bench-nightly USERS=100k`` (docs/scale.md).

For each size (``--users 100k,300k,1m``, or user counts) the benchmark works in a home of its
own, ``.rankflow/bench/nightly/<size>`` (raw drops, lake, MLflow store, run records, Spark event
logs), with a Redis server of its own (``--redis-port``, 6391: the demo's lists and features stay
untouched; stopped after the size, its data kept under the home) and the shared S3 endpoint
(bucket ``rankflow-bench``):

(1) generate the simulated marketplace of that size, ending on ``--end`` (kept when the same
    configuration was generated before);
(2) the history: ingest every day before the last and build the training sets, with the demo's
    jobs (kept when built);
(3) one nightly DAG run for the last day with ``airflow dags test``: retrain on, K = 100, up to
    200 candidates per active user; every Spark step is a spark-submit on ``local[*]`` that
    writes its Spark event log.

Per step it prints the seconds Airflow measured, the rows read and written, shuffle bytes and
spill, and the peaks of the JVM heap and of the resident memory of the JVM and of its Python
processes (the step's driver script and its workers; in ``local[*]`` the driver is the
executor), from the step's event log (``rankflow.monitoring.spark_events``); then the Redis bytes
per user, the S3 export's size and the night's seconds. Each size's figures go to
``<home>/result.json``; the summary lines up every size measured so far and gives each step's
log-log slope of seconds against users. It is a benchmark, not a test: it exits 0 once it has
measured, 1 when a phase failed (with the log to read).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

SIZES = {"100k": 100_000, "300k": 300_000, "1m": 1_000_000}
REDIS_URL_VARIABLES = (
    "RANKFLOW_REDIS_URL",
    "RANKFLOW_REDIS_READER_URL",
    "RANKFLOW_REDIS_ADMIN_URL",
    "RANKFLOW_REDIS_LOGGER_URL",
)
BUCKET = "rankflow-bench"
TARGET_NIGHT_SECONDS = 3600
TARGET_SLOPE = 1.1


def say(message: str) -> None:
    """Print a progress line at once."""
    print(message, flush=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--users",
        default=os.environ.get("USERS", "100k"),
        help="sizes to run, comma-separated: 100k, 300k, 1m or user counts (USERS)",
    )
    parser.add_argument("--end", type=date.fromisoformat, default=date(2026, 11, 30))
    parser.add_argument("--redis-port", type=int, default=6391)
    parser.add_argument(
        "--driver-memory", default="12g", help="spark.driver.memory of every step (local[*])"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="print the summary of the sizes measured"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--verbose", action="store_true", help="show the jobs' output")
    return parser.parse_args(argv)


def size_of(text: str) -> tuple[str, int]:
    """A size's name and user count: ``100k`` -> (``100k``, 100000); ``250000`` likewise."""
    name = text.strip().lower()
    if name in SIZES:
        return name, SIZES[name]
    if name.isdigit():
        return name, int(name)
    raise SystemExit(f"--users: {text!r} is not 100k, 300k, 1m or a user count")


def with_port(url: str, port: int) -> str:
    """The same Redis URL (user, password, database) on another port of the same host."""
    parts = urlparse(url)
    auth, _, _ = parts.netloc.rpartition("@")
    host = parts.hostname or "127.0.0.1"
    return urlunparse(parts._replace(netloc=f"{auth + '@' if auth else ''}{host}:{port}"))


def spark_conf(events: Path, driver_memory: str) -> dict[str, str]:
    """Every step's extra Spark settings: memory, and an event log with executor memory peaks."""
    return {
        "spark.driver.memory": driver_memory,
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": events.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.logStageExecutorMetrics": "true",
        "spark.executor.processTreeMetrics.enabled": "true",
        "spark.executor.metrics.pollingInterval": "1s",
    }


def bench_environment(
    base: dict[str, str], home: Path, redis_port: int, driver_memory: str
) -> dict[str, str]:
    """The environment of one size's run: its home, its Redis, its bucket, spark-submit steps."""
    env = dict(base)
    env["RANKFLOW_HOME"] = str(home)
    for name in ("RANKFLOW_SPARK_CONNECT", "SPARK_REMOTE"):  # every step its own spark-submit
        env.pop(name, None)
    env["AIRFLOW_CONN_SPARK_RANKFLOW"] = json.dumps({"conn_type": "spark", "host": "local[*]"})
    for name in REDIS_URL_VARIABLES:
        if env.get(name):
            env[name] = with_port(env[name], redis_port)
    if env.get("RANKFLOW_REDIS_URL"):  # over any connection of that name in Airflow's database
        env["AIRFLOW_CONN_REDIS_RANKFLOW"] = env["RANKFLOW_REDIS_URL"]
    env["RANKFLOW_S3_BUCKET"] = BUCKET
    env.pop("AIRFLOW_CONN_S3_RANKFLOW", None)
    env["RANKFLOW_REDIS_MAXMEMORY"] = "12gb"
    env["RANKFLOW_SPARK_CONF"] = json.dumps(spark_conf(home / "spark-events", driver_memory))
    return env


def run_size(name: str, users: int, options: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Generate, build the history and run one night at one size; return its figures."""
    from rankflow.config import load_settings
    from rankflow.ops import demo, services
    from rankflow.sim.marketplace import GeneratorConfig, check_room

    home = workdir / name
    (home / "spark-events").mkdir(parents=True, exist_ok=True)
    env = bench_environment(dict(os.environ), home, options.redis_port, options.driver_memory)
    os.environ.clear()  # the jobs and the DAG run inherit it; main() restores the original
    os.environ.update(env)
    settings = load_settings()
    config = GeneratorConfig.for_users(users).ending(options.end)
    say(f"== {name}: {users:,} users, days {config.start} .. {config.last_day}, home {home}")
    say("\n".join(services.up(settings)))
    figures: dict[str, Any] = {"size": name, "users": users, "phases": {}}
    log_path = home / "logs" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    state_path = demo.state_file(settings, f"bench-{name}")
    say(f"full logs: {log_path}")
    with log_path.open("a", encoding="utf-8") as log:
        started = time.monotonic()
        state = demo.read_state(state_path)
        if state.get("generated") is None:
            check_room(config, settings.paths.raw)
        state = demo.ensure_generated(settings, config, state)
        demo.write_state(state_path, state)
        figures["phases"]["generate_s"] = round(time.monotonic() - started, 1)
        figures["generation"] = state.get("summary", {})
        started = time.monotonic()
        before = set_of_apps(home / "spark-events")
        state = demo.ensure_history(
            settings, config.last_day, config.start, state, log, options.verbose
        )
        demo.write_state(state_path, state)
        figures["phases"]["history_s"] = round(time.monotonic() - started, 1)
        history_apps = set_of_apps(home / "spark-events") - before
        progress = home / "demo" / f"progress-{config.last_day.isoformat()}.jsonl"
        before_night = set_of_apps(home / "spark-events")  # history and any earlier attempt
        started = time.monotonic()
        conf = {"surface": settings.default_surface, "top_k": 100, "retrain": True}
        demo.run_nightly_dag(settings, config.last_day, conf, log, options.verbose)
        figures["phases"]["night_s"] = round(time.monotonic() - started, 1)
    figures["steps"] = step_figures(home / "spark-events", progress, exclude=before_night)
    figures["history_steps"] = history_figures(home / "spark-events", history_apps)
    figures["outputs"] = night_outputs(settings, config.last_day)
    figures["outputs"]["redis"] = redis_memory(settings)
    (home / "result.json").write_text(json.dumps(figures, indent=2, default=str))
    # only this size's Redis has a pid file under its home: the shared services keep running
    say("\n".join(line for line in services.down(settings) if "not started" not in line))
    return figures


def redis_memory(settings: Any) -> dict[str, int]:
    """The benchmark Redis's memory and key count after the night (lists, features, log)."""
    from rankflow.store.client import redis_client

    client = redis_client(settings.redis.admin_url or settings.redis.url)
    info = client.info("memory")
    return {"used_memory": int(info["used_memory"]), "keys": int(client.dbsize())}


def set_of_apps(folder: Path) -> set[str]:
    """The application ids logged in ``folder`` so far."""
    return {entry.name for entry in folder.iterdir()} if folder.exists() else set()


def step_figures(events: Path, progress: Path, exclude: set[str]) -> list[dict[str, Any]]:
    """Each task of the night in order: Airflow's seconds and its Spark application's figures."""
    from rankflow.monitoring.spark_events import summarise_logs

    apps: dict[str, list[Any]] = {}
    for app in summarise_logs(events):
        if not any(app.app_id in entry for entry in exclude):
            apps.setdefault(app.name.removeprefix("rankflow-"), []).append(app)
    rows = []
    for line in progress.read_text().splitlines() if progress.exists() else []:
        task = json.loads(line)
        if "task" not in task:
            continue
        row: dict[str, Any] = {
            "task": task["task"],
            "state": task["state"],
            "seconds": task["seconds"],
        }
        found = apps.pop(task["task"], [])
        if found:
            row["spark"] = combined([app.as_dict() for app in found])
        rows.append(row)
    return rows


def history_figures(events: Path, history_apps: set[str]) -> list[dict[str, Any]]:
    """The history build's Spark applications (ingest, training sets) and their figures."""
    from rankflow.monitoring.spark_events import summarise_logs

    chosen = [a for a in summarise_logs(events) if any(a.app_id in e for e in history_apps)]
    return [{"task": a.name.removeprefix("rankflow-"), "spark": a.as_dict()} for a in chosen]


def combined(apps: list[dict[str, Any]]) -> dict[str, Any]:
    """One step's applications (a retried step has several) summed, peaks maximised."""
    total = dict(apps[0])
    for app in apps[1:]:
        for key, value in app.items():
            if key == "peaks":
                total[key] = {
                    k: max(v, total[key].get(k, 0)) for k, v in {**total[key], **value}.items()
                }
            elif key == "peak_execution_memory":
                total[key] = max(total[key], value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                total[key] += value
    total["applications"] = len(apps)
    return total


def night_outputs(settings: Any, ds: date) -> dict[str, Any]:
    """What the night published: users, Redis bytes per user, the S3 export, from run records."""
    from rankflow.runs import read_run_record

    surface = settings.default_surface
    found: dict[str, Any] = {}
    for step, keys in (
        (f"publish-redis-{surface}", ("users", "bytes_per_user", "value_bytes")),
        (f"publish-s3-{surface}", ("bytes", "parts", "users")),
        ("candidates", ("rows", "users")),
        ("train", ("train_rows", "validation_rows", "best_iteration")),
    ):
        try:
            record = read_run_record(settings, ds, step)
        except (FileNotFoundError, KeyError, ValueError):
            continue
        found[step] = {key: record.get(key) for key in keys}
    redis = found.get(f"publish-redis-{surface}", {})
    per_user = redis.get("bytes_per_user")
    found["redis_bytes_per_user_vs_payload"] = round(float(per_user) / 400, 3) if per_user else None
    return found


def slope(points: list[tuple[int, float]]) -> float | None:
    """The least-squares slope of log(cost) against log(users), over two sizes or more."""
    usable = [(math.log(u), math.log(c)) for u, c in points if u > 0 and c and c > 0]
    if len({x for x, _ in usable}) < 2:
        return None
    mean_x = sum(x for x, _ in usable) / len(usable)
    mean_y = sum(y for _, y in usable) / len(usable)
    top = sum((x - mean_x) * (y - mean_y) for x, y in usable)
    return top / sum((x - mean_x) ** 2 for x, _ in usable)


def gib(value: float | None) -> str:
    """Bytes as GiB with two decimals, or a dash."""
    return "-" if not value else f"{value / 2**30:.2f}"


def print_size(figures: dict[str, Any]) -> None:
    """One size's per-step table."""
    say("=" * 118)
    say(
        f"{figures['size']}: {figures['users']:,} users; phases "
        + ", ".join(f"{k} {v:,.0f}" for k, v in figures["phases"].items())
    )
    say(
        f"{'step':<24}{'state':>9}{'seconds':>9}{'rows in':>13}{'rows out':>13}{'shuffle GiB':>12}"
        f"{'spill GiB':>10}{'heap GiB':>9}{'JVM RSS':>9}{'Py RSS':>9}"
    )
    for row in [*figures.get("history_steps", []), *figures["steps"]]:
        spark = row.get("spark") or {}
        peaks = spark.get("peaks", {})
        seconds = row.get("seconds", spark.get("seconds"))
        say(
            f"{row['task'][:23]:<24}{row.get('state', 'history'):>9}"
            f"{'-' if seconds is None else f'{seconds:,.0f}':>9}"
            f"{spark.get('records_read', 0):>13,}{spark.get('records_written', 0):>13,}"
            f"{gib(spark.get('shuffle_bytes_written')):>12}"
            f"{gib(spark.get('disk_bytes_spilled')):>10}{gib(peaks.get('JVMHeapMemory')):>9}"
            f"{gib(peaks.get('ProcessTreeJVMRSSMemory')):>9}"
            f"{gib(peaks.get('ProcessTreePythonRSSMemory')):>9}"
        )
    say(f"outputs: {json.dumps(figures.get('outputs', {}))}")


def print_summary(results: list[dict[str, Any]]) -> None:
    """Every size side by side: each step's seconds and its log-log slope against users."""
    results = sorted(results, key=lambda r: r["users"])
    say("=" * 118)
    say("SUMMARY: seconds per step by size, and the log-log slope of seconds against users")
    header = "".join(f"{r['size']:>10}" for r in results)
    say(f"{'step':<24}{header}{'slope':>8}")
    tasks: list[str] = []
    for result in results:
        for row in result["steps"]:
            if row["task"] not in tasks:
                tasks.append(row["task"])
    for task in [*tasks, "NIGHT"]:
        points = []
        cells = ""
        for result in results:
            if task == "NIGHT":
                seconds = result["phases"].get("night_s")
            else:
                seconds = next((r["seconds"] for r in result["steps"] if r["task"] == task), None)
            cells += f"{'-' if seconds is None else f'{seconds:,.0f}':>10}"
            if seconds:
                points.append((int(result["users"]), float(seconds)))
        fitted = slope(points)
        mark = "" if fitted is None or fitted <= TARGET_SLOPE else "  > 1.1"
        say(f"{task[:23]:<24}{cells}{'-' if fitted is None else f'{fitted:.2f}':>8}{mark}")
    largest = results[-1]
    night = largest["phases"].get("night_s")
    if night is not None:
        verdict = "met" if night <= TARGET_NIGHT_SECONDS else "NOT MET"
        size, minutes = largest["size"], night / 60
        say(f"target: the {size} night in under 60 minutes: {minutes:.1f} min, {verdict}")


def main(argv: Sequence[str]) -> int:
    """Run the sizes asked for, then print the summary of every size measured so far."""
    from rankflow.config import load_settings

    options = parse_args(argv)
    workdir = options.workdir or load_settings().paths.home / "bench" / "nightly"
    workdir.mkdir(parents=True, exist_ok=True)
    base = dict(os.environ)
    status = 0
    if not options.report_only:
        for text in options.users.split(","):
            name, users = size_of(text)
            try:
                print_size(run_size(name, users, options, workdir))
            except Exception as error:  # a benchmark reports a failed size and goes on
                say(f"{name}: FAILED: {error}")
                status = 1
            finally:
                os.environ.clear()
                os.environ.update(base)
    results = [json.loads(p.read_text()) for p in sorted(workdir.glob("*/result.json"))]
    if options.report_only:
        for result in sorted(results, key=lambda r: r["users"]):
            print_size(result)
    if results:
        print_summary(results)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

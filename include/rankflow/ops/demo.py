"""``rankflow demo``: simulated marketplace -> history -> one nightly DAG run -> report."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np

from rankflow.config import Settings, config_hash, repo_root
from rankflow.ops.live_demo import live_morning
from rankflow.ops.progress import Bar, TaskLines, run_logged
from rankflow.sim.marketplace import GeneratorConfig, yesterday
from rankflow.store.client import redact_url, redis_client

DAG_ID = "rankflow_nightly"
TINY_TOP_K = 50  # what the tests publish from the tiny marketplace (tests/dag_runs.py)


class DemoError(RuntimeError):
    """A stage of the demo failed; its log says why."""

    def __init__(self, message: str, log_path: Path) -> None:
        super().__init__(f"{message}: see {log_path}")
        self.log_path = log_path


def history_window(last: date, settings: Settings) -> tuple[date, date]:
    """Return the days whose training sets the first nightly run needs (before ``last``)."""
    training = settings.pipeline["training"]
    first = last - timedelta(days=int(training["train_days"]) + int(training["validation_days"]))
    return first, last - timedelta(days=1)


def state_file(settings: Settings, preset: str) -> Path:
    """Return where the demo remembers what it already generated and built."""
    return settings.paths.home / "demo" / f"{preset}.json"


def read_state(path: Path) -> dict[str, Any]:
    """Read the demo's progress record (empty when starting afresh)."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write the demo's progress record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2, default=str))


def ensure_generated(
    settings: Settings, config: GeneratorConfig, state: dict[str, Any]
) -> dict[str, Any]:
    """Generate the raw drops unless the same configuration was generated already."""
    from rankflow.lake.delta_log import delete_location
    from rankflow.sim.marketplace import generate_marketplace

    wanted = config_hash({k: str(v) for k, v in asdict(config).items()})
    bar = Bar("raw drops")
    if state.get("generated") == wanted:
        bar.finish(f"already generated in {settings.paths.raw}")
        return state
    if settings.paths.home.joinpath("data").exists():
        shutil.rmtree(settings.paths.home / "data")
    if settings.paths.lake_on_s3:
        delete_location(settings.paths.lake)  # new drops, new lake
    summary = generate_marketplace(
        config, settings.paths.raw, on_day=lambda done, total: bar.update(done, total, "days")
    )
    bar.finish(
        f"{summary.impressions:,} impressions over {len(summary.days)} days "
        f"in {summary.seconds:.0f}s ({settings.paths.raw})"
    )
    return {"generated": wanted, "summary": summary.as_dict()}


def ensure_history(
    settings: Settings,
    last: date,
    start: date,
    state: dict[str, Any],
    log: IO[str],
    verbose: bool,
) -> dict[str, Any]:
    """Ingest the days before ``last`` and build their training sets, through the jobs."""
    from rankflow.lake.session import job_command

    first, end = history_window(last, settings)
    bar = Bar("history")
    same_lake = state.get("lake", settings.paths.lake) == settings.paths.lake  # none: older
    stream = bool(settings.pipeline["training"].get("stream_features", False))
    same_columns = state.get("stream_features", False) == stream  # the training sets' columns
    if state.get("history") == [start.isoformat(), end.isoformat()] and same_lake and same_columns:
        bar.finish(f"already built ({start} .. {end})")
        return state
    began = time.monotonic()
    jobs = (("ingest", start), ("training_set", max(first, start + timedelta(days=1))))
    for done, (job, first_day) in enumerate(jobs):
        command, extra = job_command(settings, job, ["--start", str(first_day), "--ds", str(end)])

        def redraw(done: int = done, job: str = job) -> None:
            bar.update(done, len(jobs), f"jobs ({job})")

        status = run_logged(
            command,
            log,
            verbose=verbose,
            env={**os.environ, **extra},
            cwd=repo_root(),
            while_running=redraw,
        )
        if status != 0:
            bar.finish(f"{job} failed with exit status {status}")
            raise DemoError(f"the {job} job of the history failed", Path(log.name))
    bar.finish(
        f"ingested {start} .. {end}, training sets from {first} in {time.monotonic() - began:.0f}s"
    )
    return {**state, "history": [start.isoformat(), end.isoformat()], "lake": settings.paths.lake,
            "stream_features": stream}  # fmt: skip


def run_nightly_dag(
    settings: Settings, ds: date, conf: dict[str, Any], log: IO[str], verbose: bool
) -> None:
    """Run the nightly DAG once for ``ds`` with ``airflow dags test``, one line per task.

    The DAG is parsed without its publication deadline (``RANKFLOW_PUBLICATION_DEADLINE=off``):
    a one-off run of a past day is not held to it, and Airflow 3.3.2's ``dags test`` crashes at
    the end of a successful run of a DAG that has one. The ``rankflow_progress`` listener plugin
    writes each finished task to a progress file that :class:`TaskLines` prints from.
    """
    progress = settings.paths.home / "demo" / f"progress-{ds.isoformat()}.jsonl"
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "airflow",
        "dags",
        "test",
        DAG_ID,
        f"{ds.isoformat()}T02:00:00+00:00",
        "--conf",
        json.dumps({"ds": ds.isoformat(), **conf}),
    ]
    env = {
        **os.environ,
        "RANKFLOW_PUBLICATION_DEADLINE": "off",
        "RANKFLOW_PROGRESS_FILE": str(progress),
    }
    print(f"nightly DAG    {DAG_ID} for {ds}, task by task:")
    began = time.monotonic()
    lines = TaskLines(settings, ds, str(conf["surface"]), progress)
    status = run_logged(
        command, log, verbose=verbose, env=env, cwd=repo_root(), while_running=lines.poll
    )
    if status != 0 or lines.run_state != "success":
        raise DemoError(
            f"the nightly DAG run for {ds} ended {lines.run_state or 'without a state'} "
            f"(airflow dags test exited with {status})",
            Path(log.name),
        )
    print(f"nightly DAG    success in {time.monotonic() - began:.0f}s")


def report(settings: Settings, ds: date, surface: str) -> dict[str, Any]:
    """Print where the lists are, the evaluation table and a sample lookup; return the figures."""
    from rankflow.runs import read_run_record
    from rankflow.store.reader import RankingReader
    from rankflow.store.versions import status

    evaluation = read_run_record(settings, ds, "evaluation")
    scored = read_run_record(settings, ds, f"score-{surface}")
    exported = read_run_record(settings, ds, f"publish-s3-{surface}")
    published = read_run_record(settings, ds, f"publish-redis-{surface}")
    candidates = read_run_record(settings, ds, "candidates")
    client = redis_client(settings.redis.lookup_url)
    reader = RankingReader.from_url(settings.redis.lookup_url, prefix=settings.redis.key_prefix)
    print(
        "\n== offline evaluation on the held-out day", ds, f"({evaluation['rows']:,} impressions)"
    )
    print(evaluation["text"])
    print("gate:", evaluation["gate"]["reason"])
    if evaluation.get("report"):
        print("run report:", evaluation["report"]["local"], "|", evaluation["report"]["s3"])
    print("\n== published lists")
    print(
        f"S3   s3://{exported['bucket']}/{exported['manifest_key']}  ({exported['users']:,} users)"
    )
    print(
        f"Redis {redact_url(settings.redis.lookup_url)}  version {published['version']}  "
        f"({published['users']:,} users)"
    )
    print(json.dumps(status(client, settings.redis.key_prefix, surface), default=str, indent=2))
    sample_user = published.get("sample_user")
    if sample_user is not None:
        print("\n== sample lookup: rankflow lookup --user", sample_user)
        print(json.dumps(reader.lookup(int(sample_user), surface).as_dict())[:400], "...")
    print("\n== unknown user gets the fallback list: rankflow lookup --user 4000000000")
    print(json.dumps(reader.lookup(4_000_000_000, surface).as_dict())[:200], "...")
    monitored = read_run_record(settings, ds, f"monitor-{surface}")
    breached = ", ".join(f"{b['metric']} {b['subject']}".strip() for b in monitored["breaches"])
    print(
        f"\n== monitoring: {monitored['figures']} figures in the ops/monitoring table, "
        f"{len(monitored['breaches'])} breached{': ' + breached if breached else ''} "
        "(rankflow health; the Ranking page in `make airflow`)"
    )
    figures = {
        "ds": ds.isoformat(),
        "scored_users": scored["users"],
        "s3_users": exported["users"],
        "redis_users": published["users"],
        "active_users": candidates["users"],
        "ndcg@10": {k: v["ndcg@10"] for k, v in evaluation["table"].items()},
        "ipw_ndcg@10": {k: v.get("ipw_ndcg@10") for k, v in evaluation["table"].items()},
        "truth_ndcg@10": {k: v.get("truth_ndcg@10") for k, v in evaluation["table"].items()},
        "monitoring_breaches": monitored["breaches"],
    }
    return figures


def morning_of_sales(settings: Settings, surface: str) -> dict[str, Any]:
    """Simulate the sales of the morning after the run, repair the lists once, compare."""
    from rankflow.publish.repair import repair_and_record, served_sold_share
    from rankflow.sim.sales import land_simulated_sales

    repair = settings.pipeline["repair"]
    hours = int(repair["demo_sales_hours"])
    start, sold = land_simulated_sales(
        settings, surface, hours, int(repair["demo_sales_per_hour"]), seed=7
    )
    at = start + timedelta(hours=hours)
    before, entries = served_sold_share(settings, surface, at)
    result = repair_and_record(settings, surface, at)
    after, _ = served_sold_share(settings, surface, at)
    print(f"\n== a morning of sales: {sold} items sold {start:%Y-%m-%d %H:%M} .. {at:%H:%M} UTC")
    print(
        f"served entries sold more than an hour before {at:%H:%M}: {before:.3%} of {entries:,} "
        f"before the repair, {after:.3%} after it (rankflow repair-sold: "
        f"{result.entries_removed:,} entries removed from {result.users_repaired:,} lists "
        f"in {result.seconds:.1f} s)"
    )
    return {"sold": sold, "served_sold_share_before": before, "served_sold_share_after": after}


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post_json(url: str, body: dict[str, Any], key: str) -> tuple[dict[str, Any], float]:
    """POST JSON with a bearer key; return the decoded answer and its latency in ms."""
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    return answer, (time.perf_counter() - started) * 1000.0


def search_like_candidates(settings: Settings, ds: date, user_id: int, size: int) -> list[int]:
    """Unsold items of the category of the user's first nightly item: a search results page."""
    from rankflow.runs import read_run_record
    from rankflow.serving.snapshot import load_snapshot
    from rankflow.store.reader import RankingReader

    snapshot = load_snapshot(read_run_record(settings, ds, "materialise-features")["snapshot"])
    reader = RankingReader.from_url(settings.redis.lookup_url, prefix=settings.redis.key_prefix)
    nightly = reader.lookup(user_id, settings.default_surface).items
    rows, known = snapshot.positions(np.asarray(nightly[:1] or [0], np.int64))
    category = snapshot.codes["category"][rows[0]] if known[0] else snapshot.codes["category"][0]
    same = (snapshot.codes["category"] == category) & ~snapshot.is_sold
    picked = snapshot.item_ids[same]
    step = max(len(picked) // size, 1)
    return [int(i) for i in picked[::step][:size]]


@contextmanager
def live_services(settings: Settings) -> Iterator[str]:
    """Run `rankflow serve` (on a free port) and `rankflow stream` for the block; yield the URL."""
    import urllib.request

    from rankflow.ops.live_demo import running

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    print(f"\n== ranking service: rankflow serve --port {port} (make serve runs it on 8800), "
          "with rankflow stream beside it")  # fmt: skip
    with (
        running(["stream", "--consumer", "demo"], "rankflow stream"),
        running(["serve", "--port", str(port)], "rankflow serve") as service,
    ):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if service.poll() is not None:
                problem = service.stderr.read().decode()[-800:] if service.stderr else ""
                raise DemoError(f"rankflow serve exited: {problem}", demo_log(settings))
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as ready:
                    if ready.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise DemoError("rankflow serve was not ready within 120 s", demo_log(settings))
        yield base


def demo_user(settings: Settings, ds: date) -> int:
    """The user the publish step looked up after publishing (the demo's example user)."""
    from rankflow.runs import read_run_record

    record = read_run_record(settings, ds, f"publish-redis-{settings.default_surface}")
    return int(record["sample_user"])


def ranking_service_demo(settings: Settings, ds: date, base: str, key: str) -> dict[str, Any]:
    """Re-rank a search-like candidate set for the demo user through the running service."""
    import statistics

    user = demo_user(settings, ds)
    candidates = search_like_candidates(settings, ds, user, 300)
    body = {"user_id": user, "surface": "search", "candidates": candidates, "k": 10}
    latencies = [post_json(f"{base}/v1/rank", body, key)[1] for _ in range(30)]
    answer, latency = post_json(f"{base}/v1/rank", body, key)
    print(
        f"POST /v1/rank: user {user}, {len(candidates)} candidates of one category "
        "(a search results page), k=10"
    )
    print(json.dumps({k: v for k, v in answer.items() if k != "items"}))
    for place, item in enumerate(answer["items"], 1):
        score = "-" if item["score"] is None else f"{item['score']:.4f}"
        print(f"  {place:2d}. item {item['item_id']}  score {score}")
    median = statistics.median(latencies)
    print(
        f"latency {latency:.1f} ms (median of 30 more: {median:.1f} ms, over HTTP with "
        f"urllib; make bench-realtime measures properly). Try it yourself:\n"
        f'  make serve &\n  curl -s -H "Authorization: Bearer $(cat .rankflow/api-key)" '
        f'-d \'{{"user_id": {user}, "surface": "search", "candidates": '
        f'{candidates[:5]}, "k": 3}}\' http://127.0.0.1:8800/v1/rank'
    )
    return {
        "user_id": user,
        "candidates": len(candidates),
        "fallback": answer["fallback"],
        "model_version": answer["model_version"],
        "feature_version": answer["feature_version"],
        "latency_ms": round(latency, 2),
        "median_latency_ms": round(median, 2),
    }


def demo_calendar(preset: str, now: datetime | None = None) -> GeneratorConfig:
    """The preset's marketplace on a calendar ending yesterday (UTC).

    ``make airflow``'s scheduler then finds yesterday's drops for its first scheduled run; the
    data are the seed's, only the dates move with the day the demo runs.
    """
    return GeneratorConfig.preset(preset, end=yesterday(now))


def demo_log(settings: Settings) -> Path:
    """Return where this demo run keeps the full output of its jobs and of the DAG run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return settings.paths.home / "logs" / f"demo-{stamp}.log"


def with_stream_features(settings: Settings) -> Settings:
    """The demo's settings: the model takes the stream features, as the live morning shows.

    The nightly default leaves them off (``training.stream_features``); the demo turns them on
    with a config overlay its jobs and DAG run read, unless ``RANKFLOW_CONFIG`` names one.
    """
    from rankflow.config import load_settings

    if os.environ.get("RANKFLOW_CONFIG"):
        return settings
    overlay = settings.paths.home / "demo" / "config.yaml"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    overlay.write_text("# written by rankflow demo\ntraining:\n  stream_features: true\n")
    os.environ["RANKFLOW_CONFIG"] = str(overlay)
    return load_settings()


def night_top_k(settings: Settings, preset: str) -> int:
    """The night's K: the tiny catalogue leaves some users fewer than 100 candidates."""
    return min(settings.default_top_k, TINY_TOP_K) if preset == "tiny" else settings.default_top_k


def run_demo(settings: Settings, preset: str = "demo", verbose: bool = False) -> int:
    """Run the whole demo; every stage is skipped when its result already exists."""
    from rankflow.ops import services
    from rankflow.serving.app import api_keys

    settings = with_stream_features(settings)
    began = time.monotonic()
    print("\n".join(services.up(settings)))
    log_path = demo_log(settings)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"full logs: {log_path}" + ("" if verbose else " (rankflow demo --verbose shows them)"))
    config = demo_calendar(preset)
    last = config.last_day
    path = state_file(settings, preset)
    surface = settings.default_surface
    with log_path.open("a", encoding="utf-8") as log:
        try:
            state = ensure_generated(settings, config, read_state(path))
            write_state(path, state)
            state = ensure_history(settings, last, config.start, state, log, verbose)
            write_state(path, state)
            run_nightly_dag(
                settings,
                last,
                {"surface": surface, "top_k": night_top_k(settings, preset), "retrain": True},
                log,
                verbose,
            )
        except DemoError as error:
            print(f"\ndemo stopped: {error}", file=sys.stderr)
            return 1
    figures = report(settings, last, surface)
    figures["sold_item_repair"] = morning_of_sales(settings, surface)
    keys = api_keys()
    if not keys:
        print("\n== ranking service: skipped (RANKFLOW_API_KEYS is not set; `make setup` sets it)")
    else:
        try:
            with live_services(settings) as base:
                key = keys[0].decode()
                figures["ranking_service"] = ranking_service_demo(settings, last, base, key)
                user = demo_user(settings, last)
                figures["live_morning"] = live_morning(settings, last, base, key, user)
        except (DemoError, RuntimeError) as error:
            print(f"\ndemo stopped: {error}", file=sys.stderr)
            return 1
    figures["seconds"] = round(time.monotonic() - began, 1)
    print("\n== demo figures\n" + json.dumps(figures, indent=2))
    return 0

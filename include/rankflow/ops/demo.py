"""``rankflow demo``: simulated marketplace -> history -> one nightly DAG run -> report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rankflow.config import Settings, config_hash, repo_root
from rankflow.sim.marketplace import GeneratorConfig
from rankflow.store.client import redis_client

DAG_ID = "rankflow_nightly"


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
    from rankflow.sim.marketplace import generate_marketplace

    wanted = config_hash({k: str(v) for k, v in asdict(config).items()})
    if state.get("generated") == wanted:
        print(f"raw drops: already generated in {settings.paths.raw}")
        return state
    if settings.paths.home.joinpath("data").exists():
        shutil.rmtree(settings.paths.home / "data")
    summary = generate_marketplace(config, settings.paths.raw)
    print(f"raw drops: generated {summary.impressions:,} impressions in {summary.seconds:.0f}s")
    return {"generated": wanted, "summary": summary.as_dict()}


def ensure_history(
    settings: Settings, last: date, start: date, state: dict[str, Any]
) -> dict[str, Any]:
    """Ingest the days before ``last`` and build their training sets, through the jobs."""
    from rankflow.lake.session import job_command

    first, end = history_window(last, settings)
    if state.get("history") == [start.isoformat(), end.isoformat()]:
        print(f"history: already built ({start} .. {end})")
        return state
    began = time.monotonic()
    for job, first_day in (
        ("ingest", start),
        ("training_set", max(first, start + timedelta(days=1))),
    ):
        command, extra = job_command(settings, job, ["--start", str(first_day), "--ds", str(end)])
        subprocess.run(command, check=True, cwd=repo_root(), env={**os.environ, **extra})
    print(
        f"history: ingested {start} .. {end}, training sets from {first} "
        f"in {time.monotonic() - began:.0f}s"
    )
    return {**state, "history": [start.isoformat(), end.isoformat()]}


def run_nightly_dag(ds: date, conf: dict[str, Any]) -> None:
    """Run the nightly DAG once for ``ds`` in-process, as ``airflow dags test`` would.

    ``python -m rankflow_alerts`` is ``airflow dags test`` without Airflow 3.3.2's crash at the
    end of a successful test run of a DAG with a deadline (see ``plugins/rankflow_alerts.py``).
    """
    command = [
        sys.executable,
        "-m",
        "rankflow_alerts",
        DAG_ID,
        f"{ds.isoformat()}T02:00:00+00:00",
        "--conf",
        json.dumps({"ds": ds.isoformat(), **conf}),
    ]
    subprocess.run(command, check=True, cwd=repo_root())


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
    client = redis_client(settings.redis.url)
    reader = RankingReader.from_url(settings.redis.url, prefix=settings.redis.key_prefix)
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
        f"Redis {settings.redis.url}  version {published['version']}  "
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
    from rankflow.publish.repair import record_repair, run_repair, served_sold_share
    from rankflow.sim.sales import land_simulated_sales

    repair = settings.pipeline["repair"]
    hours = int(repair["demo_sales_hours"])
    start, sold = land_simulated_sales(
        settings, surface, hours, int(repair["demo_sales_per_hour"]), seed=7
    )
    at = start + timedelta(hours=hours)
    before, entries = served_sold_share(settings, surface, at)
    result = run_repair(settings, surface, at)
    record_repair(settings, result)
    after, _ = served_sold_share(settings, surface, at)
    print(f"\n== a morning of sales: {sold} items sold {start:%Y-%m-%d %H:%M} .. {at:%H:%M} UTC")
    print(
        f"served entries sold more than an hour before {at:%H:%M}: {before:.3%} of {entries:,} "
        f"before the repair, {after:.3%} after it (rankflow repair-sold: "
        f"{result.entries_removed:,} entries removed from {result.users_repaired:,} lists "
        f"in {result.seconds:.1f} s)"
    )
    return {"sold": sold, "served_sold_share_before": before, "served_sold_share_after": after}


def run_demo(settings: Settings, preset: str = "demo") -> int:
    """Run the whole demo; every stage is skipped when its result already exists."""
    from rankflow.ops import services

    began = time.monotonic()
    print("\n".join(services.up(settings)))
    config = GeneratorConfig.preset(preset)
    last = config.start + timedelta(days=config.days - 1)
    path = state_file(settings, preset)
    state = ensure_generated(settings, config, read_state(path))
    write_state(path, state)
    state = ensure_history(settings, last, config.start, state)
    write_state(path, state)
    surface = settings.default_surface
    run_nightly_dag(
        last,
        {"surface": surface, "top_k": int(settings.pipeline["scoring"]["top_k"]), "retrain": True},
    )
    figures = report(settings, last, surface)
    figures["sold_item_repair"] = morning_of_sales(settings, surface)
    figures["seconds"] = round(time.monotonic() - began, 1)
    print("\n== demo figures\n" + json.dumps(figures, indent=2))
    return 0

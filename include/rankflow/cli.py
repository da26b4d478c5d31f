"""The ``rankflow`` command: generate data, run the demo, look lists up, roll back, services."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings, load_settings
from rankflow.store.client import redis_client

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    """Write raw drops of the simulated marketplace."""
    from rankflow.sim.marketplace import (
        GeneratorConfig,
        check_room,
        generate_marketplace,
        yesterday,
    )

    overrides = {
        k: v
        for k, v in {"seed": args.seed, "days": args.days, "start": args.start}.items()
        if v is not None
    }
    end = args.end or (None if args.start else yesterday())  # by default: ends yesterday
    if args.users is not None:
        config = GeneratorConfig.for_users(args.users, **overrides)
        config = config if end is None else config.ending(end)
    else:
        config = GeneratorConfig.preset(args.preset, end=end, **overrides)
    raw = Path(args.raw) if args.raw else settings.paths.raw
    check_room(config, raw)
    summary = generate_marketplace(config, raw)
    print(json.dumps({"raw": str(raw), **summary.as_dict()}, default=str))
    return 0


def cmd_services(settings: Settings, args: argparse.Namespace) -> int:
    """Start or stop the embedded services, or write their local secrets once."""
    from rankflow.ops import services
    from rankflow.ops.local_secrets import (
        API_KEY_FILE,
        local_secrets_path,
        write_api_key,
        write_local_secrets,
    )

    if args.action == "secrets":
        path = local_secrets_path(settings)
        made = write_local_secrets(path)
        print(f"{'wrote' if made else 'kept'} the local secrets in {path}", file=sys.stderr)
        key_file = settings.paths.home / API_KEY_FILE
        if write_api_key(key_file, path):
            print(f"wrote the local ranking API key to {key_file}", file=sys.stderr)
        return 0
    lines = services.up(settings) if args.action == "up" else services.down(settings)
    print("\n".join(lines))
    return 0


def cmd_cluster(settings: Settings, args: argparse.Namespace) -> int:
    """Start or stop the local Spark standalone cluster (master, two workers, lake on S3)."""
    from rankflow.ops import cluster

    lines = cluster.up(settings) if args.action == "up" else cluster.down(settings)
    print("\n".join(lines))
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Replay a generated day's morning into the event log, now, at --speed."""
    from dataclasses import asdict

    from rankflow.sim.replay import replay_morning

    done = replay_morning(settings, args.day, args.hours, args.speed)
    print(json.dumps({"day": args.day.isoformat(), "speed": args.speed, **asdict(done)}))
    return 0


def cmd_kafka(settings: Settings, args: argparse.Namespace) -> int:
    """Start or stop the local Kafka broker, or create the event topic on the configured one."""
    from rankflow.ops.kafka import create_topic, kafka_down, kafka_up

    if args.action == "topic":  # any broker (stream.kafka.bootstrap_servers): compose's init
        create_topic(settings)
        print(f"kafka: topic {settings.pipeline['stream']['kafka']['topic']} ready")
        return 0
    lines = kafka_up(settings) if args.action == "up" else kafka_down(settings)
    print("\n".join(lines))
    return 0


def cmd_lookup(settings: Settings, args: argparse.Namespace) -> int:
    """Print one user's published list as a JSON object (fallback list for unknown users)."""
    from rankflow.store.reader import RankingReader

    surface = args.surface or settings.default_surface
    reader = RankingReader.from_url(settings.redis.lookup_url, prefix=settings.redis.key_prefix)
    found = reader.lookup(args.user, surface)
    print(json.dumps(found.as_dict()))
    return 0


def command_session(settings: Settings, app_name: str, *, classic: bool = False) -> SparkSession:
    """A command's Spark: the Connect server ``make up`` starts when configured, else local.

    ``RANKFLOW_SPARK_CONNECT`` is where ``make demo`` runs its steps; a command that shares
    that warm server starts in seconds instead of paying a JVM and Delta's start-up. A server
    that is not listening (``make down``) is said on stderr and a local session is opened.
    ``classic`` (the spark training engine) always opens a session on ``RANKFLOW_SPARK_MASTER``.
    """
    from urllib.parse import urlparse

    from rankflow.lake.session import get_session, listening

    if classic:
        return get_session(settings, app_name, classic=True)
    remote = settings.spark.connect_url
    if remote and not listening(remote):
        where = urlparse(remote)  # the URL may carry a token: name only the address
        print(f"Spark Connect {where.hostname}:{where.port} is not listening: a local session",
              file=sys.stderr)  # fmt: skip
        remote = None
    return get_session(settings, app_name, remote=remote)


def record(settings: Settings, event: str, **values: Any) -> None:
    """Append a manual event to the promotion ledger (through a Spark session of its own)."""
    from rankflow.lake.ledger import LedgerEvent, append_events, now
    from rankflow.ops.lifecycle import actor

    spark = command_session(settings, "rankflow-ledger")
    try:
        append_events(spark, settings, [LedgerEvent(event, now(), actor=actor(), **values)])
    finally:
        spark.stop()


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the previous Redis version again and make its model the champion, together."""
    from rankflow.ops.lifecycle import rollback_release

    if not args.reason:
        raise ValueError("a rollback needs --reason (it is recorded in the promotion ledger)")
    surface = args.surface or settings.default_surface
    done = rollback_release(settings, redis_client(settings.redis.url), surface)
    print(json.dumps(done.as_dict()))
    record(
        settings,
        "rollback",
        surface=surface,
        model_version=done.model_after,
        previous_champion=done.alias.champion_before,
        redis_version=done.redis_after,
        reason=args.reason,
    )
    return 0


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    """List registered models, promote one by hand, roll back, or say who served a user."""
    if args.action == "rollback":
        return cmd_rollback(settings, args)
    if args.action == "list":
        from rankflow.model.registry import list_models

        rows = list_models(settings, limit=args.limit)
        if args.json:
            print(json.dumps(rows, default=str))
        for row in [] if args.json else rows:
            print(
                f"{row['version']:>4}  {row['ds'] or '-':<10}  {row['gate'] or '-':<9}  "
                f"{','.join(row['aliases']) or '-':<27}  {(row['code_version'] or '-')[:12]}"
            )
        return 0
    if args.action == "promote":
        from rankflow.model.registry import mlflow_client, move_champion

        if not args.version or not args.reason:
            raise ValueError("models promote needs a VERSION and --reason (for the ledger)")
        move = move_champion(settings, mlflow_client(settings), args.version)
        print(json.dumps(move.as_dict()))
        record(
            settings,
            "manual_promote",
            model_version=move.champion_after,
            previous_champion=move.champion_before,
            reason=args.reason,
        )
        return 0
    from datetime import UTC, datetime

    from rankflow.lake.ledger import list_of_user, read_ledger, served_at

    at = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    surface = args.surface or settings.default_surface
    spark = command_session(settings, "rankflow-ledger")
    try:
        served = served_at(read_ledger(spark, settings), surface, at)
        answer = served.as_dict()
        if args.user is not None:
            answer["user"] = list_of_user(spark, settings, served, args.user)
    finally:
        spark.stop()
    print(json.dumps(answer, default=str))
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the current and previous Redis versions of a surface with their metadata."""
    from rankflow.store.versions import status

    surface = args.surface or settings.default_surface
    client = redis_client(settings.redis.lookup_url)
    print(json.dumps(status(client, settings.redis.key_prefix, surface), default=str, indent=2))
    return 0


def utc_time(text: str) -> datetime:
    """Parse an ISO time; one without a zone is UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_repair_sold(settings: Settings, args: argparse.Namespace) -> int:
    """Remove the items sold so far from the lists readers get now, in place."""
    from rankflow.publish.repair import repair_and_record

    result = repair_and_record(settings, args.surface or settings.default_surface, args.at)
    print(json.dumps(result.as_dict()))
    return 0


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """Print the latest monitoring figures, the live sold-item share and breached thresholds."""
    from rankflow.monitoring.history import history_rows, latest_day
    from rankflow.monitoring.rules import Figure, breaches, judge
    from rankflow.publish.repair import last_repair, served_sold_share

    surface = args.surface or settings.default_surface
    rows = history_rows(settings, surface)
    latest = latest_day(rows)
    share, entries = served_sold_share(settings, surface, args.at)
    repair = last_repair(settings, surface)
    live = judge(
        [Figure("lists", "served_sold_share", share)], settings.pipeline["monitoring"], rows
    )
    breached = [*breaches(latest), *({**b, "live": True} for b in breaches(live))]
    keys = ("group", "metric", "subject", "value", "lower", "upper", "breached")
    health = {
        "surface": surface,
        "ds": latest[0]["ds"] if latest else None,
        "served_entries": entries,
        "served_sold_share": share,
        "sold_entries_removed": repair["entries_removed"] if repair else None,
        "last_repair": repair,
        "breaches": breached,
        "figures": [{k: row[k] for k in keys} for row in latest],
    }
    if args.json:
        print(json.dumps(health, default=str))
    else:
        print(health_text(health))
    return 1 if breached and args.fail_on_breach else 0


def health_text(health: dict[str, Any]) -> str:
    """Render ``rankflow health`` for people: breaches first, then the figures by group."""
    lines = [f"surface {health['surface']}, latest monitored day: {health['ds'] or 'none yet'}"]
    lines.append(
        f"served list entries: {health['served_entries']:,}; sold more than an hour ago: "
        f"{health['served_sold_share']:.4%}; last repair removed "
        f"{health['sold_entries_removed'] if health['last_repair'] else 'nothing yet'}"
    )
    if health["breaches"]:
        lines.append(f"BREACHED ({len(health['breaches'])}):")
        for b in health["breaches"]:
            bounds = f"[{b['lower'] if b['lower'] is not None else '-inf'}, "
            bounds += f"{b['upper'] if b['upper'] is not None else 'inf'}]"
            subject = f" {b['subject']}" if b["subject"] else ""
            lines.append(f"  {b['metric']}{subject} = {b['value']:.4g} outside {bounds}")
    else:
        lines.append("no breached threshold")
    drift = sorted(
        (f for f in health["figures"] if f["metric"] == "feature_psi"), key=lambda f: -f["value"]
    )
    for figure in health["figures"]:
        if figure["group"] != "feature" and figure["value"] is not None:
            lines.append(
                f"  {figure['group']:8} {figure['metric']:32} {figure['subject']:24} "
                f"{figure['value']:.4g}"
            )
    if drift:
        top = ", ".join(f"{f['subject']} {f['value']:.3f}" for f in drift[:3])
        lines.append(f"  feature drift (PSI), largest: {top}")
    return "\n".join(lines)


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Generate the demo marketplace, build its history, run the nightly DAG once, report."""
    from rankflow.ops.demo import run_demo

    return run_demo(settings, preset=args.preset, verbose=args.verbose)


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    """Train and register a model for --ds, or rebuild a registered one from its lineage."""
    from rankflow.model.registry import load_lineage
    from rankflow.model.spark_engine import training_engine
    from rankflow.steps.train import run_reproduce, run_train

    if (args.ds is None) == (args.reproduce is None):
        raise ValueError("give exactly one of --ds (train) and --reproduce VERSION")
    if args.reproduce:
        engine = load_lineage(settings, args.reproduce).get("training_engine", {})
        on_spark = engine.get("engine") == "spark"
    else:
        on_spark = training_engine(settings.pipeline["training"]) == "spark"
    spark = command_session(settings, "rankflow-train", classic=on_spark)
    try:
        if args.reproduce:
            result = run_reproduce(spark, settings, args.reproduce)
        else:
            result = run_train(spark, settings, args.ds)
    finally:
        spark.stop()
    print(json.dumps(result, default=str))
    return 0 if result.get("identical", True) else 1


def cmd_benchmark(settings: Settings, args: argparse.Namespace) -> int:
    """Run the trainer and evaluator on a public benchmark's folds and print the figures."""
    import os

    from rankflow.evaluation.benchmark import (
        default_data_dir,
        format_report,
        run_mq2008,
        spark_trainer,
    )
    from rankflow.model.spark_engine import worker_count

    folder = Path(args.data or os.environ.get("RANKFLOW_MQ2008") or default_data_dir())
    if args.engine == "local":
        result = run_mq2008(folder, settings, convention=args.convention)
    else:
        spark = command_session(settings, "rankflow-benchmark", classic=True)
        try:
            workers = worker_count(spark, int(settings.pipeline["training"]["spark_workers"]))
            trainer = spark_trainer(spark, workers)
            result = run_mq2008(folder, settings, args.convention, trainer, f"spark ({workers})")
        finally:
            spark.stop()
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def cmd_warm(settings: Settings, args: argparse.Namespace) -> int:
    """Download Delta Lake's and hadoop-aws's jars once, and check Delta works."""
    from rankflow.lake.session import fetch_s3a_jars, warm_spark

    print(fetch_s3a_jars(settings))  # for a lake on s3a:// (make cluster-up)
    print(warm_spark(settings))
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run the ranking service (uvicorn, one process per worker) until interrupted."""
    import uvicorn

    from rankflow.serving.app import api_keys

    if not api_keys():
        raise RuntimeError(
            "set RANKFLOW_API_KEYS (make setup writes a local key): refusing to serve"
        )
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # one /metrics for every worker: each writes its values here (emptied at each start)
        import shutil

        folder = settings.paths.home / "run" / f"serve-metrics-{args.port}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    uvicorn.run(
        "rankflow.ops.service:create_service",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


def cmd_stream(settings: Settings, args: argparse.Namespace) -> int:
    """Run the stream updater (or with --land the landing) over the event log until stopped."""
    from rankflow.ops.stream import run_stream

    run_stream(settings, args.partitions, args.consumer, args.land, args.metrics_port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="rankflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    generate = sub.add_parser("generate", help="write raw drops of a simulated marketplace")
    generate.add_argument(
        "--preset",
        choices=["tiny", "demo", "100k", "300k", "1m"],
        default="demo",
        help="a size: the demo (24,500 users by the last day) or the demo grown in proportion",
    )
    generate.add_argument(
        "--users", type=int, help="grow the demo to this many users by its last day (any size)"
    )
    generate.add_argument("--seed", type=int)
    generate.add_argument("--days", type=int)
    calendar = generate.add_mutually_exclusive_group()
    calendar.add_argument("--start", type=date.fromisoformat, help="first day")
    calendar.add_argument("--end", type=date.fromisoformat, help="last day (default: yesterday)")
    generate.add_argument("--raw", help="output folder (default: $RANKFLOW_HOME/data/raw)")
    generate.set_defaults(func=cmd_generate)

    replay = sub.add_parser("replay", help="replay a generated day's morning into the event log")
    replay.add_argument("--day", type=date.fromisoformat, required=True, help="a generated day")
    replay.add_argument("--hours", type=float, default=6.0, help="from midnight (default 6)")
    replay.add_argument("--speed", type=float, default=600.0, help="times real time (600)")
    replay.set_defaults(func=cmd_replay)

    services = sub.add_parser(
        "services", help="start or stop the local Redis, S3 endpoint and Spark Connect server"
    )
    services.add_argument(
        "action",
        choices=["up", "down", "secrets"],
        help="secrets: write the local Redis users' passwords once ($RANKFLOW_HOME)",
    )
    services.set_defaults(func=cmd_services)

    spark_cluster = sub.add_parser(
        "cluster", help="start or stop a Spark standalone master and two workers on 127.0.0.1"
    )
    spark_cluster.add_argument("action", choices=["up", "down"])
    spark_cluster.set_defaults(func=cmd_cluster)

    kafka = sub.add_parser(
        "kafka",
        help="start or stop a single-node Kafka broker on 127.0.0.1 (up, down), or create the "
        "event topic with stream.partitions partitions on the configured broker (topic)",
    )
    kafka.add_argument("action", choices=["up", "down", "topic"])
    kafka.set_defaults(func=cmd_kafka)

    lookup = sub.add_parser("lookup", help="print a user's ranked list from Redis as JSON")
    lookup.add_argument("--user", type=int, required=True)
    lookup.add_argument("--surface")
    lookup.set_defaults(func=cmd_lookup)

    rollback = sub.add_parser(
        "rollback", help="serve the previous version and its model again (= models rollback)"
    )
    rollback.add_argument("--surface")
    rollback.add_argument("--reason", required=True, help="why (recorded in the ledger)")
    rollback.set_defaults(func=cmd_rollback)

    models = sub.add_parser(
        "models", help="list models, promote or roll back (MLflow aliases + Redis + ledger)"
    )
    models.add_argument("action", choices=["list", "promote", "rollback", "which"])
    models.add_argument("version", nargs="?", help="model version to promote")
    models.add_argument("--reason", help="why (recorded in the ledger; promote and rollback)")
    models.add_argument("--surface")
    models.add_argument("--limit", type=int, default=20, help="list: newest versions shown")
    models.add_argument("--json", action="store_true", help="list: one JSON array")
    models.add_argument(
        "--at", help="which: ISO time (default now): the version and model readers got then"
    )
    models.add_argument("--user", type=int, help="which: also the list this user got then")
    models.set_defaults(func=cmd_models)

    status = sub.add_parser("status", help="show the published Redis versions")
    status.add_argument("--surface")
    status.set_defaults(func=cmd_status)

    repair = sub.add_parser(
        "repair-sold", help="remove items sold since the lists were built from the served lists"
    )
    repair.add_argument("--surface")
    repair.add_argument("--at", type=utc_time, help="ISO time (default now, UTC)")
    repair.set_defaults(func=cmd_repair_sold)

    health = sub.add_parser(
        "health", help="latest monitoring figures, breached thresholds, sold items still served"
    )
    health.add_argument("--surface")
    health.add_argument("--at", type=utc_time, help="ISO time (default now, UTC)")
    health.add_argument("--json", action="store_true", help="print one JSON object")
    health.add_argument(
        "--fail-on-breach",
        action="store_true",
        help="exit with status 1 if a threshold is breached",
    )
    health.set_defaults(func=cmd_health)

    demo = sub.add_parser("demo", help="generate data and run the nightly DAG once, end to end")
    demo.add_argument("--preset", choices=["tiny", "demo"], default="demo")
    demo.add_argument(
        "--verbose", action="store_true", help="show the jobs' and Airflow's output, not only a log"
    )
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train a model for --ds, or --reproduce a registered one")
    train.add_argument("--ds", type=date.fromisoformat, help="logical date to train for")
    train.add_argument(
        "--reproduce",
        metavar="VERSION",
        help="rebuild a registered model from its lineage; exit 1 unless byte-identical",
    )
    train.set_defaults(func=cmd_train)

    benchmark = sub.add_parser(
        "benchmark", help="validate the trainer on a public learning-to-rank benchmark"
    )
    benchmark.add_argument("dataset", choices=["mq2008"])
    benchmark.add_argument(
        "--data", help="folder with S1.txt .. S5.txt (default: $RANKFLOW_MQ2008 or ../shared)"
    )
    benchmark.add_argument("--json", action="store_true", help="print one JSON object")
    benchmark.add_argument(
        "--convention",
        choices=["one", "zero", "skip"],
        help="NDCG/MAP of queries without a relevant document (default: one, XGBoost's)",
    )
    benchmark.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="fit every model in this process, or with SparkXGBRanker on RANKFLOW_SPARK_MASTER",
    )
    benchmark.set_defaults(func=cmd_benchmark)

    serve = sub.add_parser("serve", help="run the ranking service (POST /v1/rank)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8800)
    serve.add_argument("--workers", type=int, default=1, help="processes (one per core)")
    serve.set_defaults(func=cmd_serve)

    stream = sub.add_parser("stream", help="run the stream updater (event log -> fresh features)")
    stream.add_argument("--partitions", help="comma-separated partitions (default: all)")
    stream.add_argument("--consumer", help="a stable name a restart reuses (default: host-pid)")
    stream.add_argument(
        "--land", action="store_true", help="land the log as raw drops instead (docs/stream.md)"
    )
    stream.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics (event-to-visible lag per partition) on this port",
    )
    stream.set_defaults(func=cmd_stream)

    warm = sub.add_parser("warm-spark", help="fetch the Delta jars once and check Spark works")
    warm.set_defaults(func=cmd_warm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rankflow`` command line."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(load_settings(), args))
    except (RuntimeError, ValueError, FileNotFoundError) as error:  # incl. refused lifecycle steps
        print(f"rankflow {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

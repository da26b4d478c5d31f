"""The ``rankflow`` command: generate data, run the demo, look lists up, roll back, services."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from rankflow.config import Settings, load_settings


def cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    """Write raw drops of the simulated marketplace."""
    from rankflow.generate import GeneratorConfig, generate_marketplace

    overrides = {
        k: v
        for k, v in {"seed": args.seed, "days": args.days, "start": args.start}.items()
        if v is not None
    }
    config = GeneratorConfig.preset(args.preset, **overrides)
    raw = Path(args.raw) if args.raw else settings.paths.raw
    summary = generate_marketplace(config, raw)
    print(json.dumps({"raw": str(raw), **summary.as_dict()}, default=str))
    return 0


def cmd_services(settings: Settings, args: argparse.Namespace) -> int:
    """Start or stop the embedded Redis server and S3 endpoint."""
    from rankflow import services

    lines = services.up(settings) if args.action == "up" else services.down(settings)
    print("\n".join(lines))
    return 0


def cmd_lookup(settings: Settings, args: argparse.Namespace) -> int:
    """Print one user's published list as a JSON object (fallback list for unknown users)."""
    from rankflow.serving import RankingReader

    surface = args.surface or settings.pipeline["scoring"]["surface"]
    reader = RankingReader.from_url(settings.redis.url, prefix=settings.redis.key_prefix)
    found = reader.lookup(args.user, surface)
    print(json.dumps(found.as_dict()))
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    """Make the previous Redis version current again (one atomic step)."""
    import redis

    from rankflow.serving import rollback

    surface = args.surface or settings.pipeline["scoring"]["surface"]
    client = redis.Redis.from_url(settings.redis.url)
    result = rollback(client, settings.redis.key_prefix, surface)
    print(json.dumps(result.as_dict()))
    return 0 if result.status == "rolled_back" else 1


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the current and previous Redis versions of a surface with their metadata."""
    import redis

    from rankflow.serving import status

    surface = args.surface or settings.pipeline["scoring"]["surface"]
    client = redis.Redis.from_url(settings.redis.url)
    print(json.dumps(status(client, settings.redis.key_prefix, surface), default=str, indent=2))
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Generate the demo marketplace, build its history, run the nightly DAG once, report."""
    from rankflow.demo import run_demo

    return run_demo(settings, preset=args.preset)


def cmd_benchmark(settings: Settings, args: argparse.Namespace) -> int:
    """Run the trainer and evaluator on a public benchmark's folds and print the figures."""
    import os

    from rankflow.benchmark import default_data_dir, format_report, run_mq2008

    folder = Path(args.data or os.environ.get("RANKFLOW_MQ2008") or default_data_dir())
    result = run_mq2008(folder, settings, convention=args.convention)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def cmd_warm(settings: Settings, args: argparse.Namespace) -> int:
    """Download Delta Lake's jars into the local Ivy cache once, and check Delta works."""
    from rankflow.spark import warm_spark

    print(warm_spark(settings))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="rankflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    generate = sub.add_parser("generate", help="write raw drops of a simulated marketplace")
    generate.add_argument("--preset", choices=["tiny", "demo"], default="demo")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--days", type=int)
    generate.add_argument("--start", type=date.fromisoformat)
    generate.add_argument("--raw", help="output folder (default: $RANKFLOW_HOME/data/raw)")
    generate.set_defaults(func=cmd_generate)

    services = sub.add_parser("services", help="start or stop the local Redis and S3 endpoint")
    services.add_argument("action", choices=["up", "down"])
    services.set_defaults(func=cmd_services)

    lookup = sub.add_parser("lookup", help="print a user's ranked list from Redis as JSON")
    lookup.add_argument("--user", type=int, required=True)
    lookup.add_argument("--surface")
    lookup.set_defaults(func=cmd_lookup)

    rollback = sub.add_parser("rollback", help="switch readers back to the previous version")
    rollback.add_argument("--surface")
    rollback.set_defaults(func=cmd_rollback)

    status = sub.add_parser("status", help="show the published Redis versions")
    status.add_argument("--surface")
    status.set_defaults(func=cmd_status)

    demo = sub.add_parser("demo", help="generate data and run the nightly DAG once, end to end")
    demo.add_argument("--preset", choices=["tiny", "demo"], default="demo")
    demo.set_defaults(func=cmd_demo)

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
    benchmark.set_defaults(func=cmd_benchmark)

    warm = sub.add_parser("warm-spark", help="fetch the Delta jars once and check Spark works")
    warm.set_defaults(func=cmd_warm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rankflow`` command line."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(load_settings(), args))
    except (RuntimeError, ValueError, FileNotFoundError) as error:
        print(f"rankflow {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Entry point of the ``jobs/*.py`` scripts: arguments, session, the step's ``run``, exit status."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from rankflow.config import Settings, load_settings

log = logging.getLogger("rankflow")
# great_expectations logs about 200 INFO lines when imported (`_docs_decorators`): they filled
# the 40 last lines a failed task shows of its step's output, hiding the step's own error
QUIET_LOGGERS = ("great_expectations", "py4j")
# exit status of a step stopped by a data-quality gate: the orchestrator must not retry it
BLOCKED_EXIT_CODE = 3
# exit status of evaluate when the promotion gate rejected the model: nothing failed, the
# champion keeps serving and the night goes on (the orchestrator skips the promotion)
REJECTED_EXIT_CODE = 4


def parse_args(step: str, argv: Sequence[str]) -> argparse.Namespace:
    """Parse the arguments every job accepts (a day, or a range of days for backfills)."""
    parser = argparse.ArgumentParser(prog=f"jobs/{step}.py", description=f"rankflow {step} step")
    parser.add_argument(
        "--ds", type=date.fromisoformat, required=True, help="logical date (YYYY-MM-DD)"
    )
    parser.add_argument(
        "--start", type=date.fromisoformat, help="first day of a range ending at --ds (backfill)"
    )
    parser.add_argument("--surface", default=None, help="surface of the ranked lists")
    parser.add_argument("--top-k", type=int, default=None, help="length of each ranked list")
    parser.add_argument("--model", default="champion", help="model alias or version to score with")
    parser.add_argument("--run-id", default="manual", help="orchestrator run id (publication id)")
    parser.add_argument(
        "--promote",
        choices=["yes", "no"],
        default="yes",
        help="evaluate: make an accepted model champion at once (no: a later step does)",
    )
    args = parser.parse_args(argv)
    if args.start and args.start > args.ds:
        parser.error(f"--start {args.start} is after --ds {args.ds}")
    return args


StepRun = Callable[[Any, Settings, argparse.Namespace], Any]


def configure_logging() -> None:
    """Log INFO and up to stderr, except the libraries whose INFO lines bury the step's own."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(run: StepRun, argv: Sequence[str] | None = None) -> int:
    """Run one step's ``run`` in a Spark session and print its result as one JSON line."""
    step = run.__module__.rpartition(".")[2]  # rankflow.steps.<step>: the task id
    from rankflow.lake.session import get_session
    from rankflow.lake.storage import check_lake_access

    configure_logging()
    args = parse_args(step, sys.argv[1:] if argv is None else argv)
    settings = load_settings()
    check_lake_access(settings)  # an unreachable S3 lake says which setting is missing
    spark = get_session(settings, f"rankflow-{step}")
    from rankflow.evaluation.gate import GateRejectedError
    from rankflow.quality.gates import DataQualityError

    try:
        result = run(spark, settings, args)
    except DataQualityError as error:
        log.error("%s blocked for %s: %s", step, args.ds, error)
        return BLOCKED_EXIT_CODE
    except GateRejectedError as error:
        log.warning("%s for %s: %s", step, args.ds, error)
        return REJECTED_EXIT_CODE
    except Exception as error:
        log.error("%s failed for %s: %s", step, args.ds, error)
        raise
    finally:
        spark.stop()
    print(json.dumps({"step": step, "ds": args.ds.isoformat(), "result": result}, default=str))
    return 0

"""The two training engines on the same rows: ``make bench-engines`` (docs/scale.md).

The ``spark`` engine (``training.engine: spark``, xgboost.spark's SparkXGBRanker on the
executors) must rank as well as the ``local`` one: on the demo marketplace its NDCG@10 and IPW
NDCG@10 on the held-out day are within 0.005 of the local engine's. This benchmark builds the
demo's history in a home of its own (``.rankflow/bench/engines/<preset>``: generate, ingest,
training sets, through the demo's jobs), then, on one classic Spark session
(``RANKFLOW_SPARK_MASTER``, ``local[*]`` by default), fits the configured ranker on the last
training window with each engine, the spark engine twice (a rerun must give the same bytes),
scores the held-out day with each model and prints the evaluator's table (NDCG@10, IPW NDCG@10,
truth NDCG@10), the differences against the bound and each fit's seconds. It is a benchmark, not
a test: it exits 0 once it has measured, 1 when a difference exceeds its bound.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

BOUND = 0.005
METRICS = ("ndcg@10", "ipw_ndcg@10", "truth_ndcg@10")


def say(message: str) -> None:
    """Print a progress line at once."""
    print(message, flush=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="generator preset (demo, tiny, 100k...)")
    parser.add_argument("--workers", type=int, default=0, help="XGBoost workers (0: every slot)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--verbose", action="store_true", help="show the history jobs' output")
    return parser.parse_args(argv)


def build_history(settings: Any, preset: str, verbose: bool) -> Any:
    """Generate the marketplace and build the training sets up to its last day; that day."""
    from rankflow.ops import demo
    from rankflow.sim.marketplace import GeneratorConfig

    config = GeneratorConfig.preset(preset)
    state_path = demo.state_file(settings, f"engines-{preset}")
    state = demo.ensure_generated(settings, config, demo.read_state(state_path))
    demo.write_state(state_path, state)
    log_path = settings.paths.home / "logs" / "history.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:
        # the training sets through the last day: the last day is the held-out one
        after = config.last_day + timedelta(days=1)
        state = demo.ensure_history(settings, after, config.start, state, log, verbose)
    demo.write_state(state_path, state)
    return config.last_day


def fit_both(spark: Any, settings: Any, ds: Any, workers: int) -> dict[str, Any]:
    """Fit the configured ranker with each engine (spark twice); bytes and seconds of each."""
    from rankflow.lake.tables import table_versions
    from rankflow.model.fit import model_bytes, training_window
    from rankflow.model.spark_engine import worker_count
    from rankflow.steps.train import local_rows, spark_rows

    config = settings.pipeline["training"]
    window = training_window(ds, config)
    version = table_versions(spark, settings)["silver/training_set"]
    debiasing = str(config["debiasing"])
    workers = worker_count(spark, workers)
    fits: dict[str, Any] = {"window": window, "workers": workers}
    runs = (("local", None), ("spark", workers), ("spark rerun", workers))
    for name, count in runs:
        started = time.perf_counter()
        if count is None:
            data: Any = local_rows(spark, settings, ds, window, version)
        else:
            data = spark_rows(spark, settings, ds, window, version, count)
        try:
            fitted = data.fit(config, debiasing)
        finally:
            data.release()
        seconds = time.perf_counter() - started
        fits[name] = {
            "bytes": model_bytes(fitted.booster),
            "seconds": seconds,
            "best_iteration": fitted.best_iteration,
            "rows": data.train_rows + data.validation_rows,
        }
        say(f"{name:12} fitted in {seconds:6.1f} s, best iteration {fitted.best_iteration}")
    return fits


def evaluate_both(spark: Any, settings: Any, ds: Any, fits: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's table of both models on the held-out day."""
    from rankflow.evaluation.offline import evaluation_table, predict
    from rankflow.steps.evaluate import examination_curve, held_out_rows

    window = fits["window"]
    frame = held_out_rows(spark, settings, ds)
    examination = examination_curve(spark, settings, window.train_start, window.validation_end)
    rankers = {name: predict(fits[name]["bytes"], frame) for name in ("local", "spark")}
    return evaluation_table(frame, rankers, settings.pipeline["evaluation"], examination)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the history, fit with both engines, evaluate, print; 1 when a bound is missed."""
    from rankflow.config import load_settings
    from rankflow.evaluation.offline import format_table
    from rankflow.lake.session import get_session

    options = parse_args(sys.argv[1:] if argv is None else argv)
    base = load_settings()
    home = options.workdir or base.paths.home / "bench" / "engines" / options.preset
    os.environ["RANKFLOW_HOME"] = str(home)
    settings = load_settings()
    say(f"== {options.preset}: home {home}")
    ds = build_history(settings, options.preset, options.verbose)
    spark = get_session(settings, "rankflow-bench-engines", classic=True)
    try:
        fits = fit_both(spark, settings, ds, options.workers)
        table = evaluate_both(spark, settings, ds, fits)
    finally:
        spark.stop()
    window = fits["window"]
    say(
        f"\nheld-out day {ds}; fitted on {window.train_start} .. {window.validation_end} "
        f"({fits['local']['rows']:,} rows); spark engine on {fits['workers']} workers"
    )
    say(format_table(table))
    failed = False
    for metric in METRICS:
        if metric not in table["local"]:
            continue
        difference = table["spark"][metric] - table["local"][metric]
        bounded = metric != "truth_ndcg@10"  # the simulator's truth: shown, not bounded
        within = abs(difference) <= BOUND
        failed |= bounded and not within
        verdict = ("within" if within else "OUTSIDE") + f" +-{BOUND}" if bounded else "(shown)"
        say(f"{metric:15} spark - local = {difference:+.4f} {verdict}")
    digests = {name: hashlib.sha256(fits[name]["bytes"]).hexdigest()[:16] for name in fits
               if isinstance(fits[name], dict) and "bytes" in fits[name]}  # fmt: skip
    identical = digests["spark"] == digests["spark rerun"]
    say(f"spark rerun: {'identical bytes' if identical else 'DIFFERENT bytes'} ({digests})")
    ratio = fits["spark"]["seconds"] / fits["local"]["seconds"]
    say(f"fit seconds: local {fits['local']['seconds']:.1f}, spark {fits['spark']['seconds']:.1f}"
        f" ({ratio:.2f}x the local engine, rows read and gated included)")  # fmt: skip
    return 1 if failed or not identical else 0


if __name__ == "__main__":
    sys.exit(main())

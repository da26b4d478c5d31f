"""The two training engines on the same rows: ``make bench-engines`` (docs/scale.md).

The ``spark`` engine (``training.engine: spark``, xgboost.spark's SparkXGBRanker on the
executors) must rank as well as the ``local`` one: on the demo marketplace its NDCG@10 and IPW
NDCG@10 on the held-out day are within 0.005 of the local engine's. This benchmark builds the
demo's history in a home of its own (``.rankflow/bench/engines/<preset>``: generate, ingest,
training sets, through the demo's jobs), then, on one classic Spark session
(``RANKFLOW_SPARK_MASTER``, ``local[*]`` by default), fits the configured ranker on the last
training window with each engine for ``--seeds`` seeds (5: one seed's model differs from the
next by about as much as the bound, so the engines are compared on the mean over seeds, and the
configured seed's difference is shown too), refits the spark engine's first seed (a rerun must
give the same bytes), scores the held-out day with every model and prints the evaluator's table
(NDCG@10, IPW NDCG@10, truth NDCG@10), the differences against the bound and the fits' seconds.
It is a benchmark, not a test: it exits 0 once it has measured, 1 when a bound is missed.
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
    parser.add_argument("--seeds", type=int, default=5, help="seeds fitted by each engine")
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
        if state.get("features") != config.last_day.isoformat():  # the evaluator's attributes
            run_job(settings, "features", config.last_day, log)
            demo.write_state(state_path, {**state, "features": config.last_day.isoformat()})
    return config.last_day


def run_job(settings: Any, job: str, ds: Any, log: Any) -> None:
    """Run one of the DAG's jobs for a day as the demo does (its Connect server or a submit)."""
    import subprocess

    from rankflow.config import repo_root
    from rankflow.lake.session import job_command

    command, extra = job_command(settings, job, ["--ds", ds.isoformat()])
    done = subprocess.run(
        command, cwd=repo_root(), env={**os.environ, **extra}, stdout=log, stderr=log
    )
    if done.returncode != 0:
        raise SystemExit(f"the {job} job failed for {ds}: see {log.name}")


def fit_engines(spark: Any, settings: Any, ds: Any, workers: int, seeds: int) -> dict[str, Any]:
    """Fit the configured ranker with each engine for ``seeds`` seeds (spark's first twice)."""
    from rankflow.lake.tables import table_versions
    from rankflow.model.fit import model_bytes, training_window
    from rankflow.model.spark_engine import worker_count
    from rankflow.steps.train import local_rows, spark_rows

    config = settings.pipeline["training"]
    window = training_window(ds, config)
    version = table_versions(spark, settings)["silver/training_set"]
    debiasing = str(config["debiasing"])
    workers = worker_count(spark, workers)
    first = int(config["seed"])
    fits: dict[str, Any] = {"window": window, "workers": workers, "models": {}, "seconds": {}}
    for engine in ("local", "spark"):
        started = time.perf_counter()
        if engine == "local":
            data: Any = local_rows(spark, settings, ds, window, version)
        else:
            data = spark_rows(spark, settings, ds, window, version, workers)
        read = time.perf_counter() - started
        fits["rows"] = data.train_rows + data.validation_rows
        plan = [first + n for n in range(seeds)] + ([first] if engine == "spark" else [])
        try:
            for number, seed in enumerate(plan):
                started = time.perf_counter()
                fitted = data.fit({**config, "seed": seed}, debiasing)
                seconds = time.perf_counter() - started
                name = f"{engine} {seed}" + (" rerun" if number == seeds else "")
                fits["models"][name] = model_bytes(fitted.booster)
                fits["seconds"].setdefault(engine, []).append(seconds)
                say(f"{name:16} fitted in {seconds:6.1f} s, best iteration "
                    f"{fitted.best_iteration} (rows read and gated in {read:.1f} s)")  # fmt: skip
        finally:
            data.release()
    return fits


def evaluate_models(spark: Any, settings: Any, ds: Any, fits: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's table of every model on the held-out day."""
    from rankflow.evaluation.offline import evaluation_table, predict
    from rankflow.steps.evaluate import examination_curve, held_out_rows

    window = fits["window"]
    frame = held_out_rows(spark, settings, ds)
    examination = examination_curve(spark, settings, window.train_start, window.validation_end)
    rankers = {
        name: predict(raw, frame) for name, raw in fits["models"].items() if "rerun" not in name
    }
    return evaluation_table(frame, rankers, settings.pipeline["evaluation"], examination)


def compare(table: dict[str, Any], first_seed: int) -> bool:
    """Print each metric's difference (configured seed, and the mean over seeds); True if within."""
    import statistics

    within_all = True
    for metric in METRICS:
        if metric not in table["local " + str(first_seed)]:
            continue
        values = {
            engine: [row[metric] for name, row in table.items() if name.startswith(engine)]
            for engine in ("local", "spark")
        }
        single = table[f"spark {first_seed}"][metric] - table[f"local {first_seed}"][metric]
        mean = statistics.fmean(values["spark"]) - statistics.fmean(values["local"])
        bounded = metric != "truth_ndcg@10"  # the simulator's truth: shown, not bounded
        within = abs(mean) <= BOUND
        within_all &= within or not bounded
        verdict = ("within" if within else "OUTSIDE") + f" +-{BOUND}" if bounded else "(shown)"
        spread = {e: f"{min(v):.4f}..{max(v):.4f}" for e, v in values.items()}
        say(f"{metric:14} spark - local: seed {first_seed} {single:+.4f}, mean of "
            f"{len(values['local'])} seeds {mean:+.4f} {verdict}; range over seeds "
            f"local {spread['local']}, spark {spread['spark']}")  # fmt: skip
    return within_all


def main(argv: Sequence[str] | None = None) -> int:
    """Build the history, fit with both engines, evaluate, print; 1 when a bound is missed."""
    import statistics

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
        fits = fit_engines(spark, settings, ds, options.workers, options.seeds)
        table = evaluate_models(spark, settings, ds, fits)
    finally:
        spark.stop()
    window = fits["window"]
    first = int(settings.pipeline["training"]["seed"])
    say(
        f"\nheld-out day {ds}; fitted on {window.train_start} .. {window.validation_end} "
        f"({fits['rows']:,} rows); spark engine on {fits['workers']} workers"
    )
    say(format_table(table))
    within = compare(table, first)
    models = fits["models"]
    identical = models[f"spark {first}"] == models[f"spark {first} rerun"]
    digest = hashlib.sha256(models[f"spark {first}"]).hexdigest()[:16]
    say(
        f"spark rerun of seed {first}: {'identical' if identical else 'DIFFERENT'} bytes ({digest})"
    )
    local, spark_s = (statistics.median(fits["seconds"][e]) for e in ("local", "spark"))
    say(f"median fit seconds: local {local:.1f}, spark {spark_s:.1f} ({spark_s / local:.2f}x)")
    return 0 if within and identical else 1


if __name__ == "__main__":
    sys.exit(main())

"""The MQ2008 benchmark through the spark engine runs beside the rest of the suite.

It fits 51 models, each a SparkXGBRanker barrier job that spends about 5 s starting its
workers and XGBoost's collective with the processor idle (81 s of CPU in 341 s). Run in line it
adds six minutes to ``make test``; started when its test is collected and awaited by that test,
moved to the end of the run, it overlaps the other tests instead.
"""

from __future__ import annotations

import pytest

from mq2008_runs import BACKGROUND, DATA, BenchmarkRun

SPARK_TEST = "test_the_spark_engine_reaches_the_local_engines_five_fold_mean"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the spark engine's run now and move its test to the end of the session."""
    chosen = [item for item in items if item.name == SPARK_TEST]
    if not chosen or config.option.collectonly or not (DATA / "S1.txt").exists():
        return
    for item in chosen:
        items.remove(item)
        items.append(item)
    BACKGROUND["spark"] = BenchmarkRun(("--engine", "spark")).start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop a background run the session did not wait for (-x, interrupted)."""
    run = BACKGROUND.pop("spark", None)
    if run is not None:
        run.stop()

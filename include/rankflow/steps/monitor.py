"""The nightly monitor step: measure the run with Spark, judge the figures, append the history.

Runs after publishing. Big inputs stay in Spark and only histograms and aggregates reach the
driver: drift compares a fixed hash sample of users (``monitoring.drift_sample_percent``) on both
sides, so its cost does not grow with the whole user base.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.monitoring.history import history, write_history
from rankflow.monitoring.measures import (
    feature_drift,
    list_health,
    offline_figures,
    publish_figures,
    relative_change,
    score_figures,
    served_recall,
    skew_figures,
    sold_served_figures,
)
from rankflow.monitoring.rules import breaches, judge

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_monitor(
    spark: SparkSession, settings: Settings, ds: date, surface: str, run_id: str
) -> dict[str, Any]:
    """Measure the night's run, judge every figure, write the day's rows; return the breaches."""
    from rankflow.publish.repair import last_repair, served_sold_share
    from rankflow.runs import read_run_record, write_run_record

    scored = read_run_record(settings, ds, f"score-{surface}")
    model_version = str(scored["model_version"])
    past = history(spark, settings, ds, surface)
    figures = [
        *feature_drift(spark, settings, ds, model_version),
        *score_figures(spark, settings, ds, surface, model_version),
        *list_health(spark, settings, ds, surface, int(scored["top_k"])),
        *served_recall(spark, settings, ds, surface),
        *publish_figures(settings, ds, surface),
        *offline_figures(settings, ds),
        *skew_figures(settings, ds),
    ]
    figures += relative_change(figures, past, "published_users")
    share, served = served_sold_share(settings, surface)
    published = read_run_record(settings, ds, f"publish-redis-{surface}")
    repair = last_repair(settings, surface)
    figures += sold_served_figures(repair, published.get("version"), served, share)
    computed_at = datetime.now(UTC)
    rows = [
        {**row, "run_id": run_id, "computed_at": computed_at}
        for row in judge(figures, settings.pipeline["monitoring"], past)
    ]
    write_history(spark, settings, rows, ds, surface)
    record = {
        "ds": ds.isoformat(),
        "surface": surface,
        "model_version": model_version,
        "figures": len(rows),
        "calibrated": sum(r["threshold_source"].startswith("calibrated") for r in rows),
        "breaches": breaches(rows),
    }
    write_run_record(settings, ds, f"monitor-{surface}", record)
    return record


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``monitor`` step for a job's parsed arguments (``jobs/monitor.py``)."""
    return run_monitor(
        spark, settings, args.ds, args.surface or settings.default_surface, args.run_id
    )

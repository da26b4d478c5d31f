"""Step ``promote``: make the accepted challenger champion (after approval, if required)."""

from __future__ import annotations

import argparse
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.lake.ledger import LedgerEvent, append_events, now

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def promote_accepted(
    settings: Settings, ds: date, evaluation: dict[str, Any], run_id: str
) -> tuple[dict[str, Any], LedgerEvent]:
    """Make the model the gate accepted champion; return the outcome and its ledger event.

    Idempotent: a model that is already the champion is left as it is.
    """
    from rankflow.model.registry import CHAMPION, aliases, mlflow_client, move_champion

    version = str(evaluation["model_version"])
    if not evaluation["gate"]["promote"]:
        raise ValueError(f"the gate did not accept model {version} for {ds}: nothing to promote")
    client = mlflow_client(settings)
    before = aliases(client, settings.model_name).get(CHAMPION)
    if before != version:
        move_champion(settings, client, version)
    event = LedgerEvent(
        "promote",
        now(),
        ds=ds,
        model_version=version,
        previous_champion=evaluation["previous_champion"],
        gate_promote=True,
        gate_reason=evaluation["gate"]["reason"],
        airflow_run_id=run_id,
    )
    return {"ds": ds.isoformat(), "champion": version, "previous": before}, event


def run_promote(
    spark: SparkSession, settings: Settings, ds: date, run_id: str = "manual"
) -> dict[str, Any]:
    """The ``promote`` step after an approval: champion alias and ledger, once per retry."""
    from rankflow.runs import read_run_record

    evaluation = read_run_record(settings, ds, "evaluation")
    if evaluation.get("backfill"):
        return {"ds": ds.isoformat(), "skipped": evaluation["gate"]["reason"]}
    promotion, event = promote_accepted(settings, ds, evaluation, run_id)
    append_events(spark, settings, [event])
    return promotion


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``promote`` step for a job's parsed arguments (``jobs/promote.py``)."""
    return run_promote(spark, settings, args.ds, args.run_id)

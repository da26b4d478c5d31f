"""Step ``evaluate``: held-out rows, shadow-scored lists, the gate, the report.

``run_evaluate`` judges the challenger against the champion and the baselines on the held-out
day and writes the run report; when no approval is required it promotes an accepted challenger
itself (:func:`rankflow.steps.promote.promote_accepted`). It records its decision in the ledger.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import date
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from rankflow.config import Settings
from rankflow.days import day, in_days
from rankflow.evaluation.gate import gate_evidence, metric_intervals
from rankflow.features.registry import MODEL_FEATURES, STREAM_FEATURES
from rankflow.features.stream import quiet_values
from rankflow.lake.ledger import LedgerEvent, append_events, now
from rankflow.lake.tables import read_features, read_partition, read_table, scoring_input
from rankflow.model.registry import debiasing_variants
from rankflow.steps.promote import promote_accepted
from rankflow.ui.report import report_inputs

if TYPE_CHECKING:
    import numpy as np
    from pyspark.sql import SparkSession

log = logging.getLogger("rankflow.evaluate")


def held_out_rows(spark: SparkSession, settings: Settings, ds: date) -> Any:
    """Return the held-out day's rows with item and user attributes, and the simulator's truth."""
    from pathlib import Path

    from rankflow.model.fit import sort_by_query

    # the feature tables as of ds hold one row per item and per user: no dedupe, no shuffle
    features = read_features(spark, settings, ds)
    frame: Any = (
        read_partition(spark, settings, "silver/training_set", ds)
        .select("qid", "user_id", "item_id", "position", "label", *MODEL_FEATURES, *STREAM_FEATURES)
        .join(
            features.items.select(
                "item_id", "category", "seller_id", F.col("item_price").alias("price")
            ),
            on="item_id",
            how="left",
        )
        .join(features.users.select("user_id", "country"), "user_id", "left")
        .withColumn("ds", day(ds))
        .toPandas()
    )
    frame = sort_by_query(frame)
    truth_path = Path(settings.paths.raw) / "truth" / f"ds={ds.isoformat()}"
    if truth_path.exists():
        import pandas as pd

        truth = pd.read_parquet(truth_path / "attractiveness.parquet")[
            ["session_id", "item_id", "attractiveness"]
        ]
        truth = truth.rename(columns={"session_id": "qid"})
        frame = frame.merge(truth, on=["qid", "item_id"], how="left", validate="one_to_one")
    return frame


def shadow_candidates(spark: SparkSession, settings: Settings, ds: date) -> tuple[Any, int]:
    """Return a fixed hash sample of users' candidates with attributes, and the live items.

    Challenger and champion both score these same users: the gate's list guardrails and overlap.
    """
    evaluation = settings.pipeline["evaluation"]
    items = read_features(spark, settings, ds).items
    sample = (
        read_partition(spark, settings, "silver/candidates", ds)
        .select("user_id")
        .distinct()
        .orderBy(F.xxhash64("user_id", F.lit(int(evaluation["bootstrap_seed"]))), "user_id")
        .limit(int(evaluation["shadow_users"]))
    )
    attributes = items.select(
        "item_id", "category", "brand", "seller_id", F.col("item_price").alias("price")
    )
    shadow: Any = (
        scoring_input(spark, settings, ds, users=sample)
        .join(attributes, "item_id", "left")
        .toPandas()
    )
    # the shadow lists stand for the nightly lists, scored as they are (nothing happened yet)
    shadow = shadow.assign(**quiet_values(len(shadow)))
    return shadow, int(items.where(~F.col("is_sold")).count())


def examination_curve(
    spark: SparkSession, settings: Settings, start: date, end: date
) -> np.ndarray:
    """Estimate P(examined | position) from the logged impressions of ``[start, end]``."""
    from rankflow.evaluation.propensity import estimate_examination

    logged: Any = (
        read_table(spark, settings, "silver/training_set")
        .where(in_days(start, end))
        .select("item_id", "position", (F.col("label") > 0).alias("clicked"))
        .toPandas()
    )
    return estimate_examination(
        logged["position"].to_numpy(),
        logged["item_id"].to_numpy(),
        logged["clicked"].to_numpy(),
        min_impressions=int(settings.pipeline["evaluation"]["propensity_min_impressions"]),
    )


def write_report(
    settings: Settings,
    ds: date,
    trained: dict[str, Any],
    inputs: Any,
) -> dict[str, str]:
    """Write the run report beside the run record, into the model's MLflow run, and to S3."""
    import mlflow

    from rankflow.lake.storage import ensure_bucket, s3_client
    from rankflow.runs import run_record_path
    from rankflow.ui.report import render_report

    page = render_report(inputs)
    local = run_record_path(settings, ds, "report").with_suffix(".html")
    local.write_text(page)
    with mlflow.start_run(run_id=trained["run_id"]):
        mlflow.log_text(page, "report.html")
    key = f"reports/ds={ds.isoformat()}/model={trained['model_version']}/report.html"
    client = s3_client(settings.s3)
    ensure_bucket(client, settings.s3.bucket)
    client.put_object(
        Bucket=settings.s3.bucket, Key=key, Body=page.encode(), ContentType="text/html"
    )
    return {
        "local": str(local),
        "mlflow": f"runs:/{trained['run_id']}/report.html",
        "s3": f"s3://{settings.s3.bucket}/{key}",
    }


def run_evaluate(
    spark: SparkSession,
    settings: Settings,
    ds: date,
    run_id: str = "manual",
    promote: bool = True,
) -> dict[str, Any]:
    """Evaluate the new model, the champion and the baselines on ``ds``; accept or refuse it.

    A refusal fails the task. An accepted model becomes champion here when ``promote`` is set,
    or later in the ``promote`` step (after a person approved it).
    """
    from dataclasses import replace

    import mlflow

    from rankflow.evaluation.gate import GateRejectedError
    from rankflow.evaluation.offline import (
        baseline_scores,
        evaluation_table,
        format_table,
        lacks_stream_features,
        predict,
    )
    from rankflow.evaluation.propensity import as_record, inverse_propensity
    from rankflow.model.registry import (
        CHAMPION,
        ModelNotFoundError,
        configure_mlflow,
        load_model,
        model_trained_for,
    )
    from rankflow.runs import read_run_record, write_run_record

    evaluation = settings.pipeline["evaluation"]
    trained = read_run_record(settings, ds, "train")
    frame = held_out_rows(spark, settings, ds)
    challenger_raw, challenger_version = load_model(settings, str(trained["model_version"]))
    models = {"challenger": challenger_raw}
    champion_version = None
    champion_ds = None
    try:
        champion_raw, champion_version = load_model(settings, CHAMPION)
        champion_ds = model_trained_for(settings, champion_version)
        if champion_version != challenger_version and not (champion_ds and champion_ds > ds):
            models["champion"] = champion_raw
    except ModelNotFoundError:
        pass
    if "champion" in models and len(frame) and lacks_stream_features(models["champion"], frame):
        # stream features switched off since the champion was trained: it cannot be scored on
        # these rows, so the challenger is judged against the baselines, as a first model is
        log.warning("the champion takes stream features this day's rows lack: not compared")
        del models["champion"]
    rankers = {name: predict(raw, frame) for name, raw in models.items()}
    for name, raw in debiasing_variants(settings, trained["run_id"]).items():
        rankers[f"variant:{name}"] = predict(raw, frame)
    rankers.update(baseline_scores(frame, seed=int(settings.pipeline["training"]["seed"])))
    window = trained["window"]
    examination = examination_curve(
        spark,
        settings,
        date.fromisoformat(window["train_start"]),
        date.fromisoformat(window["validation_end"]),
    )
    weights = inverse_propensity(
        frame["position"].to_numpy(), examination, clip=float(evaluation["ipw_clip"])
    )
    table = evaluation_table(frame, rankers, evaluation, examination) if len(frame) else {}
    candidates, catalogue_size = shadow_candidates(spark, settings, ds)
    shadow_scores = {name: predict(raw, candidates) for name, raw in models.items()}
    shadow = (candidates, catalogue_size, shadow_scores) if len(candidates) else None
    decision = gate_evidence(frame, rankers, weights, evaluation, shadow)
    backfill = (
        champion_ds is not None and champion_ds > ds and champion_version != challenger_version
    )
    if backfill:
        decision = replace(
            decision,
            promote=False,
            reason=f"backfill of {ds}: the champion (version {champion_version}, trained for "
            f"{champion_ds}) is newer and stays; this model is evaluated and kept, not promoted",
        )
    configure_mlflow(settings)
    with mlflow.start_run(run_id=trained["run_id"]):
        for ranker, metrics in table.items():
            mlflow.log_metrics(
                {f"{ranker}.{k}".replace("@", "_at_"): v for k, v in metrics.items()}
            )
        if decision.difference is not None:
            mlflow.log_metrics(
                {
                    "gate.difference": decision.difference.estimate,
                    "gate.difference_low": decision.difference.low,
                    "gate.difference_high": decision.difference.high,
                }
            )
        mlflow.log_metrics(
            {f"overlap.{k}".replace("@", "_at_"): v for k, v in decision.overlap.items()}
        )
        mlflow.log_dict(
            {"table": table, "gate": decision.as_dict(), "examination": as_record(examination)},
            "evaluation.json",
        )
        mlflow.set_tag("gate", "promoted" if decision.promote else "rejected")
    report = None
    if len(frame) and len(candidates):
        intervals = metric_intervals(frame, rankers, weights, evaluation)
        inputs = report_inputs(
            ds,
            trained,
            challenger_raw,
            frame,
            rankers,
            table,
            intervals,
            decision,
            candidates,
            shadow_scores,
        )
        report = write_report(settings, ds, trained, inputs)
    record = {
        "ds": ds.isoformat(),
        "model_version": challenger_version,
        "previous_champion": champion_version,
        "report": report,
        "backfill": backfill,
        "table": table,
        "gate": decision.as_dict(),
        "rows": len(frame),
        "examination": as_record(examination),
        "text": format_table(table) if table else "(no held-out rows)",
    }
    write_run_record(settings, ds, "evaluation", record)
    events = [
        LedgerEvent(
            "evaluate_backfill" if backfill else "gate",
            now(),
            ds=ds,
            model_version=challenger_version,
            previous_champion=champion_version,
            gate_promote=decision.promote,
            gate_reason=decision.reason,
            gate_json=json.dumps(decision.as_dict(), default=str),
            airflow_run_id=run_id,
        )
    ]
    if promote and decision.promote and not backfill:
        promotion, event = promote_accepted(settings, ds, record, run_id)
        record["promotion"] = promotion
        events.append(event)
    append_events(spark, settings, events)  # the decision and the promotion in one commit
    if not backfill and not decision.promote:
        raise GateRejectedError(
            f"model version {challenger_version} was not promoted: {decision.reason}; "
            f"the champion stays {champion_version}"
        )
    return record


def run(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> Any:
    """Run the ``evaluate`` step for a job's parsed arguments (``jobs/evaluate.py``)."""
    return run_evaluate(spark, settings, args.ds, args.run_id, promote=args.promote == "yes")

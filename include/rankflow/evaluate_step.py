"""The evaluate and promote steps: held-out rows, shadow-scored lists, the gate, the report.

``run_evaluate`` judges the challenger against the champion and the baselines on the held-out
day and writes the run report; ``run_promote`` moves the champion alias (after an approval, or
from ``run_evaluate`` itself when none is required). Both record their outcome in the ledger.
"""

from __future__ import annotations

import json
from datetime import date
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.features import MODEL_FEATURES
from rankflow.ledger import LedgerEvent, append_events, now
from rankflow.pipeline import (
    read_features,
    read_partition,
    read_table,
    scoring_input,
)

if TYPE_CHECKING:
    import numpy as np
    from pyspark.sql import SparkSession


def held_out_rows(spark: SparkSession, settings: Settings, ds: date) -> Any:
    """Return the held-out day's rows with item and user attributes, and the simulator's truth."""
    from pathlib import Path

    from pyspark.sql import functions as F

    from rankflow.training import sort_by_query

    # the feature tables as of ds hold one row per item and per user: no dedupe, no shuffle
    features = read_features(spark, settings, ds)
    frame: Any = (
        read_partition(spark, settings, "silver/training_set", ds)
        .select("qid", "user_id", "item_id", "position", "label", *MODEL_FEATURES)
        .join(
            features.items.select(
                "item_id", "category", "seller_id", F.col("item_price").alias("price")
            ),
            on="item_id",
            how="left",
        )
        .join(features.users.select("user_id", "country"), "user_id", "left")
        .withColumn("ds", F.lit(ds.isoformat()).cast("date"))
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
    from pyspark.sql import functions as F

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
    shadow = (
        scoring_input(spark, settings, ds, users=sample)
        .join(attributes, "item_id", "left")
        .toPandas()
    )
    return shadow, int(items.where(~F.col("is_sold")).count())


def examination_curve(
    spark: SparkSession, settings: Settings, start: date, end: date
) -> np.ndarray:
    """Estimate P(examined | position) from the logged impressions of ``[start, end]``."""
    from pyspark.sql import functions as F

    from rankflow.propensity import estimate_examination

    logged: Any = (
        read_table(spark, settings, "silver/training_set")
        .where(
            F.col("ds").between(
                F.lit(start.isoformat()).cast("date"), F.lit(end.isoformat()).cast("date")
            )
        )
        .select("item_id", "position", (F.col("label") > 0).alias("clicked"))
        .toPandas()
    )
    return estimate_examination(
        logged["position"].to_numpy(),
        logged["item_id"].to_numpy(),
        logged["clicked"].to_numpy(),
        min_impressions=int(settings.pipeline["evaluation"]["propensity_min_impressions"]),
    )


def gate_evidence(
    frame: Any,
    rankers: dict[str, np.ndarray],
    weights: np.ndarray | None,
    config: dict[str, Any],
    shadow: tuple[Any, int, dict[str, np.ndarray]] | None = None,
) -> Any:
    """Decide on the challenger from the held-out rows and, if given, the shadow-scored lists."""
    from rankflow.gate import (
        compare_segments,
        gate_decision,
        list_health,
        list_overlap,
        metric_parts,
        top_lists,
    )

    metric = str(config["gate_metric"])
    parts = {
        name: metric_parts(frame, rankers[name], metric, config, weights)
        for name in ("challenger", "popularity", "champion")
        if name in rankers
    }
    segments = None
    if "champion" in rankers:
        segments = compare_segments(
            frame, rankers["challenger"], rankers["champion"], weights, config
        )
    lists: dict[str, dict[str, float]] = {}
    overlap: dict[str, float] = {}
    if shadow is not None:
        candidates, catalogue_size, scores = shadow
        depth = int(config["overlap_depth"])
        tops = {name: top_lists(candidates, values, depth) for name, values in scores.items()}
        rails = config["guardrails"]
        lists = {
            name: list_health(top, catalogue_size, float(rails["top_seller_percent"]))
            for name, top in tops.items()
        }
        if "champion" in tops:
            overlap = list_overlap(
                tops["champion"], tops["challenger"], depth, float(config["rbo_p"])
            )
    return gate_decision(
        parts["challenger"],
        parts["popularity"],
        parts.get("champion"),
        config,
        segments=segments,
        lists=lists,
        overlap=overlap,
    )


def metric_intervals(
    frame: Any, rankers: dict[str, np.ndarray], weights: np.ndarray | None, config: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Bootstrap interval of the gate metric for every ranker (for the report)."""
    from dataclasses import asdict

    from rankflow.gate import bootstrap_interval, metric_parts

    metric = str(config["gate_metric"])
    return {
        name: asdict(
            bootstrap_interval(
                metric_parts(frame, scores, metric, config, weights),
                int(config["bootstrap_resamples"]),
                int(config["bootstrap_seed"]),
                float(config["confidence"]),
            )
        )
        for name, scores in rankers.items()
    }


def write_report(
    settings: Settings,
    ds: date,
    trained: dict[str, Any],
    inputs: Any,
) -> dict[str, str]:
    """Write the run report beside the run record, into the model's MLflow run, and to S3."""
    import mlflow

    from rankflow.publish_s3 import ensure_bucket, s3_client
    from rankflow.report import render_report
    from rankflow.training import run_record_path

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


def report_inputs(
    ds: date,
    trained: dict[str, Any],
    challenger_raw: bytes,
    frame: Any,
    rankers: dict[str, np.ndarray],
    table: dict[str, dict[str, float]],
    intervals: dict[str, dict[str, float]],
    decision: Any,
    candidates: Any,
    shadow_scores: dict[str, np.ndarray],
    examples: int = 5,
) -> Any:
    """Gather what the run report shows (example users come from the shadow sample)."""
    import numpy as np

    from rankflow.gate import top_lists
    from rankflow.report import ReportInputs, top_contributions
    from rankflow.training import booster_from_bytes, model_inputs

    booster = booster_from_bytes(challenger_raw, nthread=0)
    users = np.sort(candidates["user_id"].unique())[:examples]
    mask = candidates["user_id"].isin(users).to_numpy()
    chosen = candidates[mask].reset_index(drop=True)
    top = top_lists(chosen, shadow_scores["challenger"][mask], 5)
    shown = top[["user_id", "rank", "item_id", "category", "brand", "price", "seller_id"]]
    names = list(booster.feature_names or [])
    contributions = (
        top_contributions(booster, model_inputs(booster, top), names) if len(top) else []
    )
    facts = {
        "logical date": ds.isoformat(),
        "model version": trained["model_version"],
        "code version": trained.get("code_version"),
        "config hash": trained.get("config_hash"),
        "requirements.lock hash": trained.get("requirements_lock_hash"),
        "debiasing": trained.get("training_config", {}).get("debiasing"),
        "best iteration": trained.get("best_iteration"),
        "training window": "{train_start} .. {train_end}".format(**trained["window"]),
        "Delta versions": ", ".join(f"{k}@{v}" for k, v in trained["table_versions"].items()),
        "held-out impressions": len(frame),
    }
    return ReportInputs(
        title=f"rankflow run report: model {trained['model_version']} for {ds.isoformat()}",
        facts=facts,
        table=table,
        intervals=intervals,
        gate=decision.as_dict(),
        frame=frame,
        rankers=rankers,
        booster=booster,
        examples=shown,
        example_contributions=contributions,
        shadow_scores=shadow_scores,
        debiasing=str(trained.get("training_config", {}).get("debiasing", "none")),
    )


def debiasing_variants(settings: Settings, run_id: str) -> dict[str, bytes]:
    """The other debiasing variants the train step fitted beside the challenger (by name)."""
    import mlflow

    training = settings.pipeline["training"]
    names = [n for n in training["compare_debiasing"] if n != training["debiasing"]]
    return {
        name: mlflow.artifacts.load_text(f"runs:/{run_id}/variants/{name}.json").encode()
        for name in names
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

    from rankflow.evaluation import baseline_scores, evaluation_table, format_table, predict
    from rankflow.gate import GateRejectedError
    from rankflow.propensity import as_record, inverse_propensity
    from rankflow.training import (
        CHAMPION,
        ModelNotFoundError,
        configure_mlflow,
        load_model,
        model_trained_for,
        read_run_record,
        write_run_record,
    )

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


def promote_accepted(
    settings: Settings, ds: date, evaluation: dict[str, Any], run_id: str
) -> tuple[dict[str, Any], LedgerEvent]:
    """Make the model the gate accepted champion; return the outcome and its ledger event.

    Idempotent: a model that is already the champion is left as it is.
    """
    from rankflow.lifecycle import aliases, mlflow_client, move_champion
    from rankflow.training import CHAMPION

    version = str(evaluation["model_version"])
    if not evaluation["gate"]["promote"]:
        raise ValueError(f"the gate did not accept model {version} for {ds}: nothing to promote")
    client = mlflow_client(settings)
    before = aliases(client, settings.model_name).get(CHAMPION)
    if before != version:
        move_champion(client, settings.model_name, version)
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
    from rankflow.training import read_run_record

    evaluation = read_run_record(settings, ds, "evaluation")
    if evaluation.get("backfill"):
        return {"ds": ds.isoformat(), "skipped": evaluation["gate"]["reason"]}
    promotion, event = promote_accepted(settings, ds, evaluation, run_id)
    append_events(spark, settings, [event])
    return promotion

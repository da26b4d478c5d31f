"""Nightly ranking refresh: from yesterday's events to fresh ranked lists.

### rankflow nightly ranking refresh

Turns yesterday's marketplace behaviour into fresh personalised ranked lists:

ingest -> features -> candidates -> training set -> (train -> evaluate/gate -> [approval] ->
promote | reuse champion) -> score -> publish S3 -> publish Redis -> repair sold -> monitor;
features -> materialise features (the online feature version the ranking service reads);
drain served -> check skew -> monitor (the answers the ranking service logged on the day,
replayed offline: features and scores must equal what was served)

Every Spark step is a `spark-submit` of `jobs/<step>.py` on the master of the `spark_rankflow`
connection (`local[*]` by default); Redis and S3 come from the `redis_rankflow` and `s3_rankflow`
connections, or the worker's `RANKFLOW_*` environment variables. Each step rewrites only the
partition of its date, so retries and backfills are safe; a backfill of an older date never
replaces a newer list in Redis. After publishing, the items sold since the features were built
leave the lists (as the hourly `rankflow_sold_items` DAG does), and `monitor` appends the night's
figures (drift, list health, publishing, offline metrics) to the monitoring history, judged
against their thresholds; breaches are alerted.

**Alerts** (connections `slack_rankflow`, `smtp_rankflow`): a task failing its last retry, the
promotion gate rejecting a model, breached monitoring thresholds, and lists not published by
06:00 UTC the morning after the day (a Deadline Alert).

**Trigger form**: `ds` (the day to process; defaults to the run's data interval start),
`surface`, `top_k`, `retrain` (train and gate a new model, or score with the current champion),
`require_approval` (a person approves an accepted model in the UI before it becomes champion).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, chain, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from rankflow.config import SURFACES
from rankflow_alerts import failure_callbacks, publication_deadline
from rankflow_operators import RankflowSparkSubmitOperator

AUTO_PROMOTE = "{{ 'no' if params.require_approval else 'yes' }}"
APPROVAL_BODY = """The promotion gate accepted a new ranking model for
{{ ti.xcom_pull(task_ids='check_params') }}. Its run report (metrics with confidence intervals,
segments, list guardrails and overlap, example users) is in the model's MLflow run as
`report.html` and under `reports/ds={{ ti.xcom_pull(task_ids='check_params') }}/` in the
rankflow bucket. **Approve** makes it the champion; **Reject** keeps the current champion and
still refreshes the lists with it."""


@dag(
    dag_id="rankflow_nightly",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "ranking",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        **failure_callbacks(),  # one alert per task that fails its last retry
    },
    deadline=publication_deadline(),  # alert when the lists are not out by 06:00 UTC on D+1
    params={
        "ds": Param(
            None,
            type=["null", "string"],
            format="date",
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="Day to process (YYYY-MM-DD); empty = the run's data interval start.",
        ),
        "surface": Param("home", enum=list(SURFACES), description="Surface whose lists are built."),
        "top_k": Param(100, type="integer", minimum=1, maximum=500, description="List length."),
        "retrain": Param(True, type="boolean", description="Train and gate a new model first."),
        "require_approval": Param(
            False,
            type="boolean",
            description="Wait for a person to approve a model the gate accepted before it "
            "becomes champion (Reject, or no answer in 12 h, keeps the champion).",
        ),
    },
    doc_md=__doc__,
    tags=["rankflow"],
)
def rankflow_nightly() -> None:
    """Wire the nightly steps (see the module docstring)."""

    @task(retries=0)
    def check_params(params: dict, data_interval_start: pendulum.DateTime | None = None) -> str:
        """Validate the trigger parameters before any work starts; return the day to process."""
        from rankflow.steps.params import resolve_run_date

        return resolve_run_date(params, data_interval_start)

    @task.branch
    def choose_model(params: dict) -> str:
        """Train a challenger, or score with the current champion."""
        return "train" if params["retrain"] else "reuse_champion"

    @task.branch
    def needs_approval(params: dict) -> str:
        """Ask a person first (require_approval=true), or go on: evaluate already promoted."""
        return "approve_promotion" if params["require_approval"] else "promoted_by_gate"

    @task
    def repair_sold(params: dict) -> dict:
        """Drop the items sold since the features were built from the lists just published."""
        from rankflow.publish.repair import repair_and_record
        from rankflow_connections import connected_settings

        return repair_and_record(connected_settings(), params["surface"]).as_dict()

    @task(retries=0, trigger_rule="all_done")  # send_alert retries each channel
    def alert_gate(day: str | None, dag_run=None) -> dict:
        """Send one alert when tonight's promotion gate rejected the new model."""
        from rankflow_alerts import send_gate_alert

        return send_gate_alert(day, since=dag_run.start_date if dag_run else None)

    @task(retries=0)  # send_alert retries each channel; a task retry would repeat the alert
    def alert_breaches(day: str, params: dict) -> dict:
        """Send one alert with the night's breached monitoring thresholds (none if all is well)."""
        from rankflow_alerts import send_breach_alert

        return send_breach_alert(day, params["surface"])

    ds = check_params()
    day = ["--ds", ds]
    lists = ["--surface", "{{ params.surface }}"]
    publication = [*day, *lists, "--run-id", "{{ run_id }}"]

    def spark_step(step: str, args: list, **kwargs: object) -> RankflowSparkSubmitOperator:
        return RankflowSparkSubmitOperator(step=step, application_args=args, **kwargs)

    ingest = spark_step("ingest", day)
    features = spark_step("features", day)
    materialise = spark_step("materialise_features", [*day, "--run-id", "{{ run_id }}"])
    candidates = spark_step("candidates", day)
    training_set = spark_step("training_set", day)
    train = spark_step("train", day)
    evaluate = spark_step(
        "evaluate",
        [*day, "--run-id", "{{ run_id }}", "--promote", AUTO_PROMOTE],
        retries=0,
    )
    approve = ApprovalOperator(
        task_id="approve_promotion",
        subject="Promote the new ranking model for {{ ti.xcom_pull(task_ids='check_params') }}?",
        body=APPROVAL_BODY,
        defaults="Reject",
        response_timeout=timedelta(hours=12),
        retries=0,
    )
    promote = spark_step("promote", [*day, "--run-id", "{{ run_id }}"])
    # a rejected approval skips promote: the lists are still refreshed, with the old champion
    score = spark_step(
        "score", [*day, *lists, "--top-k", "{{ params.top_k }}"], trigger_rule="none_failed"
    )
    publish_s3 = spark_step("publish_s3", publication)
    publish_redis = spark_step("publish_redis", publication)
    monitor = spark_step("monitor", publication)
    drain_served = spark_step("drain_served", day)
    check_skew = spark_step("check_skew", day)

    branch = choose_model()
    # the branches' joins: nothing to run, they only say which way the night went
    reuse = EmptyOperator(task_id="reuse_champion", doc_md="Keep the champion (retrain=false).")
    approval = needs_approval()
    by_gate = EmptyOperator(
        task_id="promoted_by_gate",
        doc_md="The evaluate step made the accepted model champion (require_approval=false).",
    )
    chain(ds, ingest, features, candidates, training_set, branch, [train, reuse])
    # the online features of the day: beside the lists, served by `rankflow serve`
    chain(features, materialise)
    chain(train, evaluate, approval, [approve, by_gate])
    # a rejected model skips evaluate (and the promotion): score still runs, with the champion
    chain(evaluate, alert_gate(ds))
    chain(approve, promote, score)
    chain(by_gate, score)
    chain(reuse, score, publish_s3, publish_redis, repair_sold(), monitor, alert_breaches(ds))
    # the day's served answers: drained from the serving log, replayed offline, judged by monitor
    chain(ds, drain_served, check_skew, monitor)
    chain(ingest, check_skew)  # live listings are rebuilt from the day's bronze items


rankflow_nightly()

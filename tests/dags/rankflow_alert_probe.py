"""A tiny DAG wired like the nightly one for alerting (tests/dags/test_alerting.py runs it).

Failure callbacks and the publication deadline come from ``rankflow_alerts``; the ``mode`` param
injects the failure: ``fail`` (``work`` fails on every try), ``flaky`` (it fails on its first try
only), ``gate`` (``evaluate`` records a rejected gate and is skipped, as the real step is;
``alert_gate`` reports it), ``slow`` (``work`` runs for ``SLOW_SECONDS``: a run still going when
its deadline passes), ``ok``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from rankflow_alerts import failure_callbacks, publication_deadline

SLOW_SECONDS = 150
REJECTED_GATE = {
    "promote": False,
    "reason": "ndcg@10 challenger - champion = -0.0420 (95% CI -0.0610 .. -0.0230, lower "
    "bound must exceed -0.0100) over 812 groups",
    "metric": "ndcg@10",
    "challenger": 0.3712,
    "champion": 0.4132,
    "popularity": 0.3021,
    "checks": [
        {"name": "beats popularity", "passed": True, "detail": "ndcg@10 0.3712 vs popularity"},
        {
            "name": "vs champion",
            "passed": False,
            "detail": "ndcg@10 challenger - champion = -0.0420 (95% CI -0.0610 .. -0.0230, "
            "lower bound must exceed -0.0100) over 812 groups",
        },
    ],
}


@dag(
    dag_id="rankflow_alert_probe",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    default_args={
        "retries": 1,
        "retry_delay": timedelta(seconds=1),
        **failure_callbacks(attempts=2, backoff_seconds=0.1),
    },
    deadline=publication_deadline(attempts=2, backoff_seconds=0.1),
    params={"mode": Param("ok", enum=["ok", "fail", "flaky", "gate", "slow"])},
    doc_md=__doc__,
)
def rankflow_alert_probe() -> None:
    """Two independent steps: ``work`` and ``evaluate``."""

    @task
    def work(params: dict, ti=None) -> None:
        """Fail as the ``mode`` param says."""
        if params["mode"] == "fail" or (params["mode"] == "flaky" and ti.try_number == 1):
            raise RuntimeError(f"injected failure on try {ti.try_number}")
        if params["mode"] == "slow":
            import time

            time.sleep(SLOW_SECONDS)

    @task(retries=0)
    def evaluate(params: dict, data_interval_start=None) -> None:
        """Record a rejected gate for the run's day and skip (``gate`` mode), like the step."""
        if params["mode"] != "gate":
            return
        import json

        from rankflow.config import load_settings

        ds = data_interval_start.date().isoformat()
        runs = load_settings().paths.home / "runs" / f"ds={ds}"
        runs.mkdir(parents=True, exist_ok=True)
        record = {"ds": ds, "model_version": "7", "previous_champion": "6", "backfill": False}
        (runs / "evaluation.json").write_text(json.dumps({**record, "gate": REJECTED_GATE}))
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException("the promotion gate rejected model version 7")

    @task(retries=0, trigger_rule="all_done")
    def alert_gate(data_interval_start=None, dag_run=None) -> dict:
        """Alert a rejection recorded in this run, as the nightly DAG's task does."""
        from rankflow_alerts import send_gate_alert

        ds = data_interval_start.date().isoformat()
        return send_gate_alert(ds, since=dag_run.start_date, attempts=2, backoff_seconds=0.1)

    work()
    evaluate() >> alert_gate()


rankflow_alert_probe()

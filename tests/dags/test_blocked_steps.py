"""A step stopped by a data-quality gate fails at once (no retry); other failures retry."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from rankflow.steps.runner import BLOCKED_EXIT_CODE, REJECTED_EXIT_CODE
from rankflow_operators import RankflowSparkSubmitOperator


def run_with_exit_code(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Run the operator with spark-submit replaced by a real process exiting with ``code``."""

    def submit(self: Any, context: Any) -> None:
        self._hook = type("Hook", (), {})()
        self._hook._submit_sp = subprocess.Popen(["sh", "-c", f"exit {code}"])
        self._hook._submit_sp.wait()
        raise AirflowException(f"Cannot execute: spark-submit. Error code is: {code}.")

    monkeypatch.setattr(SparkSubmitOperator, "execute", submit)
    monkeypatch.setattr("rankflow_operators.optional_connection", lambda conn_id: None)
    monkeypatch.setattr("rankflow_connections.optional_connection", lambda conn_id: None)
    operator = RankflowSparkSubmitOperator(step="ingest", application_args=["--ds", "2026-10-30"])
    operator.execute(context={})


def test_a_blocked_step_fails_without_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AirflowFailException, match="data-quality gate"):
        run_with_exit_code(monkeypatch, BLOCKED_EXIT_CODE)


def test_a_rejected_model_skips_the_promotion_instead_of_failing(monkeypatch) -> None:
    with pytest.raises(AirflowSkipException, match="champion keeps serving"):
        run_with_exit_code(monkeypatch, REJECTED_EXIT_CODE)


def test_any_other_failure_stays_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AirflowException) as failure:
        run_with_exit_code(monkeypatch, 1)
    assert not isinstance(failure.value, AirflowFailException)


def run_connect_client(tmp_path, monkeypatch: pytest.MonkeyPatch, code: int) -> list[str]:
    """Run the operator on a spark_connect connection with a job script exiting with ``code``."""
    import json

    job = tmp_path / "job.py"
    job.write_text(
        "import os, sys\n"
        "print('remote set' if os.environ['SPARK_REMOTE'].startswith('sc://') else 'no remote')\n"
        f"sys.exit({code})\n"
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_RANKFLOW",
        json.dumps({"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": 15002}),
    )
    operator = RankflowSparkSubmitOperator(step="ingest", application_args=["--ds", "2026-10-30"])
    operator.application = str(job)
    lines: list[str] = []
    monkeypatch.setattr(operator.log, "info", lambda fmt, *args: lines.append(fmt % args))
    operator.execute(context={})
    return lines


def test_a_connect_client_step_runs_the_job_with_spark_remote(tmp_path, monkeypatch) -> None:
    assert "remote set" in run_connect_client(tmp_path, monkeypatch, 0)


def test_a_connect_client_step_maps_exit_statuses_like_spark_submit(tmp_path, monkeypatch) -> None:
    with pytest.raises(AirflowFailException, match="data-quality gate"):
        run_connect_client(tmp_path, monkeypatch, BLOCKED_EXIT_CODE)
    with pytest.raises(AirflowSkipException, match="champion keeps serving"):
        run_connect_client(tmp_path, monkeypatch, REJECTED_EXIT_CODE)
    with pytest.raises(AirflowException) as failure:
        run_connect_client(tmp_path, monkeypatch, 1)
    assert not isinstance(failure.value, AirflowFailException)

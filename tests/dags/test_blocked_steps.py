"""A step stopped by a data-quality gate fails at once (no retry); other failures retry."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from rankflow.jobs import BLOCKED_EXIT_CODE
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
    operator = RankflowSparkSubmitOperator(step="ingest", application_args=["--ds", "2026-10-30"])
    operator.execute(context={})


def test_a_blocked_step_fails_without_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AirflowFailException, match="data-quality gate"):
        run_with_exit_code(monkeypatch, BLOCKED_EXIT_CODE)


def test_any_other_failure_stays_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AirflowException) as failure:
        run_with_exit_code(monkeypatch, 1)
    assert not isinstance(failure.value, AirflowFailException)

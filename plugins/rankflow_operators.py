"""Airflow glue for rankflow: a spark-submit operator that runs one ``jobs/<step>.py``.

The step's Redis and S3 endpoints come from :mod:`rankflow_connections` at execution time (never
at parse time, never into rendered templates), falling back to the worker's environment variables.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from rankflow.steps.runner import BLOCKED_EXIT_CODE, REJECTED_EXIT_CODE
from rankflow_connections import connection_overrides, optional_connection

JOBS_DIR = Path(__file__).resolve().parents[1] / "jobs"
SPARK_CONN_ID = "spark_rankflow"
SPARK_CONNECT_TYPE = "spark_connect"  # a connection of this type runs the steps on its server


def submit_exit_code(hook: Any) -> int | None:
    """Return the exit status of the hook's spark-submit process (None if it never started)."""
    process = getattr(hook, "_submit_sp", None)
    return None if process is None else process.returncode


def blocked_by_gate(task_id: str) -> AirflowFailException:
    """The failure of a step a data-quality gate stopped: retrying cannot fix bad data."""
    return AirflowFailException(
        f"{task_id} was stopped by a data-quality gate (see the task log and "
        "runs/ds=<day>/quality/ for the failed checks); not retried"
    )


def rejected_by_gate(task_id: str) -> AirflowSkipException:
    """The promotion gate rejected the model: skip the promotion, the champion keeps serving."""
    return AirflowSkipException(
        f"{task_id}: the promotion gate rejected the new model; the champion keeps serving and "
        "tonight's lists are scored with it (runs/ds=<day>/evaluation.json has the checks)"
    )


class RankflowSparkSubmitOperator(SparkSubmitOperator):
    """Run ``jobs/<step>.py`` with spark-submit on the ``spark_rankflow`` connection's master."""

    def __init__(self, *, step: str, application_args: list[Any], **kwargs: Any) -> None:
        super().__init__(
            task_id=kwargs.pop("task_id", step),
            application=str(JOBS_DIR / f"{step}.py"),
            name=f"rankflow-{step}",
            conn_id=kwargs.pop("conn_id", SPARK_CONN_ID),
            application_args=application_args,
            env_vars={"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable},
            **kwargs,
        )

    def execute(self, context: Any) -> None:
        """Run the step on the connection's Spark: spark-submit, or a client of a Connect server."""
        from rankflow.config import load_settings
        from rankflow.lake.session import delta_package, spark_submit_conf

        connection = optional_connection(self._conn_id)
        if connection is not None and connection.conn_type == SPARK_CONNECT_TYPE:
            self.run_connect_client({**(self.env_vars or {}), **connection_overrides()})
            return
        self.packages = delta_package()
        self.conf = {**spark_submit_conf(load_settings()), **(self.conf or {})}
        self.env_vars = {**(self.env_vars or {}), **connection_overrides()}
        try:
            super().execute(context)
        except AirflowException as error:
            status = submit_exit_code(self._hook)
            if status == BLOCKED_EXIT_CODE:
                # retrying cannot fix bad data: fail now and leave downstream steps unrun
                raise blocked_by_gate(self.task_id) from error
            if status == REJECTED_EXIT_CODE:
                raise rejected_by_gate(self.task_id) from error
            raise

    def run_connect_client(self, env: dict[str, str]) -> None:
        """Run ``jobs/<step>.py`` as a Spark Connect client of the connection's server.

        The server's JVM stays warm between steps, so a step pays no JVM, session or Delta
        start-up; the exit status means what it means under spark-submit.
        """
        import os
        import subprocess
        from collections import deque

        from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

        remote = SparkConnectHook(conn_id=self._conn_id).get_connection_url()  # may hold a token
        command = [sys.executable, self.application, *(str(a) for a in self.application_args)]
        self.log.info("Running %s as a Spark Connect client of %s", command[1:], self._conn_id)
        self._connect_client = subprocess.Popen(
            command,
            env={**os.environ, **env, "SPARK_REMOTE": remote},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self._connect_client.stdout is not None
        tail: deque[str] = deque(maxlen=40)
        for line in self._connect_client.stdout:
            self.log.info("%s", line.rstrip())
            tail.append(line.rstrip())
        status = self._connect_client.wait()
        if status != 0:
            self.log.error(
                "%s exited with %s; its last lines:\n%s", command[1], status, "\n".join(tail)
            )
        if status == BLOCKED_EXIT_CODE:
            raise blocked_by_gate(self.task_id)
        if status == REJECTED_EXIT_CODE:
            raise rejected_by_gate(self.task_id)
        if status != 0:
            raise AirflowException(f"{self.task_id} failed: {command[1]} exited with {status}")

    def on_kill(self) -> None:
        """Stop the Connect client if one runs, else what spark-submit started."""
        client = getattr(self, "_connect_client", None)
        if client is not None and client.poll() is None:
            client.terminate()
            return
        super().on_kill()

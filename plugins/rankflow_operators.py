"""Airflow glue for rankflow: a spark-submit operator that runs one ``jobs/<step>.py``.

It resolves the Redis and S3 endpoints from Airflow connections at execution time (never at
parse time, never into rendered templates), falling back to the worker's environment variables.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from rankflow.steps.runner import BLOCKED_EXIT_CODE, REJECTED_EXIT_CODE

JOBS_DIR = Path(__file__).resolve().parents[1] / "jobs"
SPARK_CONN_ID = "spark_rankflow"
REDIS_CONN_ID = "redis_rankflow"
S3_CONN_ID = "s3_rankflow"
SPARK_CONNECT_TYPE = "spark_connect"  # a connection of this type runs the steps on its server


def redis_url_from_connection(conn: Any) -> str:
    """Build a redis:// (or rediss:// with TLS) URL from an Airflow Redis connection."""
    extra = conn.extra_dejson
    scheme = "rediss" if extra.get("ssl") in (True, "true", "True") else "redis"
    auth = ""
    if conn.password:
        auth = f"{quote(conn.login or '', safe='')}:{quote(conn.password, safe='')}@"
    db = extra.get("db", 0)
    return f"{scheme}://{auth}{conn.host or '127.0.0.1'}:{conn.port or 6379}/{db}"


def s3_env_from_connection(conn: Any) -> dict[str, str]:
    """Translate an Airflow AWS connection into the environment boto3 reads."""
    extra = conn.extra_dejson
    env = {}
    if conn.login:
        env["AWS_ACCESS_KEY_ID"] = conn.login
    if conn.password:
        env["AWS_SECRET_ACCESS_KEY"] = conn.password
    if extra.get("region_name"):
        env["AWS_DEFAULT_REGION"] = str(extra["region_name"])
    endpoint = extra.get("endpoint_url") or (
        extra.get("service_config", {}).get("s3", {}) or {}
    ).get("endpoint_url")
    if endpoint:
        env["RANKFLOW_S3_ENDPOINT"] = str(endpoint)
    if extra.get("bucket"):
        env["RANKFLOW_S3_BUCKET"] = str(extra["bucket"])
    return env


def submit_exit_code(hook: Any) -> int | None:
    """Return the exit status of the hook's spark-submit process (None if it never started)."""
    process = getattr(hook, "_submit_sp", None)
    return None if process is None else process.returncode


def optional_connection(conn_id: str) -> Any | None:
    """Return an Airflow connection, or None when it is not defined (env vars apply then)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


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


def connection_overrides() -> dict[str, str]:
    """The serving endpoints of the Redis and S3 connections, as the environment rankflow reads."""
    env = {}
    redis_conn = optional_connection(REDIS_CONN_ID)
    if redis_conn is not None:
        env["RANKFLOW_REDIS_URL"] = redis_url_from_connection(redis_conn)
    s3_conn = optional_connection(S3_CONN_ID)
    if s3_conn is not None:
        env.update(s3_env_from_connection(s3_conn))
    return env


def connection_env() -> dict[str, str]:
    """Environment of an in-task rankflow call: the worker's, with the connections applied."""
    import os

    return {**os.environ, **connection_overrides()}


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

"""The hook layer: rankflow's Airflow connections, read at execution time, as rankflow settings.

The operator, the alerting plugin and the DAGs' Python tasks take the Redis and S3 endpoints from
here (connections ``redis_rankflow`` and ``s3_rankflow``); a connection that is not defined leaves
the worker's environment variables in force. Nothing here runs at DAG parse time, and secrets go
into a child process's environment, never into rendered templates or logs.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, urlencode

from rankflow.config import Settings, load_settings

REDIS_CONN_ID = "redis_rankflow"
S3_CONN_ID = "s3_rankflow"


TLS_EXTRAS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile")


def redis_url_from_connection(conn: Any) -> str:
    """Build a redis:// (or rediss:// with TLS) URL from an Airflow Redis connection.

    The provider's extras apply: ``db``, ``ssl`` (true for TLS) and its ``ssl_ca_certs``,
    ``ssl_cert_reqs``, ``ssl_certfile`` and ``ssl_keyfile``, passed on in the URL's query.
    """
    extra = conn.extra_dejson
    tls = extra.get("ssl") in (True, "true", "True")
    auth = ""
    if conn.password:
        auth = f"{quote(conn.login or '', safe='')}:{quote(conn.password, safe='')}@"
    db = extra.get("db", 0)
    scheme = "rediss" if tls else "redis"
    url = f"{scheme}://{auth}{conn.host or '127.0.0.1'}:{conn.port or 6379}/{db}"
    options = {name: str(extra[name]) for name in TLS_EXTRAS if tls and extra.get(name)}
    return f"{url}?{urlencode(options)}" if options else url


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


def optional_connection(conn_id: str) -> Any | None:
    """Return an Airflow connection, or None when it is not defined (env vars apply then)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


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
    return {**os.environ, **connection_overrides()}


def connected_settings() -> Settings:
    """Rankflow's settings inside a task: the worker's environment with the connections applied."""
    return load_settings(connection_env())

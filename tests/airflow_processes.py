"""Airflow as it runs in production, for tests: real components as subprocesses on Postgres.

:class:`AirflowStack` gives one test module its own metadata database (a fresh database on the
local PostgreSQL server that ``make up`` starts, dropped afterwards), its own ``AIRFLOW_HOME``
and DAG folder, and runs ``airflow api-server`` (on a free port of 127.0.0.1), ``scheduler``
(LocalExecutor), ``dag-processor`` and ``triggerer`` against them, each logging to a file. Tests
talk to it through the public REST API (``/api/v2``); the simple auth manager treats every
request as an admin's (the auth matrix is tested elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import httpx

from alert_receivers import free_port
from rankflow.ops.services import postgres_client

T = TypeVar("T")
COMPONENTS = ("scheduler", "dag-processor", "triggerer")
# a component with a task still running (the probe's slow run) used the whole 30 s it was once
# given; nothing is asserted after a stop, so a few seconds is enough before SIGKILL
STOP_GRACE_SECONDS = 5


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)


class AirflowStack:
    """An API server, scheduler, DAG processor and triggerer on a database of their own."""

    def __init__(self, root: Path, dags: Path, env: Mapping[str, str]) -> None:
        server = os.environ.get("RANKFLOW_POSTGRES_URL")
        if not server:
            raise RuntimeError("RANKFLOW_POSTGRES_URL is not set: run the tests through make")
        self.database = f"airflow_test_{secrets.token_hex(4)}"
        self.server_url = server
        database = urlparse(server)._replace(path=f"/{self.database}")
        self.url = database._replace(scheme="postgresql+psycopg2").geturl()  # the pinned driver
        self.root = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logs = root / "logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": "",  # no async driver (as make airflow)
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": fernet_key(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **env,
        }

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run one ``airflow`` CLI command in the stack's environment."""
        command = [sys.executable, "-m", "airflow", *args]
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self, timeout: float = 240) -> None:
        """Create and migrate the database, start the components, wait for the API and the DAGs."""
        created = postgres_client(self.server_url, "createdb", self.database)
        if created.returncode != 0:
            raise RuntimeError(f"createdb {self.database} failed: {created.stderr[-500:]}")
        self.logs.mkdir(parents=True, exist_ok=True)
        migrated = self.airflow("db", "migrate")
        if migrated.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed: {migrated.stderr[-2000:]}")
        for name in ("api-server", *COMPONENTS):
            self.spawn(name)
        wait_for("the API server's health", self.healthy, timeout)

    def spawn(self, name: str) -> None:
        """Start one component in its own session, its output in ``logs/<name>.log``."""
        args = ["api-server", "--port", str(self.port)] if name == "api-server" else [name]
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.root,
        )

    def healthy(self) -> bool:
        """Whether the API server answers and every component is still running."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"airflow {name} exited: {self.log_tail(name)}")
        try:
            return httpx.get(f"{self.base}/api/v2/monitor/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the public REST API (``/api/v2`` + ``path``)."""
        return httpx.request(method, f"{self.base}/api/v2{path}", timeout=30, **kwargs)

    def add_connection(self, conn_id: str, conn_json: str) -> None:
        """Store a connection (the ``AIRFLOW_CONN_*`` JSON form) in the metadata DB via the API."""
        conn = json.loads(conn_json)
        body = {
            "connection_id": conn_id,
            **{k: v for k, v in conn.items() if k != "extra"},
            "extra": json.dumps(conn.get("extra") or {}),
        }
        answer = self.api("POST", "/connections", json=body)
        if answer.status_code != 201:
            raise RuntimeError(f"connection {conn_id} not stored: {answer.status_code}")

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_id`` and the API serves it."""

        def parsed() -> dict[str, Any] | None:
            answer = self.api("GET", f"/dags/{dag_id}")
            return answer.json() if answer.status_code == 200 else None

        return wait_for(f"DAG {dag_id} parsed", parsed, timeout)

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        """The state of one DAG run as the API reports it."""
        answer = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        answer.raise_for_status()
        return str(answer.json()["state"])

    def wait_for_run(self, dag_id: str, run_id: str, states: set[str], timeout: float) -> str:
        """Wait until the run reaches one of ``states``; return it."""

        def reached() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in states else None

        return wait_for(f"run {run_id} in {sorted(states)}", reached, timeout, every=2.0)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        """The end of one component's log."""
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def logs_text(self) -> str:
        """Every log the stack wrote: the components' and the task and callback logs."""
        home = Path(self.env["AIRFLOW_HOME"]) / "logs"
        files = [*self.logs.glob("*.log"), *home.rglob("*")]
        return "\n".join(p.read_text(errors="replace") for p in files if p.is_file())

    def stop(self) -> None:
        """Stop every component (SIGTERM to its session, then SIGKILL) and drop the database.

        Within ``STOP_GRACE_SECONDS`` each: the stack is thrown away, nothing is asserted after.
        """
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        postgres_client(self.server_url, "dropdb", "--force", "--if-exists", self.database)


def redis_connection(url: str) -> str:
    """An Airflow Redis connection equivalent to a redis:// URL, as JSON."""
    parts = urlparse(url)
    connection: dict[str, Any] = {"conn_type": "redis", "host": parts.hostname, "port": parts.port}
    connection["login"] = unquote(parts.username or "")
    connection["password"] = unquote(parts.password or "")
    connection["extra"] = {"db": int(parts.path.strip("/") or 0)}
    return json.dumps(connection)


def fernet_key() -> str:
    """A fresh Fernet key (trigger arguments and connections are encrypted with it)."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()

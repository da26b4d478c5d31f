"""MLflow behind its basic-auth app, as compose runs it: nobody moves the champion anonymously.

Starts a real ``mlflow server --app-name basic-auth`` through the compose entrypoint
(``docker/mlflow/auth-entrypoint.sh``, SQLite stores in a temporary folder instead of Postgres),
creates rankflow's users with ``docker/mlflow/sync_users.py`` as the admin, then has rankflow's
own code (``move_champion``, the Ranking page's ``read_champion`` / ``read_report``) run in child
processes with MLflow's standard MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD: the
pipeline user moves the alias and uploads a report, the reader only reads, anyone else is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from alert_receivers import free_port

ROOT = Path(__file__).resolve().parents[3]
ENTRYPOINT = ROOT / "docker" / "mlflow" / "auth-entrypoint.sh"
SYNC_USERS = ROOT / "docker" / "mlflow" / "sync_users.py"
MODEL = "rankflow-ranker"
REPORT = "<html><body>rankflow-auth-report-5c1e</body></html>"

# One child per identity runs rankflow's own MLflow code: promote:<version>, read, upload:<run id>.
ACT = """
import json, sys
from rankflow.config import load_settings
settings = load_settings()
out = {}
for action in sys.argv[1:]:
    name, _, arg = action.partition(":")
    try:
        if name == "promote":
            from rankflow.model.registry import mlflow_client, move_champion
            move = move_champion(settings, mlflow_client(settings), arg)
            out[action] = f"moved {move.champion_before} {move.champion_after}"
        elif name == "read":
            from rankflow.ui.page_sources import read_champion, read_report
            champion = read_champion(settings)
            version = getattr(champion, "version", None)
            out[action] = [version or champion.message[:300], read_report(settings, "1") or ""]
        elif name == "upload":
            from mlflow import MlflowClient
            MlflowClient().log_text(arg, "<html>forged</html>", "report.html")
            out[action] = "uploaded"
    except Exception as error:
        out[action] = f"refused {type(error).__name__} {str(error)[:300]}"
print(json.dumps(out))
"""


@dataclass
class MlflowServer:
    """A running basic-auth MLflow server and its users' passwords."""

    url: str
    folder: Path
    passwords: dict[str, str]
    run_id: str = ""


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 240) -> None:
    """Wait for the server's /health (unauthenticated), or fail when it died or took too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=3):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout:.0f} s")


def client_env(
    server: MlflowServer, user: str | None, password: str | None = None
) -> dict[str, str]:
    """A child's environment: rankflow settings on this server, as ``user`` (None: anonymous)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=server.url,
        RANKFLOW_HOME=str(server.folder / "home"),
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    if user is not None:
        env["MLFLOW_TRACKING_USERNAME"] = user
        env["MLFLOW_TRACKING_PASSWORD"] = password or server.passwords[user]
    return env


def run_as(
    server: MlflowServer, code: str, user: str | None, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child process with ``user``'s MLflow credentials in its environment."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=client_env(server, user, password),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def seed_as_pipeline(server: MlflowServer) -> str:
    """As rankflow-pipeline: a run with a report, two registered versions, champion = 1."""
    code = f"""
from mlflow import MlflowClient
client = MlflowClient()
experiment = client.create_experiment("rankflow")
run = client.create_run(experiment)
client.log_text(run.info.run_id, {REPORT!r}, "report.html")
client.create_registered_model({MODEL!r})
for _ in range(2):
    client.create_model_version({MODEL!r}, run.info.artifact_uri + "/model", run_id=run.info.run_id)
client.set_registered_model_alias({MODEL!r}, "champion", "1")
print(run.info.run_id)
"""
    result = run_as(server, code, "rankflow-pipeline")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[-1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server --app-name basic-auth`` through the compose entrypoint, users synced."""
    folder = tmp_path_factory.mktemp("mlflow-auth")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    passwords = {
        name: secrets.token_hex(16) for name in ("admin", "rankflow-pipeline", "rankflow-reader")
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{folder / 'mlflow.db'}",
        MLFLOW_AUTH_CONFIG_PATH=str(folder / "auth" / "basic_auth.ini"),
        MLFLOW_AUTH_DATABASE_URI=f"sqlite:///{folder / 'auth.db'}",
        MLFLOW_AUTH_ADMIN_USERNAME="admin",
        MLFLOW_AUTH_ADMIN_PASSWORD=passwords["admin"],
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # no job runner and huey workers: not used
    )
    command = [
        *("sh", str(ENTRYPOINT), "mlflow", "server", "--app-name=basic-auth"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--serve-artifacts"),
        *("--artifacts-destination", (folder / "artifacts").as_uri()),
    ]
    log = folder / "server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_healthy(url, process)
        server = MlflowServer(url, folder, passwords)
        sync_env = {
            **client_env(server, "admin"),
            "MLFLOW_PIPELINE_PASSWORD": passwords["rankflow-pipeline"],
            "MLFLOW_READER_PASSWORD": passwords["rankflow-reader"],
        }
        synced = subprocess.run(
            [sys.executable, str(SYNC_USERS)],
            env=sync_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert synced.returncode == 0, synced.stderr[-3000:]
        assert "created MLflow user 'rankflow-reader'" in synced.stdout
        server.run_id = seed_as_pipeline(server)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL, None):
            print(log.read_text()[-4000:])


def act(
    server: MlflowServer, user: str | None, *actions: str, password: str | None = None
) -> dict[str, Any]:
    """Run rankflow's MLflow actions as ``user``; return each action's outcome."""
    result = run_as(server, ACT, user, *actions, password=password)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return outcome


@pytest.mark.slow
def test_only_the_pipeline_moves_the_champion_or_uploads(mlflow_server: MlflowServer) -> None:
    server = mlflow_server
    upload = f"upload:{server.run_id}"
    anonymous = act(server, None, "promote:2", upload, "read")
    assert anonymous["promote:2"].startswith("refused"), anonymous
    assert anonymous[upload].startswith("refused"), anonymous
    assert anonymous["read"][0].startswith("Could not read MLflow"), anonymous["read"]
    assert "rankflow-auth-report-5c1e" not in anonymous["read"][1]
    wrong = act(server, "rankflow-pipeline", "promote:2", password="not-the-password")
    assert wrong["promote:2"].startswith("refused"), wrong

    reader = act(server, "rankflow-reader", "promote:2", upload, "read")
    assert "error code 403" in reader["promote:2"], reader  # authenticated, not allowed
    assert reader[upload].startswith("refused"), reader
    assert reader["read"][0] == "1"  # nothing above moved it
    assert "rankflow-auth-report-5c1e" in reader["read"][1]  # the report is still the real one

    pipeline = act(server, "rankflow-pipeline", "promote:2", upload)
    assert pipeline == {"promote:2": "moved 1 2", upload: "uploaded"}
    assert act(server, "rankflow-reader", "read")["read"][0] == "2"


@pytest.mark.slow
def test_the_auth_configuration_is_private_and_holds_no_password(
    mlflow_server: MlflowServer,
) -> None:
    config = mlflow_server.folder / "auth" / "basic_auth.ini"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert "default_permission = READ" in text
    assert not [p for p in mlflow_server.passwords.values() if p in text]


def test_the_entrypoint_refuses_a_server_without_basic_auth(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.token_hex(16),
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
    }
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "echo", "mlflow", "server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "without --app-name basic-auth" in result.stderr

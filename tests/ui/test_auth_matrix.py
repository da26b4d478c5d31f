"""The 401/403 matrix against a real ``airflow api-server`` with the FAB auth manager.

As the compose stack runs it: FAB users and roles in the metadata DB (SQLite in a temporary
AIRFLOW_HOME here), created by the same ``docker/airflow/sync_users.py`` airflow-init runs, JWTs
from FAB's ``POST /auth/token``. Each of no token, viewer, op and admin tries to trigger a DAG,
create a backfill, open the Ranking page, look a user up and read a run report. The lookups must
leave an audit line naming who looked up whom, and no credential in the server's log.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from screenshot import ROOT, airflow_command, api_server, migrate, page_in_process, server_env

FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
DAG_ID = "rankflow_auth_probe"
PROBE_DAG = f"""
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("{DAG_ID}", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False):
    EmptyOperator(task_id="noop")
"""
ROLES = ("viewer", "op", "admin")
OK, UNAUTHENTICATED, FORBIDDEN = 200, 401, 403
# who may do what: the security model of docs/security.md
EXPECTED = {
    "trigger": {None: 401, "viewer": 403, "op": 200, "admin": 200},
    "backfill": {None: 401, "viewer": 403, "op": 200, "admin": 200},
    "page": {None: 401, "viewer": 200, "op": 200, "admin": 200},
    "lookup": {None: 401, "viewer": 403, "op": 200, "admin": 200},
    "report": {None: 401, "viewer": 200, "op": 200, "admin": 200},
}


@dataclass
class FabServer:
    """A running API server with one FAB user per role."""

    url: str
    log: Path
    passwords: dict[str, str]
    jwt_secret: str

    def username(self, role: str) -> str:
        """The user name of a role's user."""
        return f"rf-{role}"


def call(
    url: str, *, method: str = "GET", token: str | None = None, body: Any = None
) -> tuple[int, str]:
    """One HTTP request; returns the status and body, also for an error status."""
    headers = {"accept": "application/json"}
    data = None
    if token:
        headers["authorization"] = f"Bearer {token}"
    if body is not None:
        headers["content-type"] = "application/json"
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def user_env(passwords: dict[str, str]) -> dict[str, str]:
    """The .env variables sync_users.py reads, for one user per role."""
    env = {}
    for role, password in passwords.items():
        env[f"AIRFLOW_{role.upper()}_USERNAME"] = f"rf-{role}"
        env[f"AIRFLOW_{role.upper()}_PASSWORD"] = password
    return env


def run_logged(command: list[str], env: dict[str, str], log: Path) -> None:
    """Run a set-up command with its output in ``log``; fail with the log's tail."""
    with log.open("a") as out:
        result = subprocess.run(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False
        )
    assert result.returncode == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def fab_server(tmp_path_factory: pytest.TempPathFactory, seeded: Any) -> Iterator[FabServer]:
    """``airflow api-server`` with the FAB auth manager, three users and a probe DAG."""
    folder = tmp_path_factory.mktemp("fab")
    dags = folder / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(PROBE_DAG)
    log = folder / "api-server.log"
    passwords = {role: secrets.token_urlsafe(16) for role in ROLES}
    jwt_secret = secrets.token_hex(32)
    env = server_env(seeded.env, folder / "home", dags)
    env.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS")
    env.update(
        AIRFLOW__CORE__AUTH_MANAGER=FAB,
        AIRFLOW__API_AUTH__JWT_SECRET=jwt_secret,
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(32),
    )
    migrate(env, folder / "migrate.log")
    sync = [sys.executable, str(ROOT / "docker" / "airflow" / "sync_users.py")]
    run_logged(sync, {**env, **user_env(passwords)}, folder / "users.log")
    run_logged([airflow_command(), "dags", "reserialize"], env, folder / "dags.log")
    with api_server(env, log) as base_url:
        yield FabServer(base_url, log, passwords, jwt_secret)


def token_of(server: FabServer, role: str) -> str:
    """A JWT from FAB's token endpoint for a role's user."""
    body = {"username": server.username(role), "password": server.passwords[role]}
    status, text = call(f"{server.url}/auth/token", method="POST", body=body)
    assert status == 201, text
    token: str = json.loads(text)["access_token"]
    return token


def attempt(server: FabServer, action: str, token: str | None, seeded: Any) -> tuple[int, str]:
    """Try one action of the matrix with ``token`` (None: anonymous)."""
    url = server.url
    if action == "trigger":
        body = {"logical_date": None, "conf": {}}
        return call(f"{url}/api/v2/dags/{DAG_ID}/dagRuns", method="POST", token=token, body=body)
    if action == "backfill":
        return create_and_cancel_backfill(url, token)
    user = seeded.users[0]
    paths = {
        "page": f"/ranking/?surface={seeded.surface}",
        "lookup": f"/ranking/?surface={seeded.surface}&user={user}",
        "report": f"/ranking/report/{seeded.champion_version}",
    }
    return call(url + paths[action], token=token)


def create_and_cancel_backfill(url: str, token: str | None) -> tuple[int, str]:
    """Create a two-day backfill, then cancel it so the next role can create its own."""
    body = {
        "dag_id": DAG_ID,
        "from_date": "2026-02-01T00:00:00Z",
        "to_date": "2026-02-02T00:00:00Z",
        "run_backwards": False,
        "dag_run_conf": {},
        "reprocess_behavior": "none",
        "max_active_runs": 1,
    }
    status, text = call(f"{url}/api/v2/backfills", method="POST", token=token, body=body)
    if status == OK:
        backfill_id = json.loads(text)["id"]
        cancelled, detail = call(
            f"{url}/api/v2/backfills/{backfill_id}/cancel", method="PUT", token=token
        )
        assert cancelled == OK, detail
    return status, text


@pytest.mark.slow
@pytest.mark.services
def test_the_401_403_matrix_under_fab(fab_server: FabServer, seeded: Any) -> None:
    tokens: dict[str | None, str | None] = {None: None}
    tokens.update({role: token_of(fab_server, role) for role in ROLES})
    seen = {
        action: {
            role: attempt(fab_server, action, token, seeded)[0] for role, token in tokens.items()
        }
        for action in EXPECTED
    }
    assert seen == EXPECTED

    user = seeded.users[0]
    _, viewer_page = attempt(fab_server, "page", tokens["viewer"], seeded)
    assert 'id="lookup-not-allowed"' in viewer_page
    assert 'id="lookup-form"' not in viewer_page
    _, op_lookup = attempt(fab_server, "lookup", tokens["op"], seeded)
    assert 'id="lookup-form"' in op_lookup
    assert f'id="lookup-summary">User <b>{user}</b>' in op_lookup
    first_item = seeded.lists[user][0]
    assert f"<td>{first_item}</td>" in op_lookup or str(first_item) in op_lookup
    _, report = attempt(fab_server, "report", tokens["viewer"], seeded)
    assert seeded.report_marker in report


@pytest.mark.slow
@pytest.mark.services
def test_credentials_are_checked(fab_server: FabServer) -> None:
    """A wrong password gets no token; a token signed with another key is refused."""
    body = {"username": fab_server.username("admin"), "password": "not-the-password"}
    status, _ = call(f"{fab_server.url}/auth/token", method="POST", body=body)
    assert status == UNAUTHENTICATED
    valid = jwt.decode(
        token_of(fab_server, "admin"),
        fab_server.jwt_secret,
        algorithms=["HS512"],
        options={"verify_aud": False},
    )
    placeholder_key = "change-me-jwt-secret-" * 4  # pragma: allowlist secret
    forged = jwt.encode(valid, placeholder_key, algorithm="HS512")
    status, _ = call(f"{fab_server.url}/ranking/report/1", token=forged)
    assert status == FORBIDDEN
    status, _ = call(f"{fab_server.url}/api/v2/dags", token=forged)
    assert status == FORBIDDEN


@pytest.mark.slow
@pytest.mark.services
def test_lookups_are_audited_without_credentials(fab_server: FabServer, seeded: Any) -> None:
    user = seeded.users[1]
    op_token, viewer_token = token_of(fab_server, "op"), token_of(fab_server, "viewer")
    assert attempt_lookup(fab_server, seeded, user, op_token) == OK
    assert attempt_lookup(fab_server, seeded, user, viewer_token) == FORBIDDEN
    allowed = f"lookup by 'rf-op' of user {user} on {seeded.surface}"
    refused = f"lookup refused: 'rf-viewer' (not Op or higher) asked for user {user}"
    log = wait_for_log(fab_server.log, [allowed, refused])
    for secret in (op_token, viewer_token, *fab_server.passwords.values(), fab_server.jwt_secret):
        assert secret not in log


def attempt_lookup(server: FabServer, seeded: Any, user: int, token: str) -> int:
    """Look ``user`` up on the page; return the status."""
    return call(f"{server.url}/ranking/?surface={seeded.surface}&user={user}", token=token)[0]


def wait_for_log(log: Path, lines: list[str], timeout: float = 10) -> str:
    """The server's log once it holds every one of ``lines`` (logs are flushed asynchronously)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if all(re.search(re.escape(line), text) for line in lines):
            return text
        time.sleep(0.2)
    missing = [line for line in lines if line not in text]
    raise AssertionError(f"not in the API server's log: {missing}\n{text[-3000:]}")


# --------------------------------------------------------------------------- SimpleAuthManager


@pytest.fixture
def simple_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """The page's app under SimpleAuthManager (``make airflow``'s), in process, no services."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    manager = SimpleAuthManager()
    with page_in_process(monkeypatch, tmp_path / "home", manager) as client:
        yield client, manager


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_lookups_need_op_under_the_simple_auth_manager(
    simple_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Viewer and user get the page without lookups; op and admin look up, and are logged."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    client, manager = simple_client
    audit_log = logging.getLogger("rankflow.ranking_page.lookups")
    audit_log.addHandler(caplog.handler)  # the audit logger does not propagate to the root
    seen = {}
    for role in ("viewer", "user", "op", "admin"):
        user = SimpleAuthManagerUser(username=f"someone-{role}", role=role)
        client.cookies.set("_token", manager.generate_jwt(user))
        page = client.get("/ranking/?surface=home")
        lookup = client.get("/ranking/?surface=search&user=0042")
        seen[role] = (page.status_code, 'id="lookup-form"' in page.text, lookup.status_code)
    assert seen == {
        "viewer": (200, False, 403),
        "user": (200, False, 403),
        "op": (200, True, 200),
        "admin": (200, True, 200),
    }
    audit_log.removeHandler(caplog.handler)
    audit = [r.getMessage() for r in caplog.records if r.name == audit_log.name]
    assert audit == [
        "lookup refused: 'someone-viewer' (not Op or higher) asked for user 42 on search",
        "lookup refused: 'someone-user' (not Op or higher) asked for user 42 on search",
        "lookup by 'someone-op' of user 42 on search",
        "lookup by 'someone-admin' of user 42 on search",
    ]

"""The embedded PostgreSQL server: initialised once, password logins only, stopped by ``down``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from alert_receivers import free_port
from rankflow.config import Settings, load_settings
from rankflow.ops import services
from rankflow.ops.local_secrets import (
    POSTGRES_VARIABLE,
    defined_variables,
    local_secrets_text,
    write_local_secrets,
)

pytestmark = pytest.mark.services
PASSWORD = "pg-Test_pw-1234"  # pragma: allowlist secret (a throwaway test cluster's)


def psql(url: str, sql: str, password: str) -> subprocess.CompletedProcess[str]:
    """Run one statement through the real ``psql`` client over TCP."""
    parsed = urlparse(url)
    command = [
        services.postgres_binary("psql"),
        "-h",
        "127.0.0.1",
        "-p",
        str(parsed.port),
        "-U",
        str(parsed.username),
        "-d",
        parsed.path.lstrip("/"),
        "-tAc",
        sql,
    ]
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, str]]:
    """A fresh embedded server on a free port under a temporary home; stopped afterwards.

    The home is a folder of its own under the system's temporary folder, open to others (755):
    under root the server runs as the postgres system user, which must reach its data.
    """
    home = Path(tempfile.mkdtemp(prefix="rankflow-postgres-"))
    home.chmod(0o755)
    url = f"postgresql://rankflow:{PASSWORD}@127.0.0.1:{free_port()}/airflow"
    monkeypatch.setenv(POSTGRES_VARIABLE, url)
    settings = load_settings({**os.environ, "RANKFLOW_HOME": str(home)})
    yield settings, url
    service = services.postgres_service(settings, url)
    services.stop(service, services.run_dir(settings))
    shutil.rmtree(home, ignore_errors=True)


def test_the_server_is_made_once_and_takes_only_its_password(postgres) -> None:
    settings, url = postgres
    service = next(s for s in services.local_services(settings) if s.name == "postgres")
    assert service.port == urlparse(url).port
    assert PASSWORD not in " ".join(service.command)  # never in a process's argv
    started = services.start(service, services.run_dir(settings))
    assert started.startswith("postgres: started on 127.0.0.1:")
    done = psql(url, "select current_database(), current_user", PASSWORD)
    assert (done.returncode, done.stdout.strip()) == (0, "airflow|rankflow"), done.stderr
    refused = psql(url, "select 1", "not-the-password")
    assert refused.returncode != 0
    assert "password authentication failed" in refused.stderr
    data = services.run_dir(settings) / "postgres" / "data"
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    assert not (data.parent / "initdb-password").exists()
    assert PASSWORD not in (services.run_dir(settings) / "postgres.log").read_text()
    if os.geteuid() == 0:  # Postgres refuses root: under CI the server runs as postgres
        owner = subprocess.run(
            ["ps", "-o", "user=", "-p", (services.run_dir(settings) / "postgres.pid").read_text()],
            capture_output=True,
            text=True,
            check=True,
        )
        assert owner.stdout.strip() == "postgres"
    psql(url, "create table kept (x int); insert into kept values (42)", PASSWORD)
    stopped = services.stop(service, services.run_dir(settings))
    assert stopped.startswith("postgres: stopped")
    assert not services.listening("127.0.0.1", service.port)
    # a second start reuses the cluster (same password, same data) instead of initialising
    services.start(service, services.run_dir(settings))
    assert psql(url, "select x from kept", PASSWORD).stdout.strip() == "42"


def test_the_secrets_file_gains_the_postgres_url_and_keeps_the_redis_passwords(
    tmp_path: Path,
) -> None:
    path = tmp_path / "local-secrets.mk"
    old = "\n".join(
        line for line in local_secrets_text().splitlines() if POSTGRES_VARIABLE not in line
    )
    path.write_text(old + "\n")
    path.chmod(0o600)
    assert write_local_secrets(path) is True
    text = path.read_text()
    assert text.startswith(old)  # the Redis users' passwords did not change
    assert POSTGRES_VARIABLE in defined_variables(text)
    (line,) = [line for line in text.splitlines() if POSTGRES_VARIABLE in line]
    url = urlparse(line.split(" := ", 1)[1])
    assert (url.username, url.hostname, url.port, url.path) == (
        "rankflow",
        "127.0.0.1",
        5439,
        "/airflow",
    )
    assert len(url.password or "") >= 32
    assert write_local_secrets(path) is False  # nothing missing: nothing written
    assert path.read_text() == text
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_home_the_postgres_user_cannot_reach_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root hands the cluster to the postgres system user")
    closed = tmp_path / "closed"
    (closed / "home").mkdir(parents=True)
    closed.chmod(0o700)
    with pytest.raises(services.ServiceError, match="closed to others"):
        services.init_postgres(closed / "home" / "data", "rankflow", PASSWORD)

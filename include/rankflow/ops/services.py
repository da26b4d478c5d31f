"""The embedded services: redis-server, an S3-compatible endpoint (moto), a Spark Connect server.

Both keep their state and logs under ``$RANKFLOW_HOME/run``; ``up`` starts what is not already
listening, ``down`` stops what ``up`` started. Production points the same settings at
Redis/ElastiCache and AWS S3/MinIO instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from rankflow.config import Settings
from rankflow.ops.local_secrets import local_secrets_path
from rankflow.store.acl import acl_file_text, url_credentials


class ServiceError(RuntimeError):
    """A local service could not be started."""


@dataclass(frozen=True)
class Service:
    """One local service: its name, port and how to start it."""

    name: str
    host: str
    port: int
    command: list[str]
    env: dict[str, str] | None = None
    wait_seconds: float = 30.0
    private_files: tuple[tuple[Path, str], ...] = ()  # written (mode 0600) before the start


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def run_dir(settings: Settings) -> Path:
    """Return the folder holding the services' pid files, logs and data."""
    return settings.paths.home / "run"


def redis_acl_file(settings: Settings) -> str | None:
    """The embedded server's ACL file from the three URLs' users (None when none has one)."""
    urls = {
        "RANKFLOW_REDIS_URL": settings.redis.url,
        "RANKFLOW_REDIS_READER_URL": settings.redis.reader_url,
        "RANKFLOW_REDIS_ADMIN_URL": settings.redis.admin_url,
    }
    writer, reader, admin = (url_credentials(url) for url in urls.values())
    if writer is None and reader is None and admin is None:
        return None
    if writer is None or reader is None or admin is None:
        missing = [name for name, url in urls.items() if url_credentials(url) is None]
        raise ServiceError(
            f"{', '.join(missing)} carry no ACL user and password: the embedded Redis needs "
            "all three (writer, reader, admin) or none; `make` writes them to "
            f"{local_secrets_path(settings)}"
        )
    return acl_file_text(settings.redis.key_prefix, writer=writer, reader=reader, admin=admin)


def local_services(settings: Settings) -> list[Service]:
    """Describe the services the settings point at when they are local."""
    services = []
    redis = urlparse(settings.redis.url)
    if redis.hostname in ("127.0.0.1", "localhost"):
        data = run_dir(settings) / "redis"
        acl = redis_acl_file(settings)
        acl_path = run_dir(settings) / "redis-users.acl"
        services.append(
            Service(
                "redis",
                "127.0.0.1",
                redis.port or 6379,
                [
                    shutil.which("redis-server") or "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(redis.port or 6379),
                    "--dir",
                    str(data),
                    "--save",
                    "300 1",
                    "--appendonly",
                    "no",
                    "--maxmemory",
                    settings.redis.embedded_maxmemory,
                    "--maxmemory-policy",
                    "noeviction",  # an evicted list would be a lost user
                    "--protected-mode",
                    "yes",
                    *(["--aclfile", str(acl_path)] if acl else []),
                ],
                private_files=((acl_path, acl),) if acl else (),
            )
        )
    s3 = urlparse(settings.s3.endpoint_url or "")
    if s3.hostname in ("127.0.0.1", "localhost"):
        services.append(
            Service(
                "s3",
                "127.0.0.1",
                s3.port or 80,
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3.port or 80)],
            )
        )
    connect = urlparse(settings.spark.connect_url or "")
    if connect.hostname in ("127.0.0.1", "localhost"):
        services.append(spark_connect_service(settings, connect.port or 15002))
    return services


def spark_connect_service(settings: Settings, port: int) -> Service:
    """A local Spark Connect server with Delta: the Spark steps attach to its warm JVM."""
    from rankflow.lake.session import connect_server_command

    return Service(
        "spark-connect",
        "127.0.0.1",
        port,
        connect_server_command(settings, port),
        env={"PYSPARK_PYTHON": sys.executable},
        wait_seconds=180.0,  # the first start may resolve Delta's jars from Maven Central
    )


def start(service: Service, folder: Path) -> str:
    """Start a service in the background unless its port already answers; wait until it does."""
    if listening(service.host, service.port):
        return f"{service.name}: already listening on {service.host}:{service.port}"
    if not Path(service.command[0]).exists() and shutil.which(service.command[0]) is None:
        raise ServiceError(
            f"{service.command[0]} is not installed: run `make setup` "
            "(it installs redis-server from Debian's packages)"
        )
    (folder / service.name).mkdir(parents=True, exist_ok=True)
    for path, text in service.private_files:
        write_private(path, text)
    log = (folder / f"{service.name}.log").open("ab")
    process = subprocess.Popen(
        service.command,
        env={**os.environ, **(service.env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=folder / service.name,
    )
    (folder / f"{service.name}.pid").write_text(str(process.pid))
    deadline = time.monotonic() + service.wait_seconds
    while time.monotonic() < deadline:
        if listening(service.host, service.port):
            return f"{service.name}: started on {service.host}:{service.port} (pid {process.pid})"
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise ServiceError(
        f"{service.name} did not start on {service.host}:{service.port}; "
        f"see {folder / service.name}.log"
    )


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created 0600, never world-readable in between)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def stop(service: Service, folder: Path) -> str:
    """Stop a service that ``start`` launched (found by its pid file)."""
    pid_file = folder / f"{service.name}.pid"
    if not pid_file.exists():
        return f"{service.name}: not started by rankflow"
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)  # started in its own session: the whole group
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and listening(service.host, service.port):
        time.sleep(0.2)
    pid_file.unlink(missing_ok=True)
    return f"{service.name}: stopped (pid {pid})"


def up(settings: Settings) -> list[str]:
    """Start every local service the settings need."""
    folder = run_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    return [start(service, folder) for service in local_services(settings)]


def down(settings: Settings) -> list[str]:
    """Stop every local service started by :func:`up` (the Connect server even if now unset)."""
    folder = run_dir(settings)
    services = local_services(settings)
    if not any(s.name == "spark-connect" for s in services):
        services.append(spark_connect_service(settings, 15002))
    return [stop(service, folder) for service in services]

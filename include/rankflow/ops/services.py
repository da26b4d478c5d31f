"""The embedded services: redis-server, S3 (moto), Spark Connect, PostgreSQL (Airflow's DB).

They keep their state and logs under ``$RANKFLOW_HOME/run``; ``up`` starts what is not already
listening, ``down`` stops what ``up`` started. Production points the same settings at
Redis/ElastiCache, AWS S3/MinIO and a managed Postgres instead.

PostgreSQL comes from Debian's packages (``/usr/lib/postgresql/<version>/bin``); its cluster is
initialised once under ``run/postgres/data`` with the user and password of
``RANKFLOW_POSTGRES_URL`` (``make`` keeps it with the other local secrets), listens on
127.0.0.1 only and takes password (SCRAM) logins. Postgres refuses to run as root, so under root
(CI) the cluster belongs to the ``postgres`` system user the package creates and the server runs
as that user (``setpriv``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from rankflow.config import Settings
from rankflow.ops.local_secrets import DEFAULT_POSTGRES_URL, POSTGRES_VARIABLE, local_secrets_path
from rankflow.store.acl import acl_file_text, url_credentials

POSTGRES_SYSTEM_USER = "postgres"  # created by Debian's postgresql package
POSTGRES_SETPRIV = ("--reuid=postgres", "--regid=postgres", "--init-groups", "--reset-env")


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
    prepare: Callable[[], None] | None = None  # run before the start (e.g. initialise data)
    ready: Callable[[], None] | None = None  # run once it listens (e.g. create a database)
    stop_signal: int = signal.SIGTERM


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
    """The embedded server's ACL file from the URLs' users (None when none has one).

    The writer, reader and admin are required together; the serving log's user is added when
    ``RANKFLOW_REDIS_LOGGER_URL`` names one.
    """
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
    logger = url_credentials(settings.redis.logger_url)
    return acl_file_text(
        settings.redis.key_prefix, writer=writer, reader=reader, admin=admin, logger=logger
    )


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
                    # users' lists (4 x K bytes: K <= 256) and item vectors (76 B) in hash
                    # buckets stay compact listpacks (the default allows 64 B)
                    "--hash-max-listpack-value",
                    "1024",
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
    database = urlparse(postgres_url() or "")
    if database.hostname in ("127.0.0.1", "localhost"):
        services.append(postgres_service(settings, database.geturl()))
    return services


def postgres_url(env: Mapping[str, str] | None = None) -> str | None:
    """The metadata database's URL (``RANKFLOW_POSTGRES_URL``; ``make`` sets it), if any."""
    return (os.environ if env is None else env).get(POSTGRES_VARIABLE) or None


def postgres_binary(name: str) -> str:
    """A PostgreSQL server program from Debian's packages (the newest version installed)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return str(found[-1]) if found else shutil.which(name) or name


def as_postgres_user(command: list[str]) -> list[str]:
    """The command as the ``postgres`` system user when we are root (Postgres refuses root)."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", *POSTGRES_SETPRIV, "--", *command]


def postgres_service(settings: Settings, url: str) -> Service:
    """The local PostgreSQL server of ``url`` (a ``postgresql://`` URL with user and password)."""
    parsed = urlparse(url)
    data = run_dir(settings) / "postgres" / "data"
    port = parsed.port or 5432
    return Service(
        "postgres",
        "127.0.0.1",
        port,
        as_postgres_user(
            [
                postgres_binary("postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",  # TCP only: no socket under /var/run to own
            ]
        ),
        wait_seconds=60.0,
        prepare=lambda: init_postgres(data, parsed.username or "", unquote(parsed.password or "")),
        ready=lambda: create_database(url),
        stop_signal=signal.SIGINT,  # fast shutdown: open Airflow connections do not hold it up
    )


def init_postgres(data: Path, user: str, password: str) -> None:
    """Initialise the cluster under ``data`` once: ``user`` with ``password``, SCRAM logins."""
    if (data / "PG_VERSION").exists():
        return
    if not user or not password:
        raise ServiceError(f"{POSTGRES_VARIABLE} names no user and password for the local Postgres")
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    if os.geteuid() == 0:
        closed = [str(p) for p in data.parents if not p.stat().st_mode & stat.S_IXOTH]
        if closed:
            raise ServiceError(
                f"the postgres system user cannot reach {data}: {closed[0]} is closed to others "
                "(chmod o+x it, or set RANKFLOW_HOME elsewhere)"
            )
    password_file = data.parent / "initdb-password"
    write_private(password_file, password)
    if os.geteuid() == 0:
        for path in (data, password_file):
            shutil.chown(path, POSTGRES_SYSTEM_USER, POSTGRES_SYSTEM_USER)
    command = [
        postgres_binary("initdb"),
        "-D",
        str(data),
        "-U",
        user,
        f"--pwfile={password_file}",
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
    ]
    try:
        done = subprocess.run(
            as_postgres_user(command), capture_output=True, text=True, check=False
        )
    finally:
        password_file.unlink(missing_ok=True)
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)  # a half-made cluster would never start
        raise ServiceError(f"initdb failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")


def postgres_client(url: str, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a client program (``createdb``, ``dropdb``...) as the user of ``url`` on its server.

    The password goes through the environment (``PGPASSWORD``), never on a command line.
    """
    parsed = urlparse(url)
    command = [
        postgres_binary(tool),
        "-h",
        parsed.hostname or "127.0.0.1",
        "-p",
        str(parsed.port or 5432),
        "-U",
        parsed.username or "",
        *args,
    ]
    env = {**os.environ, "PGPASSWORD": unquote(parsed.password or ""), "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def create_database(url: str) -> None:
    """Create the URL's database on its server unless it exists."""
    name = urlparse(url).path.lstrip("/")
    for _ in range(20):  # the server may listen a moment before it accepts logins
        done = postgres_client(url, "createdb", name)
        if done.returncode == 0 or "already exists" in done.stderr:
            return
        if "starting up" not in done.stderr:
            break
        time.sleep(0.5)
    raise ServiceError(f"could not create database {name!r}: {done.stderr.strip()[-500:]}")


def spark_connect_service(settings: Settings, port: int, name: str = "spark-connect") -> Service:
    """A Spark Connect server with Delta on the settings' master: steps attach to its warm JVM."""
    from rankflow.lake.session import connect_server_command

    return Service(
        name,
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
    if service.prepare is not None:
        service.prepare()
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
            if service.ready is not None:
                service.ready()
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
        os.killpg(pid, service.stop_signal)  # started in its own session: the whole group
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
    """Stop every local service started by :func:`up` (Connect and Postgres even if now unset)."""
    folder = run_dir(settings)
    services = local_services(settings)
    if not any(s.name == "spark-connect" for s in services):
        services.append(spark_connect_service(settings, 15002))
    if not any(s.name == "postgres" for s in services):
        services.append(postgres_service(settings, DEFAULT_POSTGRES_URL))
    return [stop(service, folder) for service in services]

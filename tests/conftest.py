"""Shared fixtures: settings pointed at a temporary home, and the real local services."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from rankflow.config import DEFAULT_REDIS_URL, DEFAULT_S3_ENDPOINT, Settings, load_settings


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), 2):
            return True
    except OSError:
        return False


REDIS_URL_VARIABLES = (
    "RANKFLOW_REDIS_URL",
    "RANKFLOW_REDIS_READER_URL",
    "RANKFLOW_REDIS_ADMIN_URL",
    "RANKFLOW_REDIS_LOGGER_URL",
)


def on_test_db(url: str) -> str:
    """The same server and user on DB 15, the tests' own database."""
    return url.rsplit("/", 1)[0] + "/15"


def pytest_configure(config: pytest.Config) -> None:
    """Point every Redis user of this process and its children at DB 15 of the same server."""
    os.environ.setdefault("RANKFLOW_REDIS_URL", DEFAULT_REDIS_URL)
    for variable in REDIS_URL_VARIABLES:
        if os.environ.get(variable):
            os.environ[variable] = on_test_db(os.environ[variable])


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The writer's URL of the real local Redis server started by `make up`, on DB 15."""
    url = os.environ["RANKFLOW_REDIS_URL"]
    if not _reachable(url):
        pytest.fail(f"Redis is not reachable at {url}: start the services with `make up`")
    return url


@pytest.fixture(scope="session")
def redis_admin_url(redis_url: str) -> str:
    """The admin's URL on DB 15 (the writer's when the server has no ACL users)."""
    return os.environ.get("RANKFLOW_REDIS_ADMIN_URL") or redis_url


@pytest.fixture
def redis_client(redis_admin_url: str) -> Iterator[object]:
    """An admin client on the tests' Redis DB, flushed before and after each test."""
    import redis

    client = redis.Redis.from_url(redis_admin_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """URL of the real local S3-compatible server started by `make up`."""
    url = os.environ.get("RANKFLOW_S3_ENDPOINT", DEFAULT_S3_ENDPOINT)
    if not _reachable(url):
        pytest.fail(f"the S3 endpoint is not reachable at {url}: start it with `make up`")
    return url


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, s3_endpoint: str) -> Settings:
    """Settings whose home, bucket and Redis DB belong to this test alone."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)  # mlflow.set_tracking_uri exports it to the process
    env.update(
        RANKFLOW_HOME=str(tmp_path / "home"),
        RANKFLOW_REDIS_URL=redis_url,
        RANKFLOW_S3_ENDPOINT=s3_endpoint,
        RANKFLOW_S3_BUCKET=f"test-{tmp_path.name.lower().replace('_', '-')}"[:60],
    )
    return load_settings(env)


@pytest.fixture(scope="session")
def spark_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spark-home")


@pytest.fixture(scope="session")
def spark(spark_home: Path) -> Iterator[object]:
    """One local Spark session with Delta Lake, shared by every test that asks for it."""
    from rankflow.lake.session import get_session

    env = {**os.environ, "RANKFLOW_HOME": str(spark_home), "RANKFLOW_SPARK_MASTER": "local[2]"}
    env["RANKFLOW_SHUFFLE_PARTITIONS"] = "2"
    session = get_session(load_settings(env), "rankflow-tests")
    yield session
    session.stop()


# --------------------------------------------------------------------------- CPU per module
# `RANKFLOW_TEST_CPU=1 make test` ends with the wall and the machine-wide CPU seconds (every
# process: pytest, its jobs, the services) of each test module, the slowest first: the suite is
# CPU-bound on 2 cores, so CPU seconds, not wall seconds alone, say where a cut would help.
CPU_BY_MODULE: dict[str, list[float]] = {}


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat, idle and iowait left out)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Add the test's wall and machine CPU seconds (setup, call, teardown) to its module's."""
    if not os.environ.get("RANKFLOW_TEST_CPU"):
        yield
        return
    began, busy = time.monotonic(), machine_cpu_seconds()
    yield
    totals = CPU_BY_MODULE.setdefault(item.nodeid.split("::")[0], [0.0, 0.0])
    totals[0] += time.monotonic() - began
    totals[1] += machine_cpu_seconds() - busy


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the modules by wall seconds with their CPU seconds and busy cores."""
    if not CPU_BY_MODULE:
        return
    terminalreporter.section("wall and machine CPU seconds per module")
    ranked = sorted(CPU_BY_MODULE.items(), key=lambda entry: -entry[1][0])
    for module, (wall, cpu) in ranked[:25]:
        cores = cpu / wall if wall else 0.0
        terminalreporter.write_line(f"{wall:8.0f} s {cpu:8.0f} cpu-s {cores:5.2f} cores  {module}")
    wall, cpu = (sum(values) for values in zip(*CPU_BY_MODULE.values(), strict=True))
    terminalreporter.write_line(f"{wall:8.0f} s {cpu:8.0f} cpu-s in all")

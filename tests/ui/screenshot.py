"""Screenshot of the Ranking page: start `airflow api-server`, open the page in headless Chromium.

Uses the current environment as the Makefile sets it up: RANKFLOW_HOME (monitoring history, item
features, MLflow), RANKFLOW_REDIS_URL and AIRFLOW_HOME (a migrated metadata DB: `make setup`).
The API server runs on a free local port with every user an admin (it listens on 127.0.0.1 only
and stops when the screenshot is taken)::

    make screenshot RANKING_USER=1042   # = tests/ui/screenshot.py --out docs/ranking-page.png

The UI tests import the helpers below (server, browser) from this file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
WINDOW = (1400, 2200)


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chromium_binary() -> str | None:
    """Return Debian's chromium (or another Chromium build named by $CHROMIUM), if installed."""
    names = [os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"]
    return next((path for name in names if name and (path := shutil.which(name))), None)


def _chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once with a throw-away profile."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium is not installed: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--mute-audio",
            f"--user-data-dir={profile}",
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)


def dump_dom(url: str, *, budget_ms: int = 5000, timeout: float = 90) -> str:
    """Return the DOM Chromium built for ``url`` (after ``budget_ms`` of virtual time)."""
    return _chromium([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout).stdout


def screenshot(
    url: str, out: Path, *, window: tuple[int, int] = WINDOW, budget_ms: int = 5000
) -> Path:
    """Save a PNG of ``url`` as Chromium renders it in a ``window`` (width, height) viewport."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    _chromium(
        [
            f"--window-size={window[0]},{window[1]}",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={out}",
            url,
        ],
        timeout=90,
    )
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


def server_env(base: Mapping[str, str], airflow_home: Path, dags_folder: Path) -> dict[str, str]:
    """The API server's environment: this checkout's plugins, no DAG parsing, all admins."""
    env = dict(base)
    env.update(
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__LAZY_LOAD_PLUGINS="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL=base.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "dags")]),
        RANKFLOW_ROOT=str(ROOT),
    )
    return env


def airflow_command() -> str:
    """The ``airflow`` entry point of the running interpreter's environment."""
    local = Path(sys.executable).parent / "airflow"
    return str(local) if local.exists() else "airflow"


def migrate(env: Mapping[str, str], log: Path) -> None:
    """Create or upgrade the Airflow metadata DB of ``env``'s AIRFLOW_HOME."""
    with log.open("a") as out:
        subprocess.run(
            [airflow_command(), "db", "migrate"],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=300,
        )


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the API server answers its health endpoint (or died, or took too long)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"airflow api-server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=3):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"airflow api-server at {base_url} not healthy after {timeout:.0f} s")


@contextlib.contextmanager
def api_server(env: Mapping[str, str], log: Path, *, timeout: float = 180) -> Iterator[str]:
    """Run ``airflow api-server`` (one worker) on a free port; yield its base URL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [airflow_command(), "api-server", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--workers", "1"],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its worker too
        )
    try:
        wait_healthy(base_url, process, timeout)
        yield base_url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@contextlib.contextmanager
def page_in_process(monkeypatch: Any, home: Path, manager: Any) -> Iterator[Any]:
    """The page's app mounted as the API server mounts it, under ``manager``, with no services.

    ``home`` is an empty RANKFLOW_HOME and Redis is unreachable: every section must say so.
    Yields a FastAPI ``TestClient``.
    """
    from airflow.api_fastapi import app as api_app
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    if str(ROOT / "plugins") not in sys.path:
        monkeypatch.syspath_prepend(str(ROOT / "plugins"))
    import rankflow_ranking_page as plugin

    monkeypatch.setattr(api_app._AuthManagerState, "instance", manager)
    monkeypatch.setenv("RANKFLOW_HOME", str(home))
    monkeypatch.setenv("RANKFLOW_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("RANKFLOW_REDIS_READER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    outer = FastAPI()
    outer.mount(plugin.URL_PREFIX, plugin.create_app())
    with TestClient(outer) as client:
        yield client


def page_url(base_url: str, surface: str | None = None, user: str | None = None) -> str:
    """URL of the Ranking page for a surface and an optional user lookup."""
    query = {k: v for k, v in (("surface", surface), ("user", user)) if v}
    return f"{base_url}/ranking/" + (f"?{urlencode(query)}" if query else "")


def main(argv: list[str] | None = None) -> int:
    """Take the screenshot (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--surface", help="surface to show (default: scoring.surface)")
    parser.add_argument("--user", help="user id to look up on the page")
    parser.add_argument("--width", type=int, default=WINDOW[0])
    parser.add_argument("--height", type=int, default=WINDOW[1])
    args = parser.parse_args(argv)
    airflow_home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    initialised = any((airflow_home / name).exists() for name in ("airflow.db", "airflow.cfg"))
    if not initialised and not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        print(f"no Airflow DB under {airflow_home}: run `make setup` first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ranking-screenshot-") as folder:
        dags = Path(folder) / "dags"
        dags.mkdir()
        log = Path(folder) / "api-server.log"
        env = server_env(os.environ, airflow_home, dags)
        try:
            with api_server(env, log) as base_url:
                url = page_url(base_url, args.surface, args.user)
                out = screenshot(url, args.out, window=(args.width, args.height))
        except Exception:
            print(log.read_text()[-4000:] if log.exists() else "", file=sys.stderr)
            raise
    print(f"wrote {out} ({out.stat().st_size} bytes) from {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

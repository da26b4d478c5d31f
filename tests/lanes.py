"""``make test``: the whole suite in two lanes that run at the same time.

The cluster and chaos tests (about a third of the suite's minutes) spend most of their time
waiting: for JVMs and executors to start on the standalone cluster, for killed servers and steps
to come back, for barrier jobs. Run one after the other with the rest, the processor idles
through them. So they run in a lane of their own, a second ``pytest`` beside the first:

- lane ``cluster``: ``-m "cluster or chaos"``, on Redis DB 14 (``RANKFLOW_TEST_REDIS_DB``) and
  an Airflow home of its own (a copy of the migrated SQLite database: two processes running
  ``dag.test()`` must not take turns at one SQLite writer lock); its output goes to
  ``$RANKFLOW_HOME/logs/test-lane-cluster.log`` and is printed when it ends;
- lane ``main``: everything else, in the foreground, on DB 15 and the usual Airflow home.

Every other resource is already per test (S3 buckets, homes, ports, the chaos tests' own Redis
and S3 servers). Arguments narrow the run to one ordinary ``pytest`` (``make test ARGS=...``);
``RANKFLOW_TEST_LANES=1`` runs the whole suite in one lane. The exit status is the worse lane's.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDE_LANE = "cluster or chaos"
SIDE_REDIS_DB = "14"


def pytest_command(*args: str) -> list[str]:
    """``python -m pytest`` of this interpreter with ``args``."""
    return [sys.executable, "-m", "pytest", *args]


def side_airflow_home(home: Path) -> dict[str, str]:
    """An Airflow home for the side lane: a consistent copy of the migrated SQLite database."""
    airflow_home = Path(os.environ.get("AIRFLOW_HOME", home / "airflow"))
    lane_home = home / "airflow-lane-cluster"
    lane_home.mkdir(parents=True, exist_ok=True)
    database = lane_home / "airflow.db"
    for stale in (database, lane_home / "airflow.db-wal", lane_home / "airflow.db-shm"):
        stale.unlink(missing_ok=True)
    with sqlite3.connect(airflow_home / "airflow.db") as source, sqlite3.connect(database) as copy:
        source.backup(copy)
    return {
        "AIRFLOW_HOME": str(lane_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}",
    }


def run_in_lanes() -> int:
    """Start the side lane, run the main lane here, then print the side lane's output."""
    home = Path(os.environ.get("RANKFLOW_HOME", ROOT / ".rankflow"))
    log = home / "logs" / "test-lane-cluster.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RANKFLOW_TEST_REDIS_DB": SIDE_REDIS_DB, **side_airflow_home(home)}
    began = time.monotonic()
    with log.open("w") as output:
        side = subprocess.Popen(
            pytest_command("-m", SIDE_LANE, "-p", "no:cacheprovider"),
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        print(f"lane cluster: pytest -m '{SIDE_LANE}' (pid {side.pid}), output in {log}")
        try:
            main = subprocess.run(pytest_command("-m", f"not ({SIDE_LANE})"), cwd=ROOT).returncode
            print(f"lane main ended ({main}) after {time.monotonic() - began:.0f} s", flush=True)
            side_status = side.wait()
        finally:
            if side.poll() is None:
                side.terminate()
                side.wait(60)
    print(f"\n{'=' * 30} lane cluster ({side_status}) {'=' * 30}")
    print(log.read_text(errors="replace"), end="")
    print(f"both lanes ended after {time.monotonic() - began:.0f} s", flush=True)
    return max(main, side_status)


def main(argv: list[str]) -> int:
    """Narrowed runs and one-lane runs are a plain pytest; the whole suite runs in two lanes."""
    if argv or os.environ.get("RANKFLOW_TEST_LANES") == "1":
        return subprocess.run(pytest_command(*argv), cwd=ROOT).returncode
    return run_in_lanes()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

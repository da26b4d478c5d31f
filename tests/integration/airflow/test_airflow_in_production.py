"""Alerts and backfills under Airflow as it runs in production, not under ``dag.test()``.

A real ``airflow api-server``, ``scheduler`` (LocalExecutor), ``dag-processor`` and
``triggerer`` run as subprocesses on a PostgreSQL metadata database of their own
(``tests/airflow_processes.py``), with the alert channels as connections stored in the
metadata database through the REST API, as an operator adds them in the UI, pointing at the
local webhook receiver and SMTP server (``tests/alert_receivers.py``). (``AIRFLOW_CONN_*``
environment connections would hide the bug this guards: an executor-run deadline callback reads
them from its own environment but is refused the metadata database's.) The probe
DAG (``tests/dags/rankflow_alert_probe.py``) is wired like the nightly one: failure callbacks, the
gate alert task and the publication deadline of ``rankflow_alerts``. Every run is triggered
through the REST API at once, then each test waits, with a timeout, for its own outcome:

* a task failing its retry -> one alert per channel (the callback runs in the task's process);
* a rejected gate -> one alert per channel (a task);
* a run still going when its deadline passes -> one alert per channel (the triggerer runs the
  callback; the executor could not read the connections in Airflow 3.3.2);
* ``POST /api/v2/backfills`` while that run is active -> created, its runs succeed, and their
  past deadlines alert nobody (backfills are not held to them);
* the stream watch DAG (``dags/rankflow_stream_watch.py``, unchanged; its retry 5 s later through
  ``RANKFLOW_STREAM_WATCH_RETRY_SECONDS``, not a minute) over a Redis whose first
  partition was last caught up ten minutes ago -> fails after its retry, one alert per channel
  naming that partition only; Redis comes from the ``redis_rankflow`` connection, stored in the
  metadata database like the alert channels.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from airflow_processes import AirflowStack, redis_connection, wait_for
from alert_receivers import (
    WEBHOOK_SECRET,
    SmtpServer,
    Webhook,
    slack_connection,
    smtp_connection,
)

pytestmark = [pytest.mark.slow, pytest.mark.services]
PROBE = Path(__file__).resolve().parents[2] / "dags" / "rankflow_alert_probe.py"
PROBE_ID = "rankflow_alert_probe"
WATCH = Path(__file__).resolve().parents[3] / "dags" / "rankflow_stream_watch.py"
WATCH_ID = "rankflow_stream_watch"
DEADLINE_AFTER = timedelta(hours=28)  # the probe's deadline: logical date + 28 h (06:00 on D+1)
DEADLINE_IN = timedelta(seconds=45)  # the slow run's deadline passes this long after its trigger
SETTLE_SECONDS = 8  # after the first delivery, long enough for a duplicate to show up
WATCH_RETRY_SECONDS = 5  # the stream watch's retry delay in this stack (a minute in production)


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[Webhook, SmtpServer]]:
    """The local webhook and SMTP receivers, shared by the whole module."""
    webhook, smtp = Webhook(), SmtpServer()
    yield webhook, smtp
    for server in (webhook.server, smtp.server):
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, receivers: tuple[Webhook, SmtpServer], redis_url: str
) -> Iterator[AirflowStack]:
    """The four Airflow components on their own Postgres database, the probe DAG parsed."""
    webhook, smtp = receivers
    root = tmp_path_factory.mktemp("airflow-stack")
    dags = root / "dags"
    dags.mkdir()
    for dag_file in (PROBE, WATCH):
        shutil.copy(dag_file, dags / dag_file.name)
    # the tasks find Redis through the connection only, as in production
    env = {"RANKFLOW_HOME": str(root / "home"), "RANKFLOW_REDIS_URL": "redis://127.0.0.1:1/0"}
    # the test waits for the watch's retry: WATCH_RETRY_SECONDS, not the production minute
    env["RANKFLOW_STREAM_WATCH_RETRY_SECONDS"] = str(WATCH_RETRY_SECONDS)
    airflow = AirflowStack(root, dags, env)
    began = time.monotonic()
    try:
        airflow.start()
        for conn_id, conn in (
            ("slack_rankflow", slack_connection(webhook.url)),
            ("smtp_rankflow", smtp_connection(smtp.port)),
            ("redis_rankflow", redis_connection(redis_url)),
        ):
            airflow.add_connection(conn_id, conn)
        airflow.wait_for_dag(PROBE_ID)
        airflow.wait_for_dag(WATCH_ID)
        print(f"\nairflow stack up and probe parsed in {time.monotonic() - began:.0f} s")
        yield airflow
    finally:
        airflow.stop()


def trigger(
    stack: AirflowStack, run_id: str, mode: str, logical_date: datetime, dag_id: str = PROBE_ID
) -> dict[str, Any]:
    """Trigger one run through the REST API; return the run as the API shows it."""
    answer = stack.api(
        "POST",
        f"/dags/{dag_id}/dagRuns",
        json={
            "dag_run_id": run_id,
            "logical_date": logical_date.isoformat(),
            "conf": {"mode": mode},
        },
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@contextmanager
def stream_behind_on_its_first_partition(redis_admin_url: str) -> Iterator[None]:
    """Progress as two updaters leave it: partition 0's stopped 10 minutes ago, 1's is alive.

    The live one's heartbeat (its "caught up" time) is refreshed every 5 s, as a running updater
    does, so the watch's retry still sees it fresh.
    """
    import threading

    from rankflow.config import load_settings
    from rankflow.store.client import redis_client
    from rankflow.store.fresh import progress_key

    settings = load_settings()
    backend = settings.pipeline["stream"]["backend"]
    key = progress_key(settings.redis.key_prefix)
    client = redis_client(redis_admin_url)
    stopped = time.time_ns() // 1_000_000 - 600_000
    client.hset(key, f"{backend}:0", f"{stopped},{stopped}")
    done = threading.Event()

    def beat() -> None:
        while not done.is_set():
            now = time.time_ns() // 1_000_000
            client.hset(key, f"{backend}:1", f"{now},{now}")
            done.wait(5.0)

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        yield
    finally:
        done.set()
        beating.join()
        client.close()


@pytest.fixture(scope="module")
def runs(stack: AirflowStack, redis_admin_url: str) -> Iterator[dict[str, Any]]:
    """The slow run (its deadline about to pass), the failing and the gate run, all at once."""
    now = datetime.now(UTC).replace(microsecond=0)
    with stream_behind_on_its_first_partition(redis_admin_url):
        yield {
            "now": now,
            "slow": trigger(stack, "probe-slow", "slow", now - DEADLINE_AFTER + DEADLINE_IN),
            "fail": trigger(stack, "probe-fail", "fail", now - timedelta(hours=1)),
            # three days back: no other run processes its day (the scheduler's own run is
            # yesterday's)
            "gate": trigger(stack, "probe-gate", "gate", now - timedelta(days=3)),
            "watch": trigger(stack, "watch-behind", "-", now - timedelta(minutes=30), WATCH_ID),
        }


def deliveries(receivers: tuple[Webhook, SmtpServer], *marks: str) -> tuple[int, int]:
    """How many webhook bodies and e-mails show every one of ``marks`` (incident key, run)."""
    webhook, smtp = receivers
    posted = sum(all(m in json.dumps(body) for m in marks) for body in webhook.bodies)
    mailed = sum(all(m in SmtpServer.text_of(message) for m in marks) for message in smtp.messages)
    return posted, mailed


def delivered_once(receivers: tuple[Webhook, SmtpServer], *marks: str, timeout: float) -> float:
    """Wait until both channels have the alert, then check it stays at one each; the wait."""
    began = time.monotonic()
    wait_for(f"alert {marks} on both channels", lambda: all(deliveries(receivers, *marks)), timeout)
    waited = time.monotonic() - began
    time.sleep(SETTLE_SECONDS)
    assert deliveries(receivers, *marks) == (1, 1)
    return waited


def test_a_backfill_is_created_through_the_rest_api_while_a_run_is_active(
    stack, runs, receivers
) -> None:
    stack.wait_for_run(PROBE_ID, "probe-slow", {"running"}, timeout=120)
    first = (runs["now"] - timedelta(days=8)).date()
    answer = stack.api(
        "POST",
        "/backfills",
        json={
            "dag_id": PROBE_ID,
            "from_date": f"{first}T00:00:00Z",
            "to_date": f"{first + timedelta(days=2)}T00:00:00Z",
            "reprocess_behavior": "none",
            "max_active_runs": 2,
            "run_backwards": False,
            "dag_run_conf": {"mode": "ok"},
        },
    )
    assert answer.status_code == 200, answer.text
    backfill = answer.json()
    assert backfill["dag_id"] == PROBE_ID
    assert stack.run_state(PROBE_ID, "probe-slow") == "running"  # it was active all along

    def backfill_runs() -> list[dict[str, Any]] | None:
        listed = stack.api("GET", f"/dags/{PROBE_ID}/dagRuns", params={"run_type": "backfill"})
        found = listed.json()["dag_runs"]
        return found if found and {r["state"] for r in found} == {"success"} else None

    done = wait_for("the backfill's runs succeed", backfill_runs, timeout=240, every=3.0)
    assert len(done) >= 2
    # their deadlines (logical date + 28 h) are long past: a backfill is not held to them
    for run in done:
        ds = run["data_interval_start"][:10]
        assert deliveries(receivers, f"deadline-missed/{PROBE_ID}/{ds}", run["dag_run_id"]) == (
            0,
            0,
        )


def test_a_task_failing_after_its_retry_alerts_once_per_channel(stack, runs, receivers) -> None:
    state = stack.wait_for_run(PROBE_ID, "probe-fail", {"failed", "success"}, timeout=240)
    assert state == "failed"
    key = f"rankflow/task-failed/{PROBE_ID}/probe-fail/work"
    waited = delivered_once(receivers, key, timeout=60)
    print(f"\nfailure alert on both channels {waited:.0f} s after the run failed")
    webhook, smtp = receivers
    (body,) = [b for b in webhook.bodies if key in json.dumps(b)]
    assert "injected failure on try 2" in json.dumps(body)  # after its one retry
    (message,) = [m for m in smtp.messages if key in SmtpServer.text_of(m)]
    assert message["Subject"] == f"[rankflow][CRITICAL] {PROBE_ID}: task work failed"


def test_a_rejected_gate_alerts_once_per_channel(stack, runs, receivers) -> None:
    state = stack.wait_for_run(PROBE_ID, "probe-gate", {"failed", "success"}, timeout=240)
    assert state == "success"  # a rejected model is news, not a failure
    ds = runs["gate"]["data_interval_start"][:10]
    delivered_once(receivers, f"rankflow/gate-rejected/{ds}/7", timeout=60)


def test_a_missed_deadline_alerts_once_per_channel_from_the_triggerer(
    stack, runs, receivers
) -> None:
    deadline = runs["now"] + DEADLINE_IN
    ds = runs["slow"]["data_interval_start"][:10]
    key = f"rankflow/deadline-missed/{PROBE_ID}/{ds}"
    remaining = (deadline - datetime.now(UTC)).total_seconds()
    if remaining > 0:
        assert deliveries(receivers, key, "probe-slow") == (0, 0)  # nothing before the deadline
    waited = delivered_once(receivers, key, "probe-slow", timeout=max(remaining, 0) + 90)
    print(f"\ndeadline alert on both channels {waited:.0f} s after the check began")
    webhook, _ = receivers
    shown = json.dumps([b for b in webhook.bodies if "probe-slow" in json.dumps(b)])
    assert f"not published by {deadline:%Y-%m-%d %H:%M} UTC" in shown
    assert "probe-slow" in shown
    assert "(run state: running)" in shown  # it was still going
    assert stack.run_state(PROBE_ID, "probe-slow") == "running"


def test_the_stream_watch_alerts_once_per_channel_naming_the_partition_behind(
    stack, runs, receivers
) -> None:
    state = stack.wait_for_run(WATCH_ID, "watch-behind", {"failed", "success"}, timeout=300)
    assert state == "failed"
    key = f"rankflow/task-failed/{WATCH_ID}/watch-behind/check_freshness"
    delivered_once(receivers, key, timeout=60)
    webhook, _ = receivers
    (body,) = [json.dumps(b) for b in webhook.bodies if key in json.dumps(b)]
    assert "the event stream is not fresh" in body
    assert ":0: last caught up" in body, body  # about 600 s ago, past the 60 s bound
    assert ":1: " not in body, body  # the live partition is not named


def test_no_secret_reaches_a_log(stack, runs, receivers, redis_url) -> None:
    logs = stack.logs_text()
    assert "probe-fail" in logs  # the task logs are there to search
    assert WEBHOOK_SECRET not in logs
    assert urlparse(stack.url).password not in logs  # the metadata database's
    redis_password = urlparse(redis_url).password
    assert not redis_password or redis_password not in logs  # the watch's Redis connection's

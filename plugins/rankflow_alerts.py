"""Alerting for rankflow through Airflow connections: a Slack-compatible webhook and SMTP e-mail.

Channels are the connections ``slack_rankflow`` (type ``slackwebhook``: the whole webhook URL in
the password) and ``smtp_rankflow`` (type ``smtp``; ``extra.to`` lists the recipients,
``extra.from_email`` the sender). A channel whose connection is not defined is skipped; a defined
channel that still fails after its attempts makes :func:`send_alert` raise, so an unreachable
channel is never silent.

Pieces for a DAG (messages come from the pure :mod:`rankflow.ops.alerts`):

* ``default_args={..., **failure_callbacks()}``: one alert when a task fails after its last retry
  (Airflow runs ``on_failure_callback`` only then), none for a task that succeeds on a retry;
* ``deadline=publication_deadline()``: a Deadline Alert when a run has not finished publishing by
  06:00 UTC the morning after its day, delivered by the triggerer (see
  :func:`on_publication_deadline_missed` for why not the executor);
* ``send_gate_alert(ds, since)`` in a task after ``evaluate`` (which is skipped, not failed, when
  the gate rejects the model); ``send_breach_alert(ds, surface)`` in a task after the monitor
  step; ``send_alert(alert)`` for any other :class:`rankflow.ops.alerts.Alert`.

Airflow 3.3.2's ``dag.test()`` (and ``airflow dags test``) crashes when a successful run of a DAG
with ``deadline=`` finishes: ``DagRun.update_state`` looks up the in-memory serialized DAG's
deadline definitions as if they were the ``deadline_alert`` row ids that only the DAG processor's
copy holds. Deadlines are evaluated by the scheduler loop only, never under ``dag.test()``, so a
one-off test run parses the DAG without one: ``RANKFLOW_PUBLICATION_DEADLINE=off airflow dags test
rankflow_nightly DATE`` (what ``rankflow demo`` runs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from datetime import time as clock
from typing import Any

from airflow.sdk import BaseNotifier

from rankflow.config import publication_deadline as configured_deadline
from rankflow.ops.alerts import (
    Alert,
    breach_alert_from_record,
    deadline_interval,
    deadline_missed_alert,
    email_content,
    gate_alert_from_record,
    plain_text,
    run_day,
    slack_payload,
    task_failed_alert,
)
from rankflow_connections import optional_connection

log = logging.getLogger(__name__)

SLACK_CONN_ID = "slack_rankflow"
SMTP_CONN_ID = "smtp_rankflow"
NIGHTLY_START = clock(2, 0)  # the nightly schedule "0 2 * * *" (UTC)
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_SECONDS = 2.0
WEBHOOK_TIMEOUT_SECONDS = 10


class AlertDeliveryError(RuntimeError):
    """A configured alert channel still failed after its attempts."""

    def __init__(self, alert: Alert, statuses: dict[str, str], errors: dict[str, str]) -> None:
        self.alert = alert
        self.statuses = statuses
        self.errors = errors
        failed = "; ".join(f"{channel}: {error}" for channel, error in errors.items())
        super().__init__(f"alert {alert.incident_key} was not delivered ({failed}); {statuses}")


def redact(message: str, conn: Any) -> str:
    """Remove the connection's secret (webhook URL or token, SMTP password) from a message."""
    secret = (getattr(conn, "password", None) or "").strip()
    return message.replace(secret, "***") if len(secret) >= 4 else message


def send_slack(alert: Alert, conn: Any) -> None:
    """Post the alert to the Slack-compatible incoming webhook of ``conn``."""
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    timeout = int(conn.extra_dejson.get("timeout") or WEBHOOK_TIMEOUT_SECONDS)
    # no retry handlers: send_alert's attempts are the only retries, each one logged
    hook = SlackWebhookHook(slack_webhook_conn_id=conn.conn_id, timeout=timeout, retry_handlers=[])
    hook.send(**slack_payload(alert))


def send_email(alert: Alert, conn: Any) -> None:
    """E-mail the alert to the recipients in ``extra.to`` of the SMTP connection ``conn``."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    to = conn.extra_dejson.get("to")
    if not to:
        raise ValueError(f"connection {conn.conn_id!r} names no recipients (set extra.to)")
    content = email_content(alert)
    with SmtpHook(smtp_conn_id=conn.conn_id) as hook:
        # the hook's public API sends one HTML part; content.text goes to the log instead
        hook.send_email_smtp(to=to, subject=content.subject, html_content=content.html)


CHANNELS: dict[str, tuple[str, Callable[[Alert, Any], None]]] = {
    "slack": (SLACK_CONN_ID, send_slack),
    "email": (SMTP_CONN_ID, send_email),
}


def send_alert(
    alert: Alert,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
) -> dict[str, str]:
    """Send one alert to every configured channel, each with its own retries.

    Args:
        alert: the incident to report.
        attempts: tries per channel (the first included).
        backoff_seconds: wait before the second try; doubles before each further one.

    Returns:
        ``{channel: "sent" | "skipped"}`` (skipped: its connection is not defined).

    Raises:
        AlertDeliveryError: a configured channel still failed after ``attempts`` tries.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    log.info("alert %s: %s", alert.incident_key, plain_text(alert))
    statuses: dict[str, str] = {}
    errors: dict[str, str] = {}
    for channel, (conn_id, deliver) in CHANNELS.items():
        conn = optional_connection(conn_id)
        if conn is None:
            log.info("alert channel %s skipped: connection %r is not defined", channel, conn_id)
            statuses[channel] = "skipped"
            continue
        for attempt in range(1, attempts + 1):
            try:
                deliver(alert, conn)
            except Exception as error:
                reason = redact(f"{type(error).__name__}: {error}", conn)
                log.warning(
                    "alert %s: %s attempt %d/%d failed: %s",
                    alert.incident_key,
                    channel,
                    attempt,
                    attempts,
                    reason,
                )
                if attempt == attempts:
                    statuses[channel] = "failed"
                    errors[channel] = f"failed after {attempts} attempts, last error {reason}"
                else:
                    time.sleep(backoff_seconds * 2 ** (attempt - 1))
            else:
                statuses[channel] = "sent"
                log.info("alert %s sent to %s", alert.incident_key, channel)
                break
    if all(status == "skipped" for status in statuses.values()):
        log.warning(
            "no alert channel is configured (connections %s): alert %s is only in this log",
            ", ".join(conn_id for conn_id, _ in CHANNELS.values()),
            alert.incident_key,
        )
    if errors:
        raise AlertDeliveryError(alert, statuses, errors)
    return statuses


def as_datetime(value: Any) -> datetime | None:
    """Read a datetime from the context (a datetime, an ISO string, or nothing)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def run_record(ds: str, name: str) -> tuple[dict[str, Any], float] | None:
    """Read a step's record ``runs/ds=<ds>/<name>.json`` and its modification time (or None)."""
    from datetime import date

    from rankflow.config import load_settings
    from rankflow.runs import run_record_path

    path = run_record_path(load_settings(), date.fromisoformat(ds), name)
    if not path.exists():
        return None
    return json.loads(path.read_text()), path.stat().st_mtime


def send_breach_alert(ds: str, surface: str, **kwargs: Any) -> dict[str, str]:
    """Send one alert with the breached thresholds of ``monitor-<surface>.json`` (none: nothing).

    For a ``@task(retries=0)`` after the monitor step: ``send_alert`` already retries each
    channel, and a task retry would repeat the alert on the channels that did receive it.
    """
    found = run_record(ds, f"monitor-{surface}")
    if found is None:
        raise FileNotFoundError(f"no monitor record for {ds} ({surface}): did monitor run?")
    alert = breach_alert_from_record(found[0])
    if alert is None:
        log.info("no monitoring threshold breached for %s (%s)", ds, surface)
        return {}
    return send_alert(alert, **kwargs)


def log_url_of(ti: Any) -> str | None:
    """The task instance's log URL in the UI (None when it cannot be built)."""
    try:
        return str(ti.log_url)
    except Exception:  # the link is a nicety: never let it stop the alert
        log.debug("no log URL for %s", getattr(ti, "task_id", "?"), exc_info=True)
        return None


def send_gate_alert(ds: str | None, since: datetime | None = None, **kwargs: Any) -> dict[str, str]:
    """Send one alert when tonight's promotion gate rejected the model (nothing otherwise).

    For a ``@task(retries=0, trigger_rule="all_done")`` after ``evaluate``, which exits as
    skipped on a rejection (the champion keeps serving and the night goes on). Only a record
    written since ``since`` (the run's start) counts, and a backfill's decision is not alerted.
    """
    if not ds:  # the run failed before it had a day (that failure has its own alert)
        log.info("no day to check: the run never reached the gate")
        return {}
    found = run_record(ds, "evaluation")
    if found is None:
        log.info("no evaluation record for %s: the gate did not decide tonight", ds)
        return {}
    record, written = found
    if since is not None and written < since.timestamp():
        log.info("the evaluation record of %s predates this run: nothing to alert", ds)
        return {}
    if record.get("backfill") or record["gate"]["promote"]:
        return {}
    return send_alert(gate_alert_from_record(record), **kwargs)


def failure_alert_from_context(context: Any) -> Alert:
    """Build the alert for a task that failed after its last retry from the callback context."""
    ti = context["ti"]
    error = context.get("exception")
    logical_date = as_datetime(context.get("logical_date"))
    return task_failed_alert(
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        logical_date=logical_date.isoformat() if logical_date else None,
        try_number=getattr(ti, "try_number", None),
        error=None if error is None else f"{type(error).__name__}: {error}",
        log_url=log_url_of(ti),
    )


class RankflowAlertNotifier(BaseNotifier):
    """Report a failed task (after its last retry) on the rankflow alert channels."""

    def __init__(
        self, *, attempts: int = DEFAULT_ATTEMPTS, backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    ) -> None:
        super().__init__()
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds

    def notify(self, context: Any) -> None:
        """Send the alert; a delivery failure is logged loudly, never raised into the callback."""
        try:
            alert = failure_alert_from_context(context)
            send_alert(alert, attempts=self.attempts, backoff_seconds=self.backoff_seconds)
        except AlertDeliveryError as error:
            log.error("ALERT NOT DELIVERED: %s\n%s", error, plain_text(error.alert))
        except Exception:
            log.exception("ALERT NOT SENT: building or sending the failure alert failed")


def failure_callbacks(
    *, attempts: int = DEFAULT_ATTEMPTS, backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
) -> dict[str, Any]:
    """What to merge into a DAG's ``default_args``: one alert per task failing its last retry."""
    notifier = RankflowAlertNotifier(attempts=attempts, backoff_seconds=backoff_seconds)
    return {"on_failure_callback": [notifier]}


def deadline_alert_from_context(context: dict[str, Any]) -> Alert | None:
    """The alert for a run that missed its deadline (None for a backfill, which is not held).

    ``context`` is what the scheduler hands a deadline callback: ``dag_run`` as the REST API
    shows it and ``deadline`` (``id``, ``deadline_time``).
    """
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    if run.get("run_type") == "backfill":
        log.info(
            "deadline of backfill run %s passed: backfills are not alerted", run.get("dag_run_id")
        )
        return None
    return deadline_missed_alert(
        dag_id=str(run.get("dag_id") or "unknown DAG"),
        ds=run_day(run.get("conf"), run.get("data_interval_start")),
        deadline=as_datetime(deadline.get("deadline_time")) or datetime.now(UTC),
        run_id=str(run.get("dag_run_id") or "unknown run"),
        run_state=run.get("state"),
        queued_at=as_datetime(run.get("queued_at")),
    )


async def on_publication_deadline_missed(
    context: dict[str, Any],
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
) -> str:
    """Deadline callback, run by the triggerer: the run had not published by its deadline.

    A triggerer callback, not an executor one: in Airflow 3.3 a callback the executor runs gets
    a workload token that the Execution API refuses for connections
    (``AirflowSecretsBackendAccessDenied``), while the triggerer reads them through its
    in-process Execution API, from every secrets backend (environment, metadata DB, vault...).
    The hooks are synchronous, so the delivery runs in a worker thread. Raises
    :class:`AlertDeliveryError` when a channel fails: the callback is then marked failed with
    the reason in the triggerer's log.

    Returns the channels' statuses as text (``slack: sent, email: sent``): Airflow stores it as
    the callback's output, a text column (a dict there would crash the triggerer's loop).
    """
    alert = deadline_alert_from_context(context)
    if alert is None:
        return "not alerted: backfill"
    statuses = await asyncio.to_thread(
        send_alert, alert, attempts=attempts, backoff_seconds=backoff_seconds
    )
    return ", ".join(f"{channel}: {status}" for channel, status in statuses.items())


def publication_deadline(
    *,
    at: clock | None = None,
    schedule_at: clock = NIGHTLY_START,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
) -> Any:
    """Deadline Alert: the run for day D must have finished by D+1 ``at`` (UTC); None if off.

    ``at`` defaults to :func:`rankflow.config.publication_deadline` (06:00, or the
    ``RANKFLOW_PUBLICATION_DEADLINE`` the DAG processor sees; ``off`` gives no deadline).

    The reference is the run's logical date, which for a ``CronDataIntervalTimetable`` at
    ``schedule_at`` is D ``schedule_at`` (the data interval start); the interval adds the time to
    D+1 ``at`` (28 h for 02:00 and 06:00). A run that finishes successfully before then has its
    deadline removed by Airflow; otherwise the scheduler queues
    :func:`on_publication_deadline_missed` for the triggerer (``airflow triggerer`` must run, as
    it does under ``airflow standalone`` and in the compose stack).
    """
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    at = at or configured_deadline()
    if at is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=deadline_interval(schedule_at, at),
        callback=AsyncCallback(
            on_publication_deadline_missed,
            kwargs={"attempts": attempts, "backoff_seconds": backoff_seconds},
        ),
        name=f"lists published by {at:%H:%M} UTC",
    )

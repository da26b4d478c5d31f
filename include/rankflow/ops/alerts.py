"""Alert messages: what an incident says, its key, and how Slack and e-mail show it.

Pure logic (no Airflow, no network): the Airflow side (``plugins/rankflow_alerts.py``) builds an
:class:`Alert` with one of the ``*_alert`` functions and delivers the renderings of
:func:`slack_payload` and :func:`email_content` through the channels' connections.

An incident key names one incident (a task failing in one run, one day's gate decision, one day's
breaches, one day's missed deadline) so that a receiver can deduplicate repeats.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")
KEY_PREFIX = "rankflow"
# Slack's Block Kit limits (characters): header text, section text, one field, fields per section
SLACK_HEADER_MAX = 150
SLACK_TEXT_MAX = 3000
SLACK_FIELD_MAX = 2000
SLACK_FIELDS_MAX = 10
SEVERITY_EMOJI = {
    "critical": ":rotating_light:",
    "warning": ":warning:",
    "info": ":information_source:",
}
SEVERITY_COLOUR = {"critical": "#b00020", "warning": "#b26a00", "info": "#1f5fa8"}


@dataclass(frozen=True)
class Alert:
    """One incident to report: a title, what happened, how bad, and the facts behind it."""

    title: str
    text: str
    severity: Severity
    incident_key: str
    link: str | None = None
    fields: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        """Reject an alert that no one could act on (no title, unknown severity, no key)."""
        if not self.title.strip():
            raise ValueError("an alert needs a title")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if not self.incident_key.strip():
            raise ValueError("an alert needs an incident key")


@dataclass(frozen=True)
class EmailContent:
    """An alert as an e-mail: subject line, plain-text body and HTML body."""

    subject: str
    text: str
    html: str


def incident_key(kind: str, *parts: object) -> str:
    """Join ``rankflow/<kind>/<part>/...``; slashes inside a part become ``_``."""
    if not kind or any(str(part) == "" for part in parts):
        raise ValueError(f"an incident key needs a kind and non-empty parts: {kind!r} {parts!r}")
    return "/".join([KEY_PREFIX, kind, *(str(part).replace("/", "_") for part in parts)])


def number(value: Any, digits: int = 4) -> str:
    """Format a metric value for people: fixed decimals, ``n/a`` for missing, ``NaN`` kept."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def first_line(text: str, limit: int = 300) -> str:
    """Return the first non-empty line of ``text``, cut to ``limit`` characters."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def task_failed_alert(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    logical_date: str | None,
    try_number: int | None,
    error: str | None,
    log_url: str | None = None,
) -> Alert:
    """Alert for a task that failed after its last retry (or without retry, when it may not)."""
    reason = first_line(error or "") or "no error message (see the task log)"
    tries = "?" if try_number is None else str(try_number)
    return Alert(
        title=f"{dag_id}: task {task_id} failed",
        text=f"Task {task_id} of run {run_id} failed on try {tries} and will not be retried: "
        f"{reason}",
        severity="critical",
        incident_key=incident_key("task-failed", dag_id, run_id, task_id),
        link=log_url,
        fields=(
            ("DAG", dag_id),
            ("task", task_id),
            ("run", run_id),
            ("logical date", logical_date or "n/a"),
            ("try", tries),
        ),
    )


def gate_rejected_alert(
    gate: Mapping[str, Any],
    *,
    ds: str,
    model_version: str | None = None,
    champion_version: str | None = None,
    link: str | None = None,
) -> Alert:
    """Alert for a promotion gate that rejected a challenger (``gate`` as in evaluation.json).

    Args:
        gate: the ``"gate"`` object of ``runs/ds=<day>/evaluation.json``: ``promote``,
            ``reason``, ``checks`` (``name``, ``passed``, ``detail``), ``metric``, ``challenger``,
            ``champion`` (``None`` on a first model).
        ds: the day the model was trained for (YYYY-MM-DD).
        model_version: the challenger's registered version, when known.
        champion_version: the champion that stays, when known.
        link: the run report or the evaluate task's log.

    Raises:
        ValueError: the gate promoted the model (nothing to alert about).
    """
    if gate.get("promote", False):
        raise ValueError("the gate promoted this model: there is no rejection to report")
    metric = str(gate.get("metric") or "metric")
    failed = [c for c in gate.get("checks") or [] if not c.get("passed", False)]
    reason = str(gate.get("reason") or (failed[0].get("detail") if failed else "no reason given"))
    lines = [f"The promotion gate rejected the model trained for {ds}: {reason}."]
    lines.append(
        f"{metric}: challenger {number(gate.get('challenger'))}, "
        f"champion {number(gate.get('champion'))}."
    )
    if failed:
        lines.append("Failed checks:")
        lines.extend(f"• {c.get('name', '?')}: {c.get('detail', '')}" for c in failed)
    lines.append(
        f"Model version {champion_version} stays champion."
        if champion_version
        else "The current champion stays."
    )
    fields = [
        ("day", ds),
        ("metric", metric),
        ("challenger", number(gate.get("challenger"))),
        ("champion", number(gate.get("champion"))),
        ("failed checks", str(len(failed))),
    ]
    if model_version:
        fields.append(("model version", model_version))
    return Alert(
        title=f"rankflow: promotion gate rejected the model for {ds}",
        text="\n".join(lines),
        severity="warning",
        incident_key=incident_key("gate-rejected", ds, model_version or "challenger"),
        link=link,
        fields=tuple(fields),
    )


def gate_alert_from_record(record: Mapping[str, Any], *, link: str | None = None) -> Alert | None:
    """Gate alert for an evaluation record (``runs/ds=<day>/evaluation.json``), if it rejected.

    Returns ``None`` when the record holds no gate decision, the gate promoted the model, or the
    record is a backfill's (a backfill never moves the champion, so its decision is no incident).
    """
    gate = record.get("gate")
    if not gate or gate.get("promote", False) or record.get("backfill", False):
        return None
    return gate_rejected_alert(
        gate,
        ds=str(record.get("ds") or "unknown day"),
        model_version=None if record.get("model_version") is None else str(record["model_version"]),
        champion_version=None
        if record.get("previous_champion") is None
        else str(record["previous_champion"]),
        link=link,
    )


def breach_line(breach: Mapping[str, Any]) -> str:
    """Describe one breached threshold: metric, subject, value and the bound it crossed."""
    value, lower, upper = breach.get("value"), breach.get("lower"), breach.get("upper")
    subject = f" [{breach['subject']}]" if breach.get("subject") else ""
    if isinstance(value, int | float) and lower is not None and value < lower:
        bound = f"below the lower bound {number(lower)}"
    elif isinstance(value, int | float) and upper is not None and value > upper:
        bound = f"above the upper bound {number(upper)}"
    else:
        bound = f"outside [{number(lower)}, {number(upper)}]"
    source = breach.get("threshold_source")
    return f"{breach.get('metric', '?')}{subject} = {number(value)}, {bound}" + (
        f" ({source} threshold)" if source else ""
    )


def threshold_breach_alert(
    breaches: Sequence[Mapping[str, Any]],
    *,
    ds: str,
    surface: str | None = None,
    link: str | None = None,
) -> Alert:
    """One alert for all of a day's breached monitoring thresholds.

    Args:
        breaches: dicts ``{metric, subject, value, lower, upper, threshold_source}``; ``lower``
            or ``upper`` is ``None`` for a one-sided threshold, ``subject`` names the feature,
            surface or model the metric is about (may be empty).
        ds: the monitored day (YYYY-MM-DD).
        surface: the surface whose lists were monitored, when the breaches concern one.
        link: where the metric history is shown (the Ranking page).

    Raises:
        ValueError: no breach (nothing to alert about).
    """
    if not breaches:
        raise ValueError("no threshold was breached: there is nothing to report")
    where = f" ({surface})" if surface else ""
    lines = [f"{len(breaches)} monitoring threshold(s) breached for {ds}{where}:"]
    lines.extend(f"• {breach_line(b)}" for b in breaches)
    fields = [("day", ds)] + ([("surface", surface)] if surface else [])
    fields += [
        (
            f"{b.get('metric', '?')}" + (f" [{b['subject']}]" if b.get("subject") else ""),
            number(b.get("value")),
        )
        for b in breaches[: SLACK_FIELDS_MAX - len(fields)]
    ]
    return Alert(
        title=f"rankflow: {len(breaches)} threshold(s) breached for {ds}{where}",
        text="\n".join(lines),
        severity="warning",
        incident_key=incident_key("thresholds-breached", ds, surface or "all"),
        link=link,
        fields=tuple(fields),
    )


def breach_alert_from_record(record: Mapping[str, Any], *, link: str | None = None) -> Alert | None:
    """Breach alert for a monitor record (``runs/ds=<day>/monitor-<surface>.json``), if any."""
    found = record.get("breaches") or []
    if not found:
        return None
    surface = record.get("surface")
    return threshold_breach_alert(
        found,
        ds=str(record.get("ds") or "unknown day"),
        surface=None if surface is None else str(surface),
        link=link,
    )


def deadline_missed_alert(
    *,
    dag_id: str,
    ds: str,
    deadline: datetime,
    run_id: str,
    run_state: str | None,
    link: str | None = None,
    queued_at: datetime | None = None,
) -> Alert:
    """Alert for lists that were not published by the deadline (the nightly run was late).

    ``queued_at`` (the run's) after the deadline means the run was created too late to make it,
    most often because the scheduler was not running: the alert says so.
    """
    state = run_state or "unknown"
    text = (
        f"The nightly run {run_id} had not finished publishing the lists for {ds} by its "
        f"deadline {deadline:%Y-%m-%d %H:%M} UTC (run state: {state}). Readers are still "
        "served the previous lists."
    )
    fields = [
        ("DAG", dag_id),
        ("day", ds),
        ("deadline (UTC)", f"{deadline:%Y-%m-%d %H:%M}"),
        ("run", run_id),
        ("run state", state),
    ]
    if queued_at is not None and queued_at > deadline:
        text += (
            f" The run was only queued at {queued_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC, after "
            "its deadline: was the scheduler stopped?"
        )
        fields.append(("queued (UTC)", f"{queued_at.astimezone(UTC):%Y-%m-%d %H:%M}"))
    return Alert(
        title=f"rankflow: lists for {ds} not published by {deadline:%Y-%m-%d %H:%M} UTC",
        text=text,
        severity="critical",
        incident_key=incident_key("deadline-missed", dag_id, ds),
        link=link,
        fields=tuple(fields),
    )


def deadline_interval(schedule_at: time, deadline_at: time) -> timedelta:
    """Time from a nightly run's logical date to its publication deadline.

    A daily cron data-interval schedule at ``schedule_at`` gives the run for day D the logical
    date D ``schedule_at`` (its data interval start); it starts at D+1 ``schedule_at`` and must
    have published by D+1 ``deadline_at``.

    Raises:
        ValueError: the deadline is not after the run's start on D+1.
    """
    start = timedelta(hours=schedule_at.hour, minutes=schedule_at.minute)
    end = timedelta(hours=deadline_at.hour, minutes=deadline_at.minute)
    if end <= start:
        raise ValueError(
            f"the deadline {deadline_at:%H:%M} must be after the run starts ({schedule_at:%H:%M})"
        )
    return timedelta(days=1) + end - start


def run_day(conf: Mapping[str, Any] | None, data_interval_start: str | datetime | None) -> str:
    """Day a nightly run processes: its ``ds`` param, else its data interval start's date."""
    if conf and conf.get("ds"):
        return str(conf["ds"])
    if isinstance(data_interval_start, datetime):
        return data_interval_start.date().isoformat()
    if data_interval_start:
        return str(data_interval_start)[:10]
    return "unknown day"


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn reserves (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Render an alert as a Slack incoming-webhook body: fallback ``text`` plus Block Kit blocks."""
    label = alert.severity.upper()
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": clip(alert.title, SLACK_HEADER_MAX)},
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": clip(
                    f"{SEVERITY_EMOJI[alert.severity]} *{label}* {slack_escape(alert.text)}",
                    SLACK_TEXT_MAX,
                ),
            },
        },
    ]
    if alert.fields:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": clip(f"*{slack_escape(k)}*\n{slack_escape(v)}", SLACK_FIELD_MAX),
                    }
                    for k, v in alert.fields[:SLACK_FIELDS_MAX]
                ],
            }
        )
    context = f"incident `{slack_escape(alert.incident_key)}`"
    if alert.link:
        context += f" · <{alert.link}|details>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {
        "text": clip(f"[{label}] {alert.title}: {first_line(alert.text)}", 3000),
        "blocks": blocks,
    }


def plain_text(alert: Alert) -> str:
    """Render an alert as plain text (the e-mail's text part and the log line's body)."""
    lines = [f"[{alert.severity.upper()}] {alert.title}", "", alert.text, ""]
    width = max((len(k) for k, _ in alert.fields), default=0)
    lines += [f"{k.ljust(width)}  {v}" for k, v in alert.fields]
    if alert.link:
        lines += ["", f"Details: {alert.link}"]
    lines += ["", f"Incident: {alert.incident_key}"]
    return "\n".join(lines).strip() + "\n"


def email_content(alert: Alert) -> EmailContent:
    """Render an alert as an e-mail: ``[rankflow][SEVERITY] title``, text and HTML bodies."""
    esc = html.escape
    colour = SEVERITY_COLOUR[alert.severity]
    paragraphs = "".join(f"<p>{esc(p)}</p>" for p in alert.text.split("\n") if p.strip())
    rows = "".join(
        f'<tr><th align="left" style="padding-right:12px">{esc(k)}</th><td>{esc(v)}</td></tr>'
        for k, v in alert.fields
    )
    link = f'<p><a href="{esc(alert.link, quote=True)}">Details</a></p>' if alert.link else ""
    body = (
        f'<html><body><h2 style="color:{colour}">[{alert.severity.upper()}] {esc(alert.title)}'
        f"</h2>{paragraphs}"
        + (f"<table>{rows}</table>" if rows else "")
        + f"{link}<p><small>Incident: <code>{esc(alert.incident_key)}</code></small></p>"
        "</body></html>"
    )
    subject = f"[rankflow][{alert.severity.upper()}] {first_line(alert.title, 200)}"
    return EmailContent(subject=subject, text=plain_text(alert), html=body)

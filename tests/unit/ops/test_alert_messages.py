"""Alert messages (pure): incident keys, the four formatters, Slack and e-mail renderings."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta

import pytest

from rankflow.ops.alerts import (
    SLACK_FIELDS_MAX,
    SLACK_HEADER_MAX,
    Alert,
    breach_alert_from_record,
    deadline_interval,
    deadline_missed_alert,
    email_content,
    gate_alert_from_record,
    gate_rejected_alert,
    incident_key,
    number,
    plain_text,
    run_day,
    slack_payload,
    task_failed_alert,
    threshold_breach_alert,
)

REJECTED = {
    "promote": False,
    "reason": "lists: catalog_coverage 0.0812 (floor 0.1169)",
    "metric": "ipw_ndcg@10",
    "challenger": 0.4213,
    "champion": 0.4071,
    "checks": [
        {"name": "beats popularity", "passed": True, "detail": "0.4213 vs popularity 0.3148"},
        {"name": "vs champion", "passed": True, "detail": "+0.0142 (95% CI +0.0031 .. +0.0250)"},
        {
            "name": "lists: catalog_coverage",
            "passed": False,
            "detail": "lists: catalog_coverage 0.0812 (floor 0.1169)",
        },
    ],
}
PSI = {
    "metric": "psi",
    "subject": "item_ctr_7d",
    "value": 0.3141,
    "lower": None,
    "upper": 0.2,
    "threshold_source": "calibrated",
}


def failed_task(error: str | None = "RuntimeError: boom") -> Alert:
    return task_failed_alert(
        dag_id="rankflow_nightly",
        task_id="score",
        run_id="scheduled__2026-10-30T02:00:00+00:00",
        logical_date="2026-10-30T02:00:00+00:00",
        try_number=3,
        error=error,
        log_url="http://localhost:8080/dags/rankflow_nightly/runs/x/tasks/score?try_number=3",
    )


def test_incident_keys_name_one_incident() -> None:
    assert incident_key("task-failed", "d", "scheduled__2026/x", "t") == (
        "rankflow/task-failed/d/scheduled__2026_x/t"
    )
    assert failed_task().incident_key == failed_task("another error").incident_key
    with pytest.raises(ValueError):
        incident_key("gate-rejected", "")


def test_an_alert_needs_a_title_a_known_severity_and_a_key() -> None:
    with pytest.raises(ValueError, match="title"):
        Alert(title=" ", text="t", severity="critical", incident_key="k")
    with pytest.raises(ValueError, match="severity"):
        Alert(title="t", text="t", severity="fatal", incident_key="k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="incident key"):
        Alert(title="t", text="t", severity="info", incident_key="")


def test_numbers_for_people() -> None:
    assert number(0.123456) == "0.1235"
    assert number(None) == "n/a"
    assert number(math.nan) == "NaN"
    assert number(12) == "12"
    assert number(True) == "True"
    assert number("0.5") == "0.5"


def test_a_failed_task_alert_keeps_the_first_line_of_the_error() -> None:
    alert = failed_task("AirflowException: Cannot execute: spark-submit\nTraceback ...\n  more")
    assert alert.severity == "critical"
    assert "AirflowException: Cannot execute: spark-submit" in alert.text
    assert "Traceback" not in alert.text
    assert ("try", "3") in alert.fields
    assert "no error message" in failed_task(None).text


def test_a_gate_rejection_shows_the_reason_the_figures_and_only_failed_checks() -> None:
    alert = gate_rejected_alert(
        REJECTED, ds="2026-10-30", model_version="12", champion_version="11"
    )
    assert alert.severity == "warning"
    assert alert.incident_key == "rankflow/gate-rejected/2026-10-30/12"
    assert "catalog_coverage 0.0812 (floor 0.1169)" in alert.text
    assert "ipw_ndcg@10: challenger 0.4213, champion 0.4071" in alert.text
    assert "beats popularity" not in alert.text  # passed checks are not listed
    assert "Model version 11 stays champion." in alert.text
    assert dict(alert.fields)["failed checks"] == "1"


def test_a_gate_record_without_champion_or_with_a_broken_model_still_renders() -> None:
    first = {**REJECTED, "champion": None, "challenger": math.nan, "checks": [], "reason": ""}
    alert = gate_rejected_alert(first, ds="2026-10-30")
    assert "challenger NaN, champion n/a" in alert.text
    assert "no reason given" in alert.text
    assert alert.incident_key == "rankflow/gate-rejected/2026-10-30/challenger"


def test_a_promoted_model_is_no_incident() -> None:
    with pytest.raises(ValueError, match="promoted"):
        gate_rejected_alert({**REJECTED, "promote": True}, ds="2026-10-30")
    record = {"ds": "2026-10-30", "model_version": 12, "previous_champion": 11}
    assert gate_alert_from_record({**record, "gate": {**REJECTED, "promote": True}}) is None
    assert gate_alert_from_record({**record, "gate": REJECTED, "backfill": True}) is None
    assert gate_alert_from_record(record) is None  # no decision recorded
    alert = gate_alert_from_record({**record, "gate": REJECTED})
    assert alert is not None
    assert dict(alert.fields)["model version"] == "12"


def test_breaches_say_which_bound_was_crossed() -> None:
    coverage = {"metric": "coverage", "subject": "home", "value": 0.81, "lower": 0.95}
    odd = {"metric": "empty_lists", "value": None, "lower": 0.0, "upper": 0.01}
    alert = threshold_breach_alert([PSI, coverage, odd], ds="2026-10-30", surface="home")
    assert alert.title == "rankflow: 3 threshold(s) breached for 2026-10-30 (home)"
    assert (
        "psi [item_ctr_7d] = 0.3141, above the upper bound 0.2000 (calibrated threshold)"
        in alert.text
    )
    assert "coverage [home] = 0.8100, below the lower bound 0.9500" in alert.text
    assert "empty_lists = n/a, outside [0.0000, 0.0100]" in alert.text
    assert alert.incident_key == "rankflow/thresholds-breached/2026-10-30/home"


def test_no_breach_is_no_alert_and_many_breaches_fit_slack() -> None:
    with pytest.raises(ValueError):
        threshold_breach_alert([], ds="2026-10-30")
    many = [{**PSI, "subject": f"feature_{i}"} for i in range(25)]
    alert = threshold_breach_alert(many, ds="2026-10-30")
    assert alert.text.count("•") == 25  # every breach in the text
    assert len(alert.fields) == SLACK_FIELDS_MAX


def test_the_deadline_alert_names_the_day_the_deadline_and_the_run_state() -> None:
    alert = deadline_missed_alert(
        dag_id="rankflow_nightly",
        ds="2026-10-29",
        deadline=datetime(2026, 10, 30, 6, tzinfo=UTC),
        run_id="scheduled__2026-10-29T02:00:00+00:00",
        run_state="running",
    )
    assert alert.title == "rankflow: lists for 2026-10-29 not published by 2026-10-30 06:00 UTC"
    assert "(run state: running)" in alert.text
    assert alert.incident_key == "rankflow/deadline-missed/rankflow_nightly/2026-10-29"
    assert "queued" not in alert.text


def test_a_run_queued_after_its_deadline_says_the_scheduler_was_late() -> None:
    deadline = datetime(2026, 12, 5, 6, tzinfo=UTC)
    common = {
        "dag_id": "rankflow_nightly",
        "ds": "2026-12-04",
        "deadline": deadline,
        "run_id": "scheduled__2026-12-04T02:00:00+00:00",
        "run_state": "running",
    }
    late = deadline_missed_alert(**common, queued_at=datetime(2026, 12, 5, 10, 57, tzinfo=UTC))
    assert "only queued at 2026-12-05 10:57 UTC, after its deadline" in late.text
    assert ("queued (UTC)", "2026-12-05 10:57") in late.fields
    in_time = deadline_missed_alert(**common, queued_at=datetime(2026, 12, 5, 2, tzinfo=UTC))
    assert "queued" not in in_time.text
    assert in_time.incident_key == late.incident_key  # the same incident either way


def test_the_deadline_interval_reaches_the_morning_after_the_day() -> None:
    assert deadline_interval(time(2, 0), time(6, 0)) == timedelta(hours=28)
    assert deadline_interval(time(2, 0), time(7, 30)) == timedelta(hours=29, minutes=30)
    with pytest.raises(ValueError, match="after the run starts"):
        deadline_interval(time(2, 0), time(1, 0))
    with pytest.raises(ValueError):
        deadline_interval(time(2, 0), time(2, 0))


def test_the_run_day_is_the_ds_param_else_the_data_interval_start() -> None:
    assert run_day({"ds": "2026-10-20"}, "2026-10-29T02:00:00Z") == "2026-10-20"
    assert run_day({"ds": None}, "2026-10-29T02:00:00Z") == "2026-10-29"
    assert run_day(None, datetime(2026, 10, 29, 2, tzinfo=UTC)) == "2026-10-29"
    assert run_day({}, None) == "unknown day"


def test_the_slack_payload_escapes_and_respects_block_kit_limits() -> None:
    alert = Alert(
        title="x" * 300,
        text="value <0 & >1 in <http://evil|click>",
        severity="warning",
        incident_key="rankflow/test/1",
        link="http://localhost:8080/dags/d",
        fields=tuple((f"f{i}", f"<{i}>") for i in range(12)),
    )
    payload = slack_payload(alert)
    header, section, fields, context = payload["blocks"]
    assert len(header["text"]["text"]) == SLACK_HEADER_MAX
    assert "value &lt;0 &amp; &gt;1 in &lt;http://evil|click&gt;" in section["text"]["text"]
    assert len(fields["fields"]) == SLACK_FIELDS_MAX
    assert fields["fields"][0]["text"] == "*f0*\n&lt;0&gt;"
    assert "<http://localhost:8080/dags/d|details>" in context["elements"][0]["text"]
    assert payload["text"].startswith("[WARNING] xxx")


def test_the_slack_payload_of_an_alert_without_fields_or_link() -> None:
    payload = slack_payload(Alert(title="t", text="x", severity="info", incident_key="k"))
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "context"]
    assert "details" not in payload["blocks"][-1]["elements"][0]["text"]


def test_the_email_has_a_subject_a_text_part_and_escaped_html() -> None:
    alert = failed_task("ValueError: <script>alert(1)</script>")
    content = email_content(alert)
    assert content.subject == "[rankflow][CRITICAL] rankflow_nightly: task score failed"
    assert "<script>" not in content.html
    assert "&lt;script&gt;" in content.html
    assert 'href="http://localhost:8080/dags/rankflow_nightly/runs/x/tasks/score?try_number=3"' in (
        content.html.replace("&amp;", "&")
    )
    assert content.text == plain_text(alert)
    assert "try           3" in content.text  # the facts, aligned
    assert content.text.rstrip().endswith(f"Incident: {alert.incident_key}")


def test_a_monitor_record_gives_one_breach_alert_or_none() -> None:
    record = {"ds": "2026-10-30", "surface": "home", "breaches": []}
    assert breach_alert_from_record(record) is None
    nan = {**PSI, "value": math.nan, "group": "feature"}
    alert = breach_alert_from_record({**record, "breaches": [nan]})
    assert alert is not None
    assert "psi [item_ctr_7d] = NaN, outside [n/a, 0.2000]" in alert.text

"""Data-quality gates: Great Expectations suites run inside the steps, before anything is written.

Each gate validates one frame (Spark or pandas) against a suite built in code. A failed
``critical`` expectation blocks the step (:class:`DataQualityError`, never retried); a failed
``warning`` is recorded and reported. Every validation keeps its JSON result and a Data Docs
HTML page under ``runs/ds=<day>/quality/``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings
from rankflow.runs import results_dir

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

CRITICAL = "critical"
WARNING = "warning"


class DataQualityError(RuntimeError):
    """A critical data-quality expectation failed: the step stops and is not retried."""


@dataclass(frozen=True)
class CheckOutcome:
    """The outcome of one expectation: what it checked, how bad a failure is, what it saw."""

    check: str
    column: str | None
    severity: str
    success: bool
    observed: str


@dataclass(frozen=True)
class QualityReport:
    """The outcome of one suite on one day's frame."""

    suite: str
    ds: str
    outcomes: tuple[CheckOutcome, ...]

    @property
    def blocking(self) -> list[CheckOutcome]:
        """Return the failed critical checks (any one blocks the step)."""
        return [o for o in self.outcomes if not o.success and o.severity == CRITICAL]

    @property
    def warnings(self) -> list[CheckOutcome]:
        """Return the failed non-critical checks (recorded, reported, not blocking)."""
        return [o for o in self.outcomes if not o.success and o.severity != CRITICAL]

    def summary(self) -> str:
        """Return one line naming every failed check."""
        failed = [f"{o.severity} {o.check}({o.column or ''}): {o.observed}" for o in self.failed]
        status = "blocked" if self.blocking else "passed"
        return f"{self.suite} {self.ds}: {status}" + (f"; {'; '.join(failed)}" if failed else "")

    @property
    def failed(self) -> list[CheckOutcome]:
        """Return every failed check, the blocking ones first."""
        return self.blocking + self.warnings

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON-ready record kept per run."""
        return {
            "suite": self.suite,
            "ds": self.ds,
            "blocked": bool(self.blocking),
            "checks": len(self.outcomes),
            "failed_critical": len(self.blocking),
            "failed_warning": len(self.warnings),
            "outcomes": [asdict(o) for o in self.outcomes],
        }


def quiet_gx_logging() -> None:
    """Keep Great Expectations' import-time INFO chatter out of task logs."""
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)


def gx() -> Any:
    """Import Great Expectations (7 s: only inside tasks, never at DAG parse time)."""
    quiet_gx_logging()
    import great_expectations

    quiet_gx_logging()
    return great_expectations


def run_suite(
    frame: Any, suite: str, expectations: list[Expectation]
) -> ExpectationSuiteValidationResult:
    """Validate a Spark or pandas frame against ``expectations`` in an ephemeral GX context."""
    great_expectations = gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = great_expectations.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if hasattr(frame, "sparkSession"):
        source = context.data_sources.add_or_update_spark(name="rankflow", persist=False)
    else:
        source = context.data_sources.add_or_update_pandas(name="rankflow")
    batch = (
        source.add_dataframe_asset(name=suite)
        .add_batch_definition_whole_dataframe("day")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    expectation_suite = great_expectations.ExpectationSuite(name=suite, expectations=expectations)
    return batch.validate(expectation_suite, result_format="SUMMARY")


def observed(result: dict[str, Any]) -> str:
    """Return a short human description of what one expectation saw."""
    if "observed_value" in result:
        return f"observed {result['observed_value']}"
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_list", [])[:3]
        share = result.get("unexpected_percent") or 0.0
        return f"{result['unexpected_count']} unexpected ({share:.2f}%), e.g. {sample}"
    return ""


def to_report(result: ExpectationSuiteValidationResult, suite: str, ds: date) -> QualityReport:
    """Turn a GX validation result into the outcomes rankflow records and gates on."""
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        raised = any(
            isinstance(v, dict) and v.get("raised_exception")
            for v in [item.exception_info, *item.exception_info.values()]
        )
        seen = observed(item.result or {})
        if raised:
            seen = f"could not be evaluated: {exception_message(item.exception_info)}"
        outcomes.append(
            CheckOutcome(
                check=config.type,
                column=config.kwargs.get("column") or config.kwargs.get("column_A"),
                severity=config.severity.value,
                success=bool(item.success) and not raised,
                observed=seen,
            )
        )
    order = {CRITICAL: 0, WARNING: 1}
    outcomes.sort(key=lambda o: (o.success, order.get(o.severity, 2), o.check, o.column or ""))
    return QualityReport(suite=suite, ds=ds.isoformat(), outcomes=tuple(outcomes))


def exception_message(info: dict[str, Any]) -> str:
    """Return the first exception message of a GX ``exception_info`` (flat or keyed by metric)."""
    for value in [info, *info.values()]:
        if isinstance(value, dict) and value.get("exception_message"):
            return str(value["exception_message"]).splitlines()[0][:200]
    return "unknown error"


def with_extra_check(report: QualityReport, outcome: CheckOutcome) -> QualityReport:
    """Add a check computed outside GX (such as label leakage) to a report."""
    return QualityReport(report.suite, report.ds, (*report.outcomes, outcome))


def data_docs_html(result: ExpectationSuiteValidationResult) -> str:
    """Render one validation result as a Data Docs page that needs no network access."""
    import re

    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    document = ValidationResultsPageRenderer(run_info_at_end=True).render(result)
    html = DefaultJinjaPageView().render(document, template="page_minimal.j2")
    html = re.sub(r'<script[^>]+src="https?://[^"]+"[^>]*>\s*</script>', "", html)
    return re.sub(r'<link[^>]+href="https?://[^"]+"[^>]*/?>', "", html)


def keep_results(
    settings: Settings, ds: date, report: QualityReport, result: ExpectationSuiteValidationResult
) -> Path:
    """Write the report (JSON) and the Data Docs page (HTML) of one validation; return the JSON."""
    folder = results_dir(settings, ds)
    folder.mkdir(parents=True, exist_ok=True)
    record = {**report.as_dict(), "validated_at": datetime.now().isoformat(timespec="seconds")}
    record["gx_result"] = result.to_json_dict()
    path = folder / f"{report.suite}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)
    (folder / f"{report.suite}.html").write_text(data_docs_html(result), encoding="utf-8")
    return path


def gate(
    settings: Settings,
    ds: date,
    frame: Any,
    suite: str,
    expectations: list[Expectation],
    extra: list[CheckOutcome] | None = None,
) -> QualityReport:
    """Validate ``frame``, keep the results, and raise when a critical check failed."""
    result = run_suite(frame, suite, expectations)
    report = to_report(result, suite, ds)
    for outcome in extra or []:
        report = with_extra_check(report, outcome)
    path = keep_results(settings, ds, report, result)
    if report.blocking:
        raise DataQualityError(f"data-quality gate blocked: {report.summary()} (details: {path})")
    if report.warnings:
        log.warning("data-quality warnings: %s", report.summary())
    return report

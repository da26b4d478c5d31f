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
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

CRITICAL = "critical"
WARNING = "warning"
# columns a ranker must never see: they are the label, or derived from what followed the impression
LABEL_COLUMNS = frozenset({"label", "clicked", "purchased", "gain", "relevance", "attractiveness"})


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


def day_bounds(ds: date) -> tuple[str, str]:
    """Return the first and last instant of ``ds`` as ISO strings (UTC)."""
    start = datetime(ds.year, ds.month, ds.day)
    end = start + timedelta(days=1) - timedelta(microseconds=1)
    return start.isoformat(), end.isoformat()


def expected_row_range(
    recent_counts: list[int], low_ratio: float, high_ratio: float, min_days: int
) -> tuple[int, int] | None:
    """Return the accepted row count from recent days' median, or None without enough history."""
    if len(recent_counts) < min_days:
        return None
    ordered = sorted(recent_counts)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return int(median * low_ratio), int(median * high_ratio) + 1


def raw_events_suite(mostly: float) -> list[Expectation]:
    """Return the contract of one day's parsed raw events (before quarantine).

    ``mostly`` lets the quarantine take the few malformed rows of a normal day; a systemic defect
    (a broken producer) exceeds it and blocks the day.
    """
    from great_expectations import expectations as gxe

    from rankflow.ingest import CORRUPT, EVENT_TYPES, MAX_ID, required_fields

    checks: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[
                *required_fields("events"),
                CORRUPT,
                "raw",
                "ds",
                "seconds_into_day",
                "impression_copies",
            ],
            exact_match=True,
            severity=CRITICAL,
        ),
        gxe.ExpectColumnValuesToBeNull(column=CORRUPT, mostly=mostly, severity=CRITICAL),
        *[
            gxe.ExpectColumnValuesToNotBeNull(column=key, mostly=mostly, severity=CRITICAL)
            for key in ("event_id", "user_id", "item_id", "session_id", "ts")
        ],
        gxe.ExpectColumnValuesToBeBetween(
            column="user_id", min_value=1, max_value=MAX_ID, mostly=mostly, severity=CRITICAL
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="event_type", value_set=list(EVENT_TYPES), mostly=mostly, severity=CRITICAL
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="position", min_value=1, mostly=mostly, severity=CRITICAL
        ),
        # the timestamp lies inside the drop's day (0 .. 86399 s after its midnight, UTC)
        gxe.ExpectColumnValuesToBeBetween(
            column="seconds_into_day",
            min_value=0,
            max_value=86399,
            mostly=mostly,
            severity=CRITICAL,
        ),
        gxe.ExpectColumnValuesToBeUnique(column="event_id", mostly=mostly, severity=CRITICAL),
        # the same impression logged twice under two event ids (a producer retrying its send)
        gxe.ExpectColumnValuesToBeBetween(
            column="impression_copies",
            min_value=1,
            max_value=1,
            mostly=mostly,
            severity=CRITICAL,
        ),
    ]
    return checks


def row_count_outcomes(
    counts: dict[date, int], days: list[date], low_ratio: float, high_ratio: float, window: int
) -> list[CheckOutcome]:
    """Check each day's row count against the median of the ``window`` days before it.

    Days without at least half a window of history are reported as passing, with the reason.
    """
    outcomes = []
    for day in days:
        recent = [counts[d] for d in sorted(counts) if day - timedelta(days=window) <= d < day]
        accepted = expected_row_range(recent, low_ratio, high_ratio, max(1, window // 2))
        rows = counts.get(day, 0)
        if accepted is None:
            seen, ok = f"{rows} rows on {day}; not judged: {len(recent)} days of history", True
        else:
            ok = accepted[0] <= rows <= accepted[1]
            seen = f"{rows} rows on {day}, accepted {accepted[0]}..{accepted[1]}"
        outcomes.append(CheckOutcome("row_count_against_recent_days", None, CRITICAL, ok, seen))
    return outcomes


def feature_suite(face: str, ds: date, max_null_share: float) -> list[Expectation]:
    """Return the ranges, null rates and freshness expected of one feature table as of ``ds``."""
    from great_expectations import expectations as gxe

    first, last = day_bounds(ds)
    if face == "items":
        return [
            gxe.ExpectColumnValuesToNotBeNull(column="item_id", severity=CRITICAL),
            gxe.ExpectColumnValuesToBeUnique(column="item_id", severity=CRITICAL),
            *[
                gxe.ExpectColumnValuesToBeBetween(
                    column=f"item_ctr_{w}", min_value=0, max_value=1, severity=CRITICAL
                )
                for w in ("1d", "7d", "28d")
            ],
            gxe.ExpectColumnValuesToBeBetween(
                column="item_price", min_value=0, strict_min=True, severity=CRITICAL
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="item_age_days", min_value=0, severity=CRITICAL
            ),
            gxe.ExpectColumnValuesToBeBetween(column="popularity", min_value=0, severity=CRITICAL),
            gxe.ExpectColumnValuesToNotBeNull(
                column="category", mostly=1 - max_null_share, severity=CRITICAL
            ),
            gxe.ExpectColumnValuesToNotBeNull(
                column="brand", mostly=1 - max_null_share, severity=WARNING
            ),
        ]
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="user_id", severity=CRITICAL),
        gxe.ExpectColumnValuesToBeUnique(column="user_id", severity=CRITICAL),
        gxe.ExpectColumnValuesToNotBeNull(
            column="country", mostly=1 - max_null_share, severity=CRITICAL
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="user_active_days_28d", min_value=0, max_value=28, severity=CRITICAL
        ),
        gxe.ExpectColumnValuesToBeBetween(column="user_clicks_28d", min_value=0, severity=CRITICAL),
        # freshness: the newest event folded into the features happened on ds itself
        gxe.ExpectColumnMaxToBeBetween(
            column="last_event_ts", min_value=first, max_value=last, severity=CRITICAL
        ),
    ]


def training_set_suite(features: list[str], max_label: int) -> list[Expectation]:
    """Return the contract of the rows a ranker is fitted on (pandas, sorted by query group)."""
    from great_expectations import expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="qid", severity=CRITICAL),
        gxe.ExpectColumnValuesToBeBetween(
            column="label", min_value=0, max_value=max_label, severity=CRITICAL
        ),
        gxe.ExpectColumnDistinctValuesToBeInSet(
            column="label", value_set=list(range(max_label + 1)), severity=CRITICAL
        ),
        *[gxe.ExpectColumnToExist(column=name, severity=CRITICAL) for name in features],
    ]


def query_groups_outcome(qids: Any) -> CheckOutcome:
    """Check that each query group's rows are contiguous and the groups come sorted by qid.

    XGBoost reads groups as runs of rows: a split group would silently become two lists.
    """
    import pandas as pd

    series = pd.Series(qids)
    runs = int((series != series.shift()).sum())
    groups = int(series.nunique())
    ordered = bool(series.is_monotonic_increasing)
    ok = runs == groups and ordered
    seen = f"{groups} groups in {runs} runs of rows, {'sorted' if ordered else 'not sorted'}"
    return CheckOutcome("query_groups_contiguous_and_sorted", "qid", CRITICAL, ok, seen)


def leaking_columns(features: list[str]) -> list[str]:
    """Return the model inputs that are the label or derived from what followed an impression."""
    return sorted(set(features) & LABEL_COLUMNS)


def perfect_separators(frame: Any, features: list[str], label: str = "label") -> list[str]:
    """Return the features that order clicked above unclicked rows (almost) perfectly: a leak.

    A ranking feature that knows the outcome has a click AUC of ~1 (or ~0); an honest one
    stays far from both.
    """
    import numpy as np

    positive = frame[label].to_numpy() > 0
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return []
    leaks = []
    for name in features:
        ranks = frame[name].rank(method="average").to_numpy()
        if np.isnan(ranks).any():
            continue
        auc = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        if auc >= 0.999 or auc <= 0.001:
            leaks.append(name)
    return leaks


def leakage_outcome(frame: Any, features: list[str]) -> CheckOutcome:
    """Check that no model input is a label column or separates the label perfectly."""
    named = leaking_columns(features)
    separating = perfect_separators(frame, [f for f in features if f not in named])
    leaks = named + separating
    seen = f"leaking columns: {leaks}" if leaks else f"{len(features)} inputs, none leaks"
    return CheckOutcome("no_column_leaks_the_label", None, CRITICAL, not leaks, seen)


def ranked_lists_suite(top_k: int, min_users: int, full_share: float) -> list[Expectation]:
    """Return the contract of a day's ranked lists (one row per user with list statistics)."""
    from great_expectations import expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeUnique(column="user_id", severity=CRITICAL),
        gxe.ExpectColumnValuesToBeBetween(
            column="list_length", min_value=1, max_value=top_k, severity=CRITICAL
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="list_length",
            min_value=top_k,
            max_value=top_k,
            mostly=full_share,
            severity=CRITICAL,
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="list_length", column_B="distinct_items", severity=CRITICAL
        ),
        gxe.ExpectColumnValuesToBeInSet(column="sold_items", value_set=[0], severity=CRITICAL),
        gxe.ExpectColumnValuesToBeInSet(column="unknown_items", value_set=[0], severity=CRITICAL),
        # coverage: every active user with candidates gets a list
        gxe.ExpectTableRowCountToBeBetween(min_value=min_users, severity=CRITICAL),
    ]


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


def results_dir(settings: Settings, ds: date) -> Path:
    """Return where the validation results of one day are kept."""
    return settings.paths.home / "runs" / f"ds={ds.isoformat()}" / "quality"


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

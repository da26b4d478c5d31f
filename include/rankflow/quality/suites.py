"""The expectation suites: what valid raw events, features, training sets and lists are."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rankflow.quality.gates import CRITICAL, WARNING, CheckOutcome
from rankflow.quality.raw import MAX_PRICE

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

# columns a ranker must never see: they are the label, or derived from what followed the impression
LABEL_COLUMNS = frozenset({"label", "clicked", "purchased", "gain", "relevance", "attractiveness"})


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

    from rankflow.quality.raw import CORRUPT, EVENT_TYPES, MAX_ID, required_fields

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
            # a between-check skips nulls: a price is required, so a missing one is refused here
            gxe.ExpectColumnValuesToNotBeNull(column="item_price", severity=CRITICAL),
            # the ceiling also refuses NaN and Infinity, which Spark orders above every number
            gxe.ExpectColumnValuesToBeBetween(
                column="item_price",
                min_value=0,
                max_value=MAX_PRICE,
                strict_min=True,
                severity=CRITICAL,
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


def partition_query_groups_outcome(frame: Any, column: str) -> CheckOutcome:
    """Check on a Spark frame that each partition holds whole query groups, contiguous, sorted.

    Each XGBoost worker reads one partition: a group split between partitions would be two
    lists, a group split inside one would be two as well. ``column`` holds integer group ids.
    """
    summaries = (
        frame.select(column)
        .mapInArrow(_partition_groups, "runs long, groups long, ordered boolean")
        .collect()
    )
    runs = sum(int(row["runs"]) for row in summaries)
    groups = sum(int(row["groups"]) for row in summaries)
    distinct = int(frame.select(column).distinct().count())
    ordered = all(bool(row["ordered"]) for row in summaries)
    ok = runs == groups == distinct and ordered
    seen = (
        f"{distinct} groups in {runs} runs of rows over {len(summaries)} partitions, "
        f"{'sorted' if ordered else 'not sorted'} within them"
    )
    return CheckOutcome("query_groups_whole_in_partitions", column, CRITICAL, ok, seen)


def _partition_groups(batches: Any) -> Any:
    """Runs of equal ids, distinct ids and sortedness of one partition (``mapInArrow``)."""
    import numpy as np
    import pyarrow as pa

    parts = [batch.column(0).to_numpy(zero_copy_only=False) for batch in batches]
    ids = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
    runs = int(np.count_nonzero(ids[1:] != ids[:-1])) + 1 if len(ids) else 0
    ordered = bool(np.all(ids[1:] >= ids[:-1]))
    yield pa.RecordBatch.from_pydict(
        {"runs": [runs], "groups": [len(np.unique(ids))], "ordered": [ordered]}
    )


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

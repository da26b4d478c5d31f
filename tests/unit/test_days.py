"""The spellings of a lake day: a SQL predicate for Delta's replaceWhere, a list of days."""

from __future__ import annotations

from datetime import date

from rankflow.days import days, days_where, sql_day


def test_a_day_and_a_range_of_days_as_delta_predicates() -> None:
    assert sql_day(date(2026, 10, 3)) == "DATE'2026-10-03'"
    assert days_where(date(2026, 10, 3)) == "ds = DATE'2026-10-03'"
    assert days_where(date(2026, 10, 3), date(2026, 10, 3), "as_of") == "as_of = DATE'2026-10-03'"
    assert days_where(date(2026, 10, 1), date(2026, 10, 3)) == (
        "ds >= DATE'2026-10-01' AND ds <= DATE'2026-10-03'"
    )


def test_days_are_inclusive_and_empty_when_reversed() -> None:
    assert days(date(2026, 10, 30), date(2026, 11, 1)) == [
        date(2026, 10, 30),
        date(2026, 10, 31),
        date(2026, 11, 1),
    ]
    assert days(date(2026, 10, 2), date(2026, 10, 1)) == []

"""The demo's calendar ends yesterday; moving it changes the dates and nothing else."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from rankflow.ops.demo import demo_calendar
from rankflow.sim.marketplace import GeneratorConfig, generate_marketplace, yesterday

DAY_MARKS = re.compile(r"\d{4}-\d{2}-\d{2}|\d{8}(?=-\d{5})")  # ISO days, session-id day stamps


def undated(raw: Path, start: date) -> dict[str, str]:
    """Every JSON-lines drop with its days rewritten as offsets from ``start`` (``D+n``)."""

    def offset(match: re.Match[str]) -> str:
        text = match.group(0)
        day = date.fromisoformat(text if "-" in text else f"{text[:4]}-{text[4:6]}-{text[6:]}")
        return f"D+{(day - start).days}"

    return {
        DAY_MARKS.sub(offset, str(path.relative_to(raw))): DAY_MARKS.sub(offset, path.read_text())
        for path in sorted(raw.rglob("*.jsonl"))
    }


def test_yesterday_is_the_last_complete_utc_day() -> None:
    assert yesterday(datetime(2026, 12, 5, 0, 30, tzinfo=UTC)) == date(2026, 12, 4)
    assert yesterday(datetime(2027, 1, 1, 23, 59, tzinfo=UTC)) == date(2026, 12, 31)
    # 00:30 on 1 March in Berlin is still 28 February in UTC
    berlin = datetime(2027, 3, 1, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert yesterday(berlin) == date(2027, 2, 27)


def test_the_demo_calendar_ends_yesterday_and_keeps_its_size() -> None:
    config = demo_calendar("demo", now=datetime(2026, 12, 5, 10, tzinfo=UTC))
    assert config.last_day == date(2026, 12, 4)
    assert config.days == GeneratorConfig().days
    assert config.start == date(2026, 12, 4) - timedelta(days=config.days - 1)
    tiny = demo_calendar("tiny", now=datetime(2027, 3, 1, 0, 5, tzinfo=UTC))
    assert (tiny.start, tiny.last_day) == (date(2027, 2, 15), date(2027, 2, 28))


def test_an_explicit_end_moves_the_preset_and_the_default_stays_fixed() -> None:
    assert GeneratorConfig.preset("tiny").start == date(2026, 10, 1)
    moved = GeneratorConfig.preset("tiny", end=date(2026, 12, 4), seed=3)
    assert (moved.seed, moved.start, moved.last_day) == (3, date(2026, 11, 21), date(2026, 12, 4))
    assert moved.ending(date(2026, 10, 14)) == GeneratorConfig.preset("tiny", seed=3)


def test_a_moved_calendar_holds_the_same_marketplace(tmp_path: Path) -> None:
    """Same seed, other dates: every drop is identical once its days are read as offsets."""
    fixed = GeneratorConfig.preset("tiny", days=2)
    moved = fixed.ending(date(2027, 2, 28))  # across a month end, in another year
    generate_marketplace(fixed, tmp_path / "fixed")
    generate_marketplace(moved, tmp_path / "moved")
    before = undated(tmp_path / "fixed", fixed.start)
    after = undated(tmp_path / "moved", moved.start)
    assert len(before) == 6  # users, items, events for each of the two days
    assert before == after
    events = tmp_path / "moved" / "events" / "ds=2027-02-27" / "part-00000.jsonl"
    event = json.loads(events.read_text().splitlines()[0])
    assert event["ts"].startswith("2027-02-27T")
    assert event["session_id"].startswith("20270227-")


def test_another_seed_is_not_the_same_marketplace(tmp_path: Path) -> None:
    """The offset comparison can fail: a different seed gives different drops."""
    one = GeneratorConfig.preset("tiny", days=1)
    other = GeneratorConfig.preset("tiny", days=1, seed=8)
    generate_marketplace(one, tmp_path / "one")
    generate_marketplace(other, tmp_path / "other")
    assert undated(tmp_path / "one", one.start) != undated(tmp_path / "other", other.start)


@pytest.mark.parametrize("days", [1, 30])
def test_last_day_counts_the_first(days: int) -> None:
    config = GeneratorConfig.preset("tiny", days=days)
    assert (config.last_day - config.start).days == days - 1

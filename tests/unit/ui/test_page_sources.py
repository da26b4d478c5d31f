"""The Ranking page's reads, without Airflow: a dead source is a one-line notice, never a crash."""

from __future__ import annotations

from pathlib import Path

from rankflow.config import Settings, load_settings
from rankflow.ui.page_sources import (
    item_attributes,
    read_champion,
    read_history,
    read_lookup,
    read_report,
    read_status,
)
from rankflow.ui.ranking_page import Notice


def empty_home(tmp_path: Path) -> Settings:
    """No lake, no MLflow store, and a Redis URL nothing listens on (with a password)."""
    return load_settings(
        {
            "RANKFLOW_HOME": str(tmp_path / "home"),
            "RANKFLOW_REDIS_URL": "redis://reader:s3cret@127.0.0.1:1/0",
        }
    )


def test_an_unreachable_redis_is_a_notice_without_its_password(tmp_path: Path) -> None:
    settings = empty_home(tmp_path)
    for notice in (read_status(settings, "home"), read_lookup(settings, "home", "42")):
        assert isinstance(notice, Notice)
        assert notice.error
        assert "127.0.0.1:1" in notice.message
        assert "s3cret" not in notice.message


def test_before_the_first_run_each_section_says_what_is_missing(tmp_path: Path) -> None:
    settings = empty_home(tmp_path)
    champion = read_champion(settings)
    assert isinstance(champion, Notice)
    assert champion.message.startswith("No champion yet")
    assert not champion.error
    assert read_report(settings, "1") is None
    assert item_attributes(settings, "2026-10-30", []) == ({}, None)
    attributes, note = item_attributes(settings, "2026-10-30", [1, 2])
    assert attributes == {}
    assert note is not None
    assert "does not exist" in note
    assert read_history(settings, "home") == []  # no monitoring table yet: no rows, no error


def test_a_user_id_that_could_be_a_key_pattern_is_refused(tmp_path: Path) -> None:
    for user in ("", "1*", "a:b", "x" * 129, "²", "٣", "-3", "1.9", "0", str(2**32), "true"):
        notice = read_lookup(empty_home(tmp_path), "home", user)
        assert isinstance(notice, Notice)
        assert notice.message.startswith("Not a user id")

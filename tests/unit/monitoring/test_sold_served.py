"""The sold-item figures of the night: the share before the repair and the residual after it."""

from __future__ import annotations

from rankflow.monitoring.measures import sold_served_figures


def values(figures: list) -> dict[str, float]:
    return {f.metric: f.value for f in figures}


def test_the_share_before_the_repair_is_what_it_removed_of_what_it_found() -> None:
    repair = {"version": "v2", "entries_removed": 30}
    got = values(sold_served_figures(repair, "v2", served_after=970, share_after=0.0))
    assert got["served_sold_share_before_repair"] == 30 / 1000
    assert got["sold_entries_removed"] == 30
    assert got["served_sold_share"] == 0.0
    assert got["served_entries"] == 970


def test_a_repair_of_another_version_is_not_tonights() -> None:
    repair = {"version": "v1", "entries_removed": 30}
    got = values(sold_served_figures(repair, "v2", served_after=970, share_after=0.01))
    assert "served_sold_share_before_repair" not in got
    assert got["served_sold_share"] == 0.01


def test_no_repair_yet_and_nothing_served() -> None:
    assert "served_sold_share_before_repair" not in values(sold_served_figures(None, "v2", 0, 0.0))
    repair = {"version": "v2", "entries_removed": 0}
    assert values(sold_served_figures(repair, "v2", 0, 0.0))["served_sold_share_before_repair"] == 0

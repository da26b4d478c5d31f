"""The Ranking page's HTML, rendered from in-line data (no Airflow, Redis, Delta or MLflow)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from typing import Any

import pytest

from rankflow.config import SURFACES, load_settings
from rankflow.monitoring.rules import Figure, judge
from rankflow.store.client import redact_url
from rankflow.store.versions import SurfaceStatus, VersionInfo
from rankflow.ui.charts import x_ticks, y_range
from rankflow.ui.history_charts import recent_days
from rankflow.ui.html import bounds_text, format_value
from rankflow.ui.ranking_page import (
    LOOKUP_ROWS,
    Champion,
    Notice,
    PageData,
    UserList,
    champion_metrics,
    render_page,
)

FIRST = date(2026, 3, 1)
CONFIG = load_settings({}).pipeline["monitoring"]


def history(days: int = 5, breach_last: bool = True) -> list[dict[str, Any]]:
    """Rows as ``history_rows`` returns them: judged figures of a few days, ds as ISO text."""
    rows: list[dict[str, Any]] = []
    for day in range(days):
        last = day == days - 1
        figures = [
            Figure("lists", "list_coverage", 0.9 if last and breach_last else 0.995),
            Figure("lists", "catalog_coverage", 0.05),
            Figure("feature", "feature_psi", 0.6 if last and breach_last else 0.05, "item_ctr_7d"),
            Figure("feature", "feature_psi", 0.02, "seller_rating"),
            Figure("publish", "published_users", 1000.0 + day),
            Figure("publish", "redis_bytes_per_user", 500.0),
            Figure("publish", "redis_publish_seconds", 2.5),
            Figure("offline", "ipw_ndcg@10", 0.42, "champion"),
            Figure("offline", "ipw_ndcg@10", 0.27, "popularity"),
            Figure("offline", "ndcg@10", 0.49, "champion"),
            Figure("offline", "ndcg@10", 0.38, "<b>odd</b>"),
        ]
        ds = (FIRST + timedelta(days=day)).isoformat()
        rows += [
            {**row, "ds": ds, "surface": "home", "run_id": "r", "computed_at": ds}
            for row in judge(figures, CONFIG, rows)
        ]
    return rows


def status(previous: bool = True) -> SurfaceStatus:
    meta = {"ds": "2026-03-05", "model_version": "3", "users": "1000", "k": "100"}
    meta |= {"created_at": "2026-03-06T04:10:00+00:00", "state": "published"}
    current = VersionInfo("20260305-aaaaaaaaaa", meta, 512.0, 520_000)
    old = VersionInfo("20260304-bbbbbbbbbb", {**meta, "ds": "2026-03-04"}, 500.0, 510_000)
    versions = ["20260303-cccccccccc", old.version, current.version]
    return SurfaceStatus("home", current, old if previous else None, versions)


def champion(has_report: bool = True) -> Champion:
    metrics = {"challenger.ipw_ndcg_at_10": 0.4265, "popularity.ipw_ndcg_at_10": 0.2741}
    metrics |= {"challenger.mrr": 0.47, "gate.difference": 0.01, "validation_ndcg_10": 0.7}
    return Champion(
        "rankflow-ranker", "3", "abc123", "2026-03-05T04:00:00+00:00", {"ds": "2026-03-05"},
        metrics, has_report,
    )  # fmt: skip


def page(**overrides: Any) -> str:
    data: dict[str, Any] = {
        "surface": "home",
        "surfaces": SURFACES,
        "history": history(),
        "status": status(),
        "champion": champion(),
    }
    data.update(overrides)
    return render_page(PageData(**data))


def svgs(text: str) -> list[ET.Element]:
    """Every inline SVG of a page, parsed (so each one is well-formed XML)."""
    return [ET.fromstring(m) for m in re.findall(r"<svg.*?</svg>", text, flags=re.S)]


def test_page_is_self_contained() -> None:
    text = page(user="1", lookup=Notice("nothing"))
    assert text.startswith("<!doctype html>")
    assert "<script" not in text
    assert "<link" not in text
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", text)


def test_charts_draw_history_bounds_and_breaches() -> None:
    text = page()
    charts = dict(re.findall(r'data-chart="([^"]+)" data-breaches="(\d+)"', text))
    assert charts["list_coverage"] == "1"
    assert charts["feature-psi"] == "1"
    assert charts["catalog_coverage"] == "0"
    assert {"offline-ipw_ndcg@10", "offline-ndcg@10", "published_users"} <= set(charts)
    assert "redis_bytes_per_user" in charts
    assert "publish-seconds" in charts
    parsed = svgs(text)
    assert len(parsed) == len(charts)
    ns = "{http://www.w3.org/2000/svg}"
    breaches = [c for svg in parsed for c in svg.iter(f"{ns}circle") if c.get("class") == "breach"]
    assert len(breaches) == 2
    bounds = [p for svg in parsed for p in svg.iter(f"{ns}polyline") if p.get("class") == "bound"]
    assert bounds, "the thresholds are drawn"
    assert "&lt;b&gt;odd&lt;/b&gt;" in text
    assert "<b>odd</b>" not in text


def test_latest_breaches_are_listed() -> None:
    text = page()
    table = re.search(r'<table id="breaches">.*?</table>', text, flags=re.S)
    assert table is not None
    assert "list_coverage" in table.group(0)
    assert "item_ctr_7d" in table.group(0)
    assert table.group(0).count("breach-row") == 2
    clean = page(history=history(breach_last=False))
    assert 'id="no-breaches"' in clean
    assert 'id="breaches"' not in clean


def test_versions_champion_and_report_link() -> None:
    text = page()
    assert 'data-version="20260305-aaaaaaaaaa"' in text
    assert 'data-version="20260304-bbbbbbbbbb"' in text
    assert "1 older version(s)" in text
    assert 'href="report/3"' in text
    assert "no run report logged" in page(champion=champion(has_report=False))
    only_current = page(status=status(previous=False))
    assert "nothing to roll back to" in only_current


def test_empty_states_are_explained_not_errors() -> None:
    empty = SurfaceStatus("search", None, None, [])
    text = page(
        surface="search",
        history=[],
        status=empty,
        champion=Notice("No champion yet: no version carries the alias."),
    )
    assert "No monitoring history for surface “search” yet" in text
    assert "Nothing is published for surface “search” yet" in text
    assert "No champion yet" in text
    assert "<svg" not in text
    assert 'class="notice error"' not in text


def test_a_failed_source_only_marks_its_own_section() -> None:
    text = page(status=Notice("Could not read Redis at redis://h:6379/0: refused", error=True))
    assert 'class="notice error">Could not read Redis' in text
    assert "<svg" in text
    assert 'href="report/3"' in text


def test_lookup_shows_the_list_with_attributes() -> None:
    items = list(range(100, 100 + LOOKUP_ROWS + 5))
    attributes = {i: {"category": f"cat{i}", "brand": "b", "is_sold": i == 101} for i in items}
    del attributes[102]
    lookup = UserList("42", "20260305-aaaaaaaaaa", False, "2026-03-05", "3", items, attributes)
    text = page(user="42", lookup=lookup)
    assert 'id="lookup-summary"' in text
    assert "personal list" in text
    assert re.findall(r'data-item="(\d+)"', text) == [str(i) for i in items]
    assert "cat100" in text
    assert "not in item_features" in text
    assert '<tr class="sold" data-item="101">' in text
    assert "show the other 5 items" in text
    fallback = UserList("x", "v1", True, "2026-03-05", "3", [100], {100: {"category": "c"}})
    assert "fallback list" in page(user="x", lookup=fallback)


def test_lookup_input_is_escaped() -> None:
    text = page(user='"><script>alert(1)</script>', lookup=Notice("Not a user id", error=True))
    assert "<script" not in text
    assert "&quot;&gt;&lt;script&gt;" in text


def test_champion_metrics_pivot() -> None:
    columns, rows = champion_metrics(champion().metrics)
    assert columns == ["ipw_ndcg_at_10", "mrr"]
    assert rows[0] == ["this model", "0.426", "0.47"]
    assert rows[1] == ["popularity", "0.274", "–"]
    assert len(rows) == 2  # gate.difference and validation_ndcg_10 are not rankers


def test_recent_days_keeps_the_last_days_with_rows() -> None:
    rows = history(days=6)
    kept = recent_days(rows, 2)
    assert {r["ds"] for r in kept} == {"2026-03-05", "2026-03-06"}
    assert recent_days([], 5) == []


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (0.4265, "number", "0.426"),
        (12345, "number", "12.3k"),
        (2_500_000, "number", "2.5M"),
        (3, "number", "3"),
        (0.995, "percent", "99.5%"),
        (0.0012, "percent", "0.12%"),
        (520_000, "bytes", "507.8 KiB"),
        (512, "bytes", "512 B"),
        (3.21, "seconds", "3.2 s"),
        (None, "number", "–"),
        (float("nan"), "number", "–"),
    ],
)
def test_format_value(value: Any, kind: Any, text: str) -> None:
    assert format_value(value, kind) == text


def test_bounds_text() -> None:
    assert bounds_text(0.99, None) == "≥ 0.99"
    assert bounds_text(None, 0.25) == "≤ 0.25"
    assert bounds_text(-0.2, 0.2) == "-0.2 – 0.2"
    assert bounds_text(None, None) == "–"


def test_redact_url() -> None:
    assert redact_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("redis://user:pw@cache/1") == "redis://user:***@cache/1"
    assert redact_url("redis://127.0.0.1:6390/0") == "redis://127.0.0.1:6390/0"


def test_axes() -> None:
    low, high, ticks = y_range([0.0, 0.0], "percent")
    assert low == 0.0
    assert high <= 1.0
    assert ticks[0] == 0.0
    low, high, _ = y_range([0.95, 0.998, 0.99], "percent")
    assert 0.9 <= low < 0.95
    assert high <= 1.0
    low, high, _ = y_range([-0.5, 0.5])
    assert low < -0.5
    assert high > 0.5
    days = x_ticks(FIRST, FIRST + timedelta(days=7))
    assert days[0] == FIRST
    assert days[-1] == FIRST + timedelta(days=7)
    assert len(days) <= 6
    assert x_ticks(FIRST, FIRST) == [FIRST]


def test_the_skew_panel_charts_parity_and_names_the_skewed_feature() -> None:
    rows: list[dict[str, Any]] = []
    for day in range(3):
        last = day == 2
        figures = [
            Figure("skew", "skew_score_parity", 0.98 if last else 1.0),
            Figure("skew", "skew_topk_parity", 1.0),
            Figure("skew", "skew_mismatch_rate", 0.02 if last else 0.0, "user_clicks_28d"),
            Figure("skew", "skew_mismatch_rate", 0.0, "item_price"),
            Figure("skew", "skew_missing_rate", 0.0, "item_price"),
            Figure("skew", "skew_answers_replayed", 120.0),
            Figure("serving", "serving_model_refusals", 0.0),
        ]
        ds = (FIRST + timedelta(days=day)).isoformat()
        rows += [
            {**row, "ds": ds, "surface": "home", "run_id": "r", "computed_at": ds}
            for row in judge(figures, CONFIG, rows)
        ]
    text = render_page(
        PageData("home", list(SURFACES), rows, Notice("no redis"), Notice("no champion"))
    )
    assert "Training/serving skew" in text
    charts = dict(re.findall(r'data-chart="([^"]+)" data-breaches="(\d+)"', text))
    assert charts["skew_score_parity"] == "1"  # the fixed bound of 1 is breached on the last day
    assert charts["skew-mismatch"] == "1"
    assert charts["skew_topk_parity"] == "0"
    assert "user_clicks_28d" in text
    assert {"skew-missing", "skew_answers_replayed", "serving_model_refusals"} <= set(charts)


def stream_freshness(behind: float | None, p99: float | None) -> Any:
    from rankflow.monitoring.freshness import PartitionFreshness, StreamFreshness

    fresh = PartitionFreshness("redis:0", 0.4, 1, 120, 0.002, 0.004, 0.02, 3.0)
    other = PartitionFreshness("redis:1", behind, 1 if behind else None, 7, 0.01, p99, p99, 4.0)
    return StreamFreshness("redis", 0, 60.0, 30.0, [fresh, other])


def test_the_stream_section_shows_each_partition_and_marks_the_one_behind() -> None:
    text = page(stream=stream_freshness(behind=95.0, p99=0.5))
    section = re.search(r'<section id="stream">.*?</section>', text, flags=re.S).group(0)
    rows = dict(re.findall(r'data-partition="([^"]+)".*?<td class="(ok|bad)"', section, re.S))
    assert rows == {"redis:0": "ok", "redis:1": "bad"}
    assert "95.0 s" in section
    assert "alert past 60 s" in section
    slow = page(stream=stream_freshness(behind=1.0, p99=45.0))
    assert 'data-partition="redis:1"' in slow
    assert re.search(r'data-partition="redis:1".*?<td class="bad"[^>]*>behind', slow, re.S)
    quiet = page(stream=stream_freshness(behind=None, p99=None))
    assert re.search(r'data-partition="redis:1".*?<td class="bad"', quiet, re.S)  # never ran


def test_the_stream_section_says_when_no_updater_ran_or_redis_failed() -> None:
    from rankflow.monitoring.freshness import PartitionFreshness, StreamFreshness

    never = PartitionFreshness("kafka:0", None, None, None, None, None, None, None)
    text = page(stream=StreamFreshness("kafka", 0, 60.0, 30.0, [never]))
    assert "No stream updater has reported yet (kafka)" in text
    failed = page(stream=Notice("Could not read the stream", error=True))
    assert re.search(r'<section id="stream">.*Could not read the stream', failed, re.S)
    assert '<section id="stream">' not in page()  # not read: no section

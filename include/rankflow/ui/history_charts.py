"""The Ranking page's history charts, built from monitoring history rows (pure)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from rankflow.monitoring.history import latest_day
from rankflow.ui.charts import PALETTE, Chart, Point, Series
from rankflow.ui.html import Format, as_day, as_float

BASELINES = ("popularity", "logged_order", "random", "oracle")
CHAMPION_SUBJECT = "champion"
DRIFT_TOP_FEATURES = 4
SERIES_COLORS = {
    CHAMPION_SUBJECT: PALETTE[0],
    "popularity": PALETTE[1],
    "logged_order": PALETTE[2],
    "random": PALETTE[3],
    "oracle": PALETTE[4],
}


def recent_days(rows: Iterable[Mapping[str, Any]], days: int) -> list[Mapping[str, Any]]:
    """Keep the rows of the last ``days`` days that have rows (the table may lag the calendar)."""
    materialised = list(rows)
    kept = sorted({as_day(row["ds"]) for row in materialised})[-days:] if days > 0 else []
    keep = set(kept)
    return [row for row in materialised if as_day(row["ds"]) in keep]


def latest_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[date | None, list[Mapping[str, Any]]]:
    """Return the most recent day of the history and its rows."""
    latest = latest_day(rows)
    return (as_day(latest[0]["ds"]) if latest else None), list(latest)


def _points(rows: Iterable[Mapping[str, Any]], label: str = "") -> list[Point]:
    """Turn history rows (one metric and subject) into chart points, oldest first."""
    points = []
    for row in sorted(rows, key=lambda r: as_day(r["ds"])):
        value = as_float(row.get("value"))
        if value is None:
            continue
        points.append(
            Point(
                as_day(row["ds"]),
                value,
                as_float(row.get("lower")),
                as_float(row.get("upper")),
                bool(row.get("breached")),
                label,
            )
        )
    return points


def _index(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, list[Any]]]:
    """Group rows by (group, metric), then by subject."""
    index: dict[tuple[str, str], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        index[(str(row["group"]), str(row["metric"]))][str(row.get("subject") or "")].append(row)
    return index


def _metric(index: Mapping[tuple[str, str], Any], group: str, name: str) -> str | None:
    """Return the metric of ``group`` named ``name`` or, for ``prefix@``, the first with it."""
    if not name.endswith("@"):
        return name if (group, name) in index else None
    found = sorted(m for g, m in index if g == group and m.startswith(name))
    return found[0] if found else None


def single_chart(
    index: Mapping[tuple[str, str], Mapping[str, list[Any]]],
    group: str,
    metric: str,
    title: str,
    kind: Format = "number",
    caption: str = "",
) -> Chart | None:
    """One watched figure (subject ``""``) with its bounds, or None without data."""
    name = _metric(index, group, metric)
    if name is None:
        return None
    points = _points(index[(group, name)].get("", []))
    if not points:
        return None
    series = Series(name, points, PALETTE[0], bounds=True, emphasis=True)
    return Chart(name, title.replace("{metric}", name), [series], kind, caption)


def subjects_chart(
    index: Mapping[tuple[str, str], Mapping[str, list[Any]]],
    metric: str,
    title: str,
) -> Chart | None:
    """An offline metric of the champion and every baseline (one series each)."""
    by_subject = index.get(("offline", metric))
    if not by_subject:
        return None
    order = [CHAMPION_SUBJECT, *BASELINES]
    names = [s for s in order if s in by_subject]
    names += sorted(s for s in by_subject if s not in order)
    series = []
    for i, name in enumerate(names):
        points = _points(by_subject[name])
        if points:
            color = SERIES_COLORS.get(name, PALETTE[(i + 3) % len(PALETTE)])
            series.append(
                Series(name, points, color, bounds=False, emphasis=name == CHAMPION_SUBJECT)
            )
    if not series:
        return None
    caption = "held-out day of each training night; the champion is the model serving after it"
    return Chart(f"offline-{metric}", title, series, "number", caption)


def drift_chart(
    index: Mapping[tuple[str, str], Mapping[str, list[Any]]], top: int = DRIFT_TOP_FEATURES
) -> Chart | None:
    """Feature PSI: the highest of each day (with that feature's bounds) and the top features."""
    return per_feature_chart(
        index,
        ("feature", "feature_psi"),
        "feature-psi",
        "Feature drift (PSI)",
        "population stability index of each model input, training window vs scoring day",
        "number",
        top,
    )


def per_feature_chart(
    index: Mapping[tuple[str, str], Mapping[str, list[Any]]],
    key: tuple[str, str],
    name: str,
    title: str,
    what: str,
    kind: Format = "number",
    top: int = DRIFT_TOP_FEATURES,
) -> Chart | None:
    """A per-feature figure: the highest of each day (with its bounds) and the top features."""
    by_subject = index.get(key)
    if not by_subject:
        return None
    per_day: dict[date, Mapping[str, Any]] = {}
    for subject, rows in by_subject.items():
        for row in rows:
            value = as_float(row.get("value"))
            day = as_day(row["ds"])
            best = per_day.get(day)
            if value is not None and (best is None or value > float(best["value"])):
                per_day[day] = {**row, "subject": subject}
    maximum = [
        Point(
            day,
            float(row["value"]),
            as_float(row.get("lower")),
            as_float(row.get("upper")),
            any(
                bool(r.get("breached"))
                for rs in by_subject.values()
                for r in rs
                if as_day(r["ds"]) == day
            ),
            f" ({row['subject']})",
        )
        for day, row in sorted(per_day.items())
    ]
    if not maximum:
        return None
    last = max(per_day)
    latest = {
        subject: as_float(r.get("value"))
        for subject, rows in by_subject.items()
        for r in rows
        if as_day(r["ds"]) == last
    }
    leaders = sorted(
        (s for s, v in latest.items() if v is not None), key=lambda s: -(latest[s] or 0.0)
    )[:top]
    series = [
        Series("max over features", maximum, PALETTE[5], bounds=True, emphasis=True, halo=True)
    ]
    for i, subject in enumerate(leaders):
        points = [
            Point(p.day, p.value, p.lower, p.upper, False, "") for p in _points(by_subject[subject])
        ]
        series.append(Series(subject, points, PALETTE[(i + 1) % len(PALETTE)]))
    caption = (
        f"{what}; lines: the day's highest and the {len(leaders)} highest on {last.isoformat()}"
    )
    return Chart(name, title, series, kind, caption)


def durations_chart(index: Mapping[tuple[str, str], Mapping[str, list[Any]]]) -> Chart | None:
    """Redis and S3 publishing durations on one chart."""
    series = []
    for i, metric in enumerate(("redis_publish_seconds", "s3_publish_seconds")):
        points = _points(index.get(("publish", metric), {}).get("", []))
        if points:
            series.append(Series(metric, points, PALETTE[i], bounds=True))
    if not series:
        return None
    return Chart("publish-seconds", "Publishing time", series, "seconds")


def history_charts(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Chart]]]:
    """The page's charts, in sections, for the rows that exist (absent figures are skipped)."""
    index = _index(rows)
    sections: list[tuple[str, list[Chart | None]]] = [
        (
            "Offline metrics: champion vs baselines",
            [
                subjects_chart(index, "ipw_ndcg@10", "IPW NDCG@10 (position-debiased)"),
                subjects_chart(index, "ndcg@10", "NDCG@10 (logged clicks)"),
                single_chart(
                    index,
                    "offline",
                    "champion_lift_over_popularity",
                    "Champion lift over popularity",
                    "percent",
                ),
            ],
        ),
        (
            "List health",
            [
                single_chart(index, "lists", "list_coverage", "List coverage", "percent"),
                single_chart(index, "lists", "catalog_coverage", "Catalog coverage", "percent"),
                single_chart(
                    index, "lists", "served_sold_share", "Sold items still served", "percent"
                ),
            ],
        ),
        (
            "Drift",
            [
                drift_chart(index),
                single_chart(index, "score", "score_psi", "Prediction score drift (PSI)"),
            ],
        ),
        (
            "Publishing",
            [
                single_chart(index, "publish", "published_users", "Published users"),
                single_chart(
                    index, "publish", "redis_bytes_per_user", "Redis bytes per user", "bytes"
                ),
                durations_chart(index),
            ],
        ),
        (
            "Training/serving skew: the ranking service's answers replayed offline",
            [
                single_chart(
                    index,
                    "skew",
                    "skew_score_parity",
                    "Scores bit-identical",
                    "percent",
                    "share of the sampled answers' scored rows whose offline score is identical",
                ),
                single_chart(
                    index,
                    "skew",
                    "skew_topk_parity",
                    "Top-K identical",
                    "percent",
                    "share of the sampled answers whose ranked head is the offline one",
                ),
                per_feature_chart(
                    index,
                    ("skew", "skew_mismatch_rate"),
                    "skew-mismatch",
                    "Feature mismatch rate",
                    "served value differs from the offline rebuild",
                    "percent",
                ),
                per_feature_chart(
                    index,
                    ("skew", "skew_missing_rate"),
                    "skew-missing",
                    "Feature missing rate",
                    "offline has a value the service did not",
                    "percent",
                ),
                single_chart(index, "skew", "skew_answers_replayed", "Answers replayed"),
                single_chart(
                    index, "serving", "serving_fallback_share", "Fallback answers", "percent"
                ),
                single_chart(
                    index, "serving", "serving_model_refusals", "Models refused (feature schema)"
                ),
            ],
        ),
        (
            "Diversity",
            [
                single_chart(
                    index, "lists", "distinct_categories@", "Distinct categories ({metric})"
                ),
                single_chart(index, "lists", "distinct_sellers@", "Distinct sellers ({metric})"),
                single_chart(
                    index, "lists", "top_seller_share@", "Top sellers' share ({metric})", "percent"
                ),
            ],
        ),
    ]
    return [(title, [c for c in charts if c is not None]) for title, charts in sections]

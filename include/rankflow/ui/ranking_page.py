"""The Ranking page: monitoring history, serving versions, champion model and a user lookup.

Pure rendering: the Airflow plugin (``plugins/rankflow_ranking_page.py``) reads the sources (the
``ops/monitoring`` Delta table, Redis, MLflow, ``silver/item_features``) and hands the results
here; :func:`render_page` returns one self-contained HTML document. Charts are inline SVG drawn
in this module (no script, no stylesheet or font from the network), so the page renders the same
inside the Airflow UI's iframe, in a headless browser and from a saved file.

A source that cannot be read becomes a :class:`Notice` and only its own section says so: a dead
Redis never hides the monitoring history, and an empty history (before the first nightly run) is
an empty state, not an error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from rankflow.monitoring.freshness import StreamFreshness
from rankflow.store.versions import SurfaceStatus, VersionInfo
from rankflow.ui.charts import chart_html
from rankflow.ui.history_charts import BASELINES, history_charts, latest_rows, recent_days
from rankflow.ui.html import as_day, as_float, bounds_text, esc, format_value

# item attributes shown next to a looked-up list, in this order (those the table has)
ITEM_COLUMNS = (
    "category",
    "brand",
    "style",
    "size",
    "seller_id",
    "item_price",
    "is_sold",
    "listed_ts",
)
CHAMPION_COLUMNS = ("ipw_ndcg_at_10", "ndcg_at_10", "truth_ndcg_at_10", "map_at_10", "mrr")
LOOKUP_ROWS = 20  # rows of a looked-up list shown at once (the rest behind "show all")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Notice:
    """Why a section has nothing to show: an empty state, or a source that failed to read."""

    message: str
    error: bool = False


@dataclass(frozen=True)
class Champion:
    """The model version carrying the champion alias, and what its training run logged."""

    name: str
    version: str
    run_id: str
    created_at: str | None
    tags: Mapping[str, str]
    metrics: Mapping[str, float]
    has_report: bool


@dataclass(frozen=True)
class UserList:
    """A user's published list as the reader serves it, with the items' attributes.

    ``attributes`` maps item id to the item's row of ``silver/item_features`` in the partition
    of the version's ``ds``; ``note`` says why attributes are missing, if they are.
    """

    user: str
    version: str
    fallback: bool
    ds: str | None
    model_version: str | None
    items: Sequence[int]
    attributes: Mapping[int, Mapping[str, Any]]
    note: str | None = None


@dataclass(frozen=True)
class PageData:
    """Everything the page shows for one surface, each section already read (or a Notice)."""

    surface: str
    surfaces: Sequence[str]
    history: Sequence[Mapping[str, Any]] | Notice
    status: SurfaceStatus | Notice
    champion: Champion | Notice
    user: str | None = None
    lookup: UserList | Notice | None = None
    lookup_allowed: bool = True  # False: the viewer's role may not look users up (no form)
    stream: StreamFreshness | Notice | None = None  # None: not read (the section is left out)
    days: int = 90
    sources: Mapping[str, str] = field(default_factory=dict)
    generated_at: str | None = None


# --------------------------------------------------------------------------- sections


def _notice(notice: Notice) -> str:
    """Render an empty state or a read failure."""
    css = "notice error" if notice.error else "notice empty"
    return f'<p class="{css}">{esc(notice.message)}</p>'


def history_section(history: Sequence[Mapping[str, Any]] | Notice, surface: str, days: int) -> str:
    """Charts of the last ``days`` days of history and the latest day's breaches."""
    head = '<section id="history"><h2>Monitoring history</h2>'
    if isinstance(history, Notice):
        return head + _notice(history) + "</section>"
    rows = recent_days(history, days)
    if not rows:
        message = (
            f"No monitoring history for surface “{surface}” yet: the nightly DAG's monitor step "
            "writes one row per figure to the ops/monitoring table after each run."
        )
        return head + _notice(Notice(message)) + "</section>"
    first, last = min(as_day(r["ds"]) for r in rows), max(as_day(r["ds"]) for r in rows)
    parts = [head, breaches_html(rows)]
    for title, charts in history_charts(rows):
        if charts:
            figures = "".join(chart_html(c, first, last) for c in charts)
            parts.append(f'<h3>{esc(title)}</h3><div class="charts">{figures}</div>')
    day_count = len({as_day(r["ds"]) for r in rows})
    parts.append(
        f'<p class="caption">{day_count} monitored day(s), {first.isoformat()} to '
        f"{last.isoformat()}. Dashed red lines: the alert bounds each figure was judged against "
        "(configured defaults, or calibrated from clean days); red dots: breached.</p></section>"
    )
    return "".join(parts)


def breaches_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The latest day's summary and its breached figures as a table."""
    last, latest = latest_rows(rows)
    if last is None:
        return ""
    watched = [r for r in latest if r.get("threshold_source") not in (None, "none")]
    calibrated = sum(str(r.get("threshold_source", "")).startswith("calibrated") for r in latest)
    breached = [r for r in latest if r.get("breached")]
    summary = (
        f'<p class="summary" id="latest-day">Latest monitored day <b>{last.isoformat()}</b>: '
        f"{len(latest)} figures, {len(watched)} watched ({calibrated} with calibrated bounds), "
        f'<b class="{"bad" if breached else "good"}">{len(breached)} breached</b>.</p>'
    )
    if not breached:
        return summary + '<p class="notice ok" id="no-breaches">No figure breached its bounds.</p>'
    body = "".join(
        "<tr class='breach-row'>"
        f"<td>{esc(r.get('group'))}</td><td>{esc(r.get('metric'))}</td>"
        f"<td>{esc(r.get('subject'))}</td><td class='num'>{esc(format_value(r.get('value')))}</td>"
        f"<td class='num'>{esc(bounds_text(r.get('lower'), r.get('upper')))}</td>"
        f"<td>{esc(r.get('threshold_source'))}</td></tr>"
        for r in sorted(breached, key=lambda r: (r["group"], r["metric"], r.get("subject") or ""))
    )
    return (
        summary + f'<table id="breaches"><caption>Breaches on {last.isoformat()}</caption>'
        "<thead><tr><th>group</th><th>metric</th><th>subject</th><th>value</th>"
        f"<th>bounds</th><th>bounds from</th></tr></thead><tbody>{body}</tbody></table>"
    )


VERSION_FIELDS: tuple[tuple[str, str], ...] = (
    ("ds", "ds"),
    ("model version", "model_version"),
    ("users", "users"),
    ("k", "k"),
    ("bytes / user", "bytes_per_user"),
    ("approx. size", "approx_bytes"),
    ("created (UTC)", "created_at"),
    ("state", "state"),
)


def _version_cell(info: VersionInfo, key: str) -> str:
    """One field of a version, formatted."""
    if key == "bytes_per_user":
        return format_value(info.bytes_per_user, "bytes")
    if key == "approx_bytes":
        return format_value(info.approx_bytes, "bytes")
    value = info.meta.get(key)
    if key == "users":
        return format_value(value)
    if key == "created_at" and value:
        return value[:19].replace("T", " ")
    return value or "–"


def versions_section(status: SurfaceStatus | Notice, surface: str) -> str:
    """The current and previous Redis versions of the surface with their size."""
    head = '<section id="versions"><h2>Serving versions in Redis</h2>'
    if isinstance(status, Notice):
        return head + _notice(status) + "</section>"
    if status.current is None:
        message = (
            f"Nothing is published for surface “{surface}” yet: the nightly DAG's publish step "
            "writes a version and makes it current."
        )
        return head + _notice(Notice(message)) + "</section>"
    shown = [("current", status.current)]
    if status.previous is not None:
        shown.append(("previous", status.previous))
    header = "".join(
        f'<th data-version="{esc(info.version)}">{esc(role)}<br><code>{esc(info.version)}</code>'
        "</th>"
        for role, info in shown
    )
    rows = "".join(
        f"<tr><th>{esc(label)}</th>"
        + "".join(f"<td>{esc(_version_cell(info, key))}</td>" for _, info in shown)
        + "</tr>"
        for label, key in VERSION_FIELDS
    )
    protected = {info.version for _, info in shown}
    others = len([v for v in status.versions if v not in protected])
    note = (
        "previous: what <code>rankflow rollback</code> restores"
        if status.previous is not None
        else "no previous version: nothing to roll back to"
    )
    if others:
        note += f"; {others} older version(s) still registered (they expire)"
    return (
        head + f'<table id="versions-table"><thead><tr><th></th>{header}</tr></thead>'
        f'<tbody>{rows}</tbody></table><p class="caption">{note}. Size: MEMORY USAGE of a '
        "sample of user keys x users, plus the meta and fallback keys.</p></section>"
    )


def _seconds_cell(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f} s"


def stream_section(stream: StreamFreshness | Notice) -> str:
    """The event stream's freshness per partition, against the watch's bounds."""
    head = '<section id="stream"><h2>Live event stream</h2>'
    if isinstance(stream, Notice):
        return head + _notice(stream) + "</section>"
    if not stream.reported:
        message = (
            f"No stream updater has reported yet ({stream.backend}): run `rankflow stream`. "
            "Until one does, the ranking service treats stream features as missing."
        )
        return head + _notice(Notice(message)) + "</section>"
    problems = stream.faults()
    rows = "".join(
        f'<tr data-partition="{esc(p.partition)}"><th><code>{esc(p.partition)}</code></th>'
        f"<td>{esc(_seconds_cell(p.behind_seconds))}</td>"
        f"<td>{esc(_seconds_cell(p.p50_seconds, 3))}</td>"
        f"<td>{esc(_seconds_cell(p.p99_seconds, 3))}</td>"
        f"<td>{esc(_seconds_cell(p.max_seconds, 3))}</td>"
        f"<td>{esc(p.events if p.events is not None else '–')}</td>"
        f"<td>{esc(_seconds_cell(p.summary_age_seconds, 0))}</td>"
        f'<td class="{"bad" if p.partition in problems else "ok"}" '
        f'title="{esc(problems.get(p.partition, ""))}">'
        f"{esc('behind' if p.partition in problems else 'fresh')}</td></tr>"
        for p in stream.partitions
    )
    return (
        head + '<table id="stream-table"><thead><tr><th>partition</th><th>caught up</th>'
        "<th>p50 event to visible</th><th>p99</th><th>max</th><th>events</th>"
        f"<th>summary age</th><th>status</th></tr></thead><tbody>{rows}</tbody></table>"
        f'<p class="caption">caught up: how long ago an updater last reached the end of the '
        f"partition (alert past {stream.alert_behind_seconds:.0f} s); event to visible: the "
        f"updater's last summary of its events' lags (alert when p99 is over "
        f"{stream.alert_freshness_seconds:.0f} s). Checked every five minutes by the "
        "rankflow_stream_watch DAG.</p></section>"
    )


def champion_metrics(metrics: Mapping[str, float]) -> tuple[list[str], list[list[str]]]:
    """Pivot ``<ranker>.<metric>`` run metrics into rows of rankers x the key metric columns.

    The run's own model is logged as ``challenger``; it is shown first as ``this model``.
    """
    by_ranker: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in metrics.items():
        ranker, _, name = key.rpartition(".")
        if ranker and name in CHAMPION_COLUMNS:
            by_ranker[ranker][name] = value
    columns = [c for c in CHAMPION_COLUMNS if any(c in m for m in by_ranker.values())]
    order = ["challenger", "champion", *BASELINES]
    rankers = [r for r in order if r in by_ranker]
    rankers += sorted(r for r in by_ranker if r not in order)
    rows = [
        [
            "this model" if ranker == "challenger" else ranker,
            *[format_value(by_ranker[ranker].get(c)) for c in columns],
        ]
        for ranker in rankers
    ]
    return columns, rows


def champion_section(champion: Champion | Notice) -> str:
    """The model version with the champion alias, its run's metrics and a link to its report."""
    head = '<section id="champion"><h2>Champion model</h2>'
    if isinstance(champion, Notice):
        return head + _notice(champion) + "</section>"
    tags = champion.tags
    report = (
        f'<a id="report-link" href="report/{esc(champion.version)}">run report</a>'
        if champion.has_report
        else '<span class="muted">no run report logged</span>'
    )
    facts = [
        ("model", f"{esc(champion.name)} version <b>{esc(champion.version)}</b>"),
        ("trained for", esc(tags.get("ds"))),
        ("registered", esc(champion.created_at)),
        ("gate", esc(tags.get("gate"))),
        ("MLflow run", f"<code>{esc(champion.run_id)}</code> · {report}"),
        ("code version", f"<code>{esc(tags.get('code_version'))}</code>"),
    ]
    facts_html = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts if v)
    columns, rows = champion_metrics(champion.metrics)
    table = ""
    if rows:
        header = "".join(f"<th>{esc(c.replace('_at_', '@'))}</th>" for c in columns)
        body = "".join(
            "<tr>"
            + f"<th>{esc(row[0])}</th>"
            + "".join(f"<td class='num'>{esc(v)}</td>" for v in row[1:])
            + "</tr>"
            for row in rows
        )
        table = (
            '<table id="champion-metrics"><caption>held-out metrics logged by its training run'
            f"</caption><thead><tr><th>ranker</th>{header}</tr></thead><tbody>{body}</tbody></table>"
        )
    return head + f'<dl class="facts">{facts_html}</dl>{table}</section>'


def _attribute(name: str, value: Any) -> str:
    """Format one item attribute cell."""
    if value is None:
        return "–"
    if name == "is_sold":
        return "sold" if value else "available"
    if name == "item_price":
        number = as_float(value)
        return f"{number:,.2f}" if number is not None else "–"
    if name == "listed_ts":
        return str(value)[:16].replace("T", " ")
    return str(value)


def _items_table(
    lookup: UserList, columns: Sequence[str], start: int, items: Sequence[int], table_id: str
) -> str:
    """Rows ``start``.. of a looked-up list (rank, item id and its attributes)."""
    header = "".join(f"<th>{esc(c)}</th>" for c in columns)
    rows = []
    for rank, item in enumerate(items, start=start):
        attributes = lookup.attributes.get(int(item))
        if attributes is None:
            cells = f'<td colspan="{max(len(columns), 1)}" class="muted">not in item_features</td>'
        else:
            cells = "".join(f"<td>{esc(_attribute(c, attributes.get(c)))}</td>" for c in columns)
        sold = ' class="sold"' if attributes is not None and attributes.get("is_sold") else ""
        rows.append(
            f'<tr{sold} data-item="{int(item)}"><td class="num">{rank}</td>'
            f'<td class="num">{int(item)}</td>{cells}</tr>'
        )
    return (
        f'<table id="{table_id}" class="items"><thead><tr><th>rank</th><th>item</th>{header}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


LOOKUP_NOT_ALLOWED = "Looking up a user's list needs the Op role or higher."


def lookup_section(
    surface: str, user: str | None, lookup: UserList | Notice | None, *, allowed: bool = True
) -> str:
    """The user lookup form and, once asked, the list the reader serves with item attributes."""
    if not allowed:
        note = f'<p class="notice empty" id="lookup-not-allowed">{esc(LOOKUP_NOT_ALLOWED)}</p>'
        return f'<section id="lookup"><h2>User lookup</h2>{note}</section>'
    form = (
        '<form id="lookup-form" method="get" action="./">'
        f'<input type="hidden" name="surface" value="{esc(surface)}">'
        '<label for="user">user id</label> '
        f'<input id="user" name="user" value="{esc(user or "")}" placeholder="e.g. 1042" '
        'autocomplete="off" maxlength="128"> <button type="submit">Look up</button></form>'
    )
    head = f'<section id="lookup"><h2>User lookup</h2>{form}'
    if lookup is None:
        return head + "</section>"
    if isinstance(lookup, Notice):
        return head + _notice(lookup) + "</section>"
    kind = (
        '<span class="badge warn">fallback list: no personal list for this user</span>'
        if lookup.fallback
        else '<span class="badge ok">personal list</span>'
    )
    sold = sum(bool((lookup.attributes.get(int(i)) or {}).get("is_sold")) for i in lookup.items)
    sold_note = (
        f' <span class="badge warn">{sold} sold as of ds (the hourly repair removes sold items'
        " once their sale is known)</span>"
        if sold
        else ""
    )
    info = (
        f'<p class="summary" id="lookup-summary">User <b>{esc(lookup.user)}</b> on '
        f"“{esc(surface)}”: {len(lookup.items)} items from version "
        f"<code>{esc(lookup.version)}</code> (ds {esc(lookup.ds)}, model "
        f"{esc(lookup.model_version)}) {kind}{sold_note}</p>"
    )
    if lookup.note:
        info += _notice(Notice(lookup.note))
    if not lookup.items:
        return head + info + _notice(Notice("The list is empty.")) + "</section>"
    columns = [c for c in ITEM_COLUMNS if any(c in a for a in lookup.attributes.values())]
    tables = _items_table(lookup, columns, 1, lookup.items[:LOOKUP_ROWS], "lookup-items")
    rest = lookup.items[LOOKUP_ROWS:]
    if rest:
        more = _items_table(lookup, columns, LOOKUP_ROWS + 1, rest, "lookup-items-more")
        tables += f"<details><summary>show the other {len(rest)} items</summary>{more}</details>"
    return (
        head + info + tables + '<p class="caption">attributes from silver/item_features, '
        f"partition ds={esc(lookup.ds)} (the day the lists were computed for)</p></section>"
    )


def at_a_glance(data: PageData) -> str:
    """Three cards on top: latest monitored day, serving version, champion."""
    cards = []
    if isinstance(data.history, Notice) or not data.history:
        cards.append(("monitoring", "no history", "muted"))
    else:
        last, latest = latest_rows(recent_days(data.history, data.days))
        count = sum(bool(r.get("breached")) for r in latest)
        day = last.isoformat() if last else "–"
        cards.append(("monitoring", f"{day} · {count} breach(es)", "bad" if count else "good"))
    if isinstance(data.status, Notice):
        cards.append(("serving", "Redis unreadable" if data.status.error else "–", "bad"))
    elif data.status.current is None:
        cards.append(("serving", "nothing published", "muted"))
    else:
        meta = data.status.current.meta
        cards.append(
            ("serving", f"{data.status.current.version} · ds {meta.get('ds', '–')}", "good")
        )
    if isinstance(data.champion, Notice):
        cards.append(
            ("champion", "none" if not data.champion.error else "MLflow unreadable", "muted")
        )
    else:
        cards.append(("champion", f"version {data.champion.version}", "good"))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {css}"><span>{esc(label)}</span><b>{esc(text)}</b></div>'
            for label, text, css in cards
        )
        + "</div>"
    )


def surface_tabs(surface: str, surfaces: Sequence[str], days: int) -> str:
    """Links switching the page to another surface (plain links: no script needed)."""
    links = []
    for name in surfaces:
        query = urlencode({"surface": name, "days": days})
        css = ' class="active" aria-current="page"' if name == surface else ""
        links.append(f'<a href="?{esc(query)}"{css}>{esc(name)}</a>')
    return f'<nav class="tabs" aria-label="surface">{"".join(links)}</nav>'


CSS = """
*{box-sizing:border-box}
body{margin:0;padding:16px 20px 40px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"DejaVu Sans",sans-serif;color:#1d2430;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;padding-bottom:4px;
border-bottom:1px solid #e3e7ee}h3{font-size:14px;margin:14px 0 6px;color:#475266}
.sub{color:#5d6878;margin:0 0 10px}.muted{color:#8a93a3}
.tabs{display:flex;gap:6px;margin:8px 0 12px}.tabs a{padding:4px 12px;border:1px solid #cfd6e1;
border-radius:14px;text-decoration:none;color:#1f6fb2}.tabs a.active{background:#1f6fb2;color:#fff;
border-color:#1f6fb2}
.cards{display:flex;gap:10px;flex-wrap:wrap}.card{border:1px solid #e3e7ee;border-radius:8px;
padding:8px 12px;min-width:220px;border-left:4px solid #8a93a3}.card span{display:block;
font-size:12px;color:#5d6878;text-transform:uppercase;letter-spacing:.04em}
.card.good{border-left-color:#3a9d3a}.card.bad{border-left-color:#d62728}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(430px,1fr));gap:10px}
figure.chart{margin:0;border:1px solid #e3e7ee;border-radius:8px;padding:8px 8px 6px}
figcaption{font-weight:600;margin:0 0 2px 4px}svg.plot{display:block;width:100%;height:auto}
.grid{stroke:#eef1f5;stroke-width:1}.axis{stroke:#b8c0cc;stroke-width:1}
.tick{font-size:10px;fill:#6b7588}
.legend{display:flex;flex-wrap:wrap;gap:4px 12px;font-size:12px;color:#475266;margin:2px 4px}
.key i{display:inline-block;width:14px;height:3px;margin-right:5px;vertical-align:middle}
.key i.dash{background:repeating-linear-gradient(90deg,#d62728 0 5px,transparent 5px 9px)}
.key i.dot{width:8px;height:8px;border-radius:50%;background:#d62728}
.caption{font-size:12px;color:#6b7588;margin:4px 4px 0}
table{border-collapse:collapse;margin:6px 0;font-size:13px}caption{text-align:left;
font-size:12px;color:#6b7588;padding-bottom:3px}th,td{border-bottom:1px solid #eef1f5;
padding:4px 10px;text-align:left;white-space:nowrap}thead th{background:#f5f7fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.breach-row td{background:#fdf0f0}tr.sold td{background:#fff6e5}
.notice{padding:10px 12px;border-radius:6px;margin:8px 0}.notice.empty{background:#f5f7fa;
color:#475266}.notice.error{background:#fdf0f0;color:#8f1d1d}.notice.ok{background:#effaef;
color:#1e6b1e}
.summary b.bad{color:#d62728}.summary b.good{color:#2f7d2f}
#stream-table td.ok{color:#1e6b1e}#stream-table td.bad{color:#d62728;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;margin-left:6px}
.badge.ok{background:#effaef;color:#1e6b1e}.badge.warn{background:#fff3d6;color:#7a5200}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:6px 0}
dt{color:#5d6878}dd{margin:0}
form{margin:6px 0 10px}input{padding:4px 8px;border:1px solid #cfd6e1;border-radius:4px;
font:inherit}button{padding:4px 12px;border:1px solid #1f6fb2;background:#1f6fb2;color:#fff;
border-radius:4px;font:inherit;cursor:pointer}
.sources{font-size:12px;color:#6b7588;margin-top:30px}
.columns{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:0 28px}
#versions-table td,#versions-table thead th{min-width:170px}
details summary{cursor:pointer;color:#1f6fb2;margin:4px 0}
"""


def render_page(data: PageData) -> str:
    """Render the whole Ranking page of one surface as a self-contained HTML document."""
    sources = "".join(
        f"<li>{esc(name)}: <code>{esc(value)}</code></li>" for name, value in data.sources.items()
    )
    generated = f" · generated {esc(data.generated_at)}" if data.generated_at else ""
    body = [
        "<header><h1>Ranking</h1>",
        f'<p class="sub">surface <b id="surface">{esc(data.surface)}</b> · last {data.days} '
        f"monitored days{generated}</p>",
        surface_tabs(data.surface, data.surfaces, data.days),
        at_a_glance(data),
        "</header>",
        '<div class="columns">',
        versions_section(data.status, data.surface),
        champion_section(data.champion),
        "</div>",
        history_section(data.history, data.surface, data.days),
        stream_section(data.stream) if data.stream is not None else "",
        lookup_section(data.surface, data.user, data.lookup, allowed=data.lookup_allowed),
        f'<footer class="sources"><p>Sources</p><ul>{sources}</ul></footer>' if sources else "",
    ]
    return page_document(f"Ranking · {data.surface}", "".join(body))


def page_document(title: str, body: str) -> str:
    """Wrap a body in the page's HTML document (inline CSS only)."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{body}</body></html>"
    )


def message_page(title: str, message: str) -> str:
    """A small page for a missing report or a bad request."""
    return page_document(
        title, f'<h1>{esc(title)}</h1>{_notice(Notice(message))}<p><a href="../">back</a></p>'
    )

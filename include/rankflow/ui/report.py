"""One self-contained HTML report per training run: metrics, gate, segments, lists, examples.

Plots are PNG images inside the HTML (base64), so the file can be opened from MLflow, S3 or a
mail attachment without anything else.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from rankflow.evaluation.metrics import group_codes, ndcg_at_k

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xgboost as xgb
    from matplotlib.figure import Figure

CURVE_RANKERS = ("challenger", "champion", "popularity", "logged_order", "random", "oracle")


@dataclass
class ReportInputs:
    """Everything the report shows, gathered by the evaluate step."""

    title: str
    facts: dict[str, Any]
    table: dict[str, dict[str, float]]
    intervals: dict[str, dict[str, float]]
    gate: dict[str, Any]
    frame: pd.DataFrame
    rankers: dict[str, np.ndarray]
    booster: xgb.Booster
    examples: pd.DataFrame
    example_contributions: pd.DataFrame
    shadow_scores: dict[str, np.ndarray] = field(default_factory=dict)
    debiasing: str = "none"


def figure_html(figure: Figure, alt: str) -> str:
    """Embed a matplotlib figure as a PNG ``<img>`` (and close it)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def table_html(rows: list[dict[str, Any]], digits: int = 4) -> str:
    """A plain HTML table of dict rows (floats rounded)."""
    if not rows:
        return "<p>(none)</p>"
    columns = list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "–" if np.isnan(value) else f"{value:.{digits}f}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def ndcg_curve(frame: pd.DataFrame, rankers: dict[str, np.ndarray], max_k: int = 20) -> Figure:
    """NDCG@k for k = 1..max_k of the main rankers on the held-out lists (clicks as labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_codes(frame["qid"].to_numpy())
    labels = frame["label"].to_numpy(dtype="float64")
    figure, axis = plt.subplots(figsize=(6.5, 3.6))
    ks = np.arange(1, max_k + 1)
    for name in CURVE_RANKERS:
        if name in rankers:
            values = [ndcg_at_k(groups, labels, rankers[name], int(k), empty="skip") for k in ks]
            axis.plot(ks, values, marker="o", markersize=3, label=name)
    axis.set_xlabel("k")
    axis.set_ylabel("NDCG@k (logged clicks)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure


def importance_chart(booster: xgb.Booster, top: int = 15) -> Figure:
    """Total gain of the most useful features."""
    import matplotlib.pyplot as plt

    gains = booster.get_score(importance_type="total_gain")
    ranked = sorted(gains.items(), key=lambda item: item[1], reverse=True)[:top][::-1]
    figure, axis = plt.subplots(figsize=(6.5, 0.28 * max(len(ranked), 1) + 0.8))
    axis.barh([name for name, _ in ranked], [value for _, value in ranked], color="#4c72b0")
    axis.set_xlabel("total gain")
    axis.tick_params(axis="y", labelsize=8)
    return figure


def score_histogram(scores: dict[str, np.ndarray]) -> Figure:
    """Distribution of the models' scores over the same candidates."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 3.2))
    for name, values in scores.items():
        if len(values):
            axis.hist(values, bins=60, alpha=0.5, label=name)
    axis.set_xlabel("score")
    axis.set_ylabel("candidates")
    axis.legend(fontsize=8)
    return figure


def top_contributions(
    booster: xgb.Booster, inputs: np.ndarray, names: list[str], top: int = 3
) -> list[str]:
    """The ``top`` features that push each row's score most (XGBoost ``pred_contribs``)."""
    import xgboost as xgb

    contributions = booster.predict(xgb.DMatrix(inputs, feature_names=names), pred_contribs=True)
    per_feature = contributions[:, :-1]  # the last column is the bias
    order = np.argsort(-np.abs(per_feature), axis=1)[:, :top]
    return [
        ", ".join(f"{names[j]} {per_feature[i, j]:+.2f}" for j in order[i])
        for i in range(len(per_feature))
    ]


def metric_rows(
    table: dict[str, dict[str, float]], intervals: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """One row per ranker: the headline metrics, with the gate metric's bootstrap interval."""
    columns = ("ndcg@10", "ipw_ndcg@10", "truth_ndcg@10", "map@10", "mrr")
    rows = []
    for name, metrics in table.items():
        row: dict[str, Any] = {"ranker": name}
        for column in columns:
            if column in metrics:
                row[column] = metrics[column]
        if name in intervals:
            row["95% CI (gate metric)"] = (
                f"{intervals[name]['low']:.4f} .. {intervals[name]['high']:.4f}"
            )
        rows.append(row)
    return rows


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:bold}h2{margin-top:1.6em}
"""


def render_report(inputs: ReportInputs) -> str:
    """Render the whole report as one HTML string."""
    gate = inputs.gate
    verdict = "PROMOTED" if gate["promote"] else "NOT PROMOTED"
    checks = "".join(
        f'<li class="{"pass" if c["passed"] else "fail"}">{html.escape(c["detail"])}</li>'
        for c in gate.get("checks", [])
    )
    segments = [
        {
            "segment": s["name"],
            "queries": s["queries"],
            "challenger": s["challenger"],
            "champion": s["champion"],
            "difference": s["difference"]["estimate"],
            "95% CI": f"{s['difference']['low']:+.4f} .. {s['difference']['high']:+.4f}",
            "status": s["status"],
        }
        for s in gate.get("segments", [])
    ]
    lists = [{"model": name, **figures} for name, figures in gate.get("lists", {}).items()]
    variants = [
        {
            "variant": f"{inputs.debiasing} (challenger)"
            if name == "challenger"
            else name.split(":", 1)[1],
            **{k: v for k, v in m.items() if "ndcg@10" in k},
        }
        for name, m in inputs.table.items()
        if name.startswith("variant:") or name == "challenger"
    ]
    examples = inputs.examples.assign(top_features=inputs.example_contributions)
    sections = [
        f"<h1>{html.escape(inputs.title)}</h1>",
        table_html([{"fact": k, "value": v} for k, v in inputs.facts.items()]),
        f"<h2>Gate: {verdict}</h2><p>{html.escape(gate['reason'])}</p><ul>{checks}</ul>",
        "<h2>Held-out metrics (model, champion, baselines)</h2>",
        table_html(metric_rows(inputs.table, inputs.intervals)),
        "<h2>NDCG@k</h2>",
        figure_html(ndcg_curve(inputs.frame, inputs.rankers), "NDCG@k curve"),
        "<h2>Variants: debiasing methods, and the model without its stream features when it "
        "has them (same data; truth = the simulator's attractiveness)</h2>",
        table_html(variants),
        "<h2>Segments (gate metric, challenger vs champion)</h2>",
        table_html(segments),
        "<h2>Lists of the same users (shadow scoring)</h2>",
        table_html(lists),
        table_html(
            [
                {"overlap with the champion": k, "value": v}
                for k, v in gate.get("overlap", {}).items()
            ]
        ),
        "<h2>Score distribution</h2>",
        figure_html(score_histogram(inputs.shadow_scores), "score distribution"),
        "<h2>Feature importance</h2>",
        figure_html(importance_chart(inputs.booster), "feature importance"),
        "<h2>Example users (top of their lists, with the features that placed each item)</h2>",
        table_html(examples.to_dict("records"), digits=3),
    ]
    body = "\n".join(sections)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(inputs.title)}"
        f"</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )


def report_inputs(
    ds: date,
    trained: dict[str, Any],
    challenger_raw: bytes,
    frame: Any,
    rankers: dict[str, np.ndarray],
    table: dict[str, dict[str, float]],
    intervals: dict[str, dict[str, float]],
    decision: Any,
    candidates: Any,
    shadow_scores: dict[str, np.ndarray],
    examples: int = 5,
) -> Any:
    """Gather what the run report shows (example users come from the shadow sample)."""
    import numpy as np

    from rankflow.evaluation.lists import top_lists
    from rankflow.model.fit import booster_from_bytes, model_inputs

    booster = booster_from_bytes(challenger_raw, nthread=0)
    users = np.sort(candidates["user_id"].unique())[:examples]
    mask = candidates["user_id"].isin(users).to_numpy()
    chosen = candidates[mask].reset_index(drop=True)
    top = top_lists(chosen, shadow_scores["challenger"][mask], 5)
    shown = top[["user_id", "rank", "item_id", "category", "brand", "price", "seller_id"]]
    names = list(booster.feature_names or [])
    contributions = (
        top_contributions(booster, model_inputs(booster, top), names) if len(top) else []
    )
    facts = {
        "logical date": ds.isoformat(),
        "model version": trained["model_version"],
        "code version": trained.get("code_version"),
        "config hash": trained.get("config_hash"),
        "requirements.lock hash": trained.get("requirements_lock_hash"),
        "debiasing": trained.get("training_config", {}).get("debiasing"),
        "best iteration": trained.get("best_iteration"),
        "training window": "{train_start} .. {train_end}".format(**trained["window"]),
        "Delta versions": ", ".join(f"{k}@{v}" for k, v in trained["table_versions"].items()),
        "held-out impressions": len(frame),
    }
    return ReportInputs(
        title=f"rankflow run report: model {trained['model_version']} for {ds.isoformat()}",
        facts=facts,
        table=table,
        intervals=intervals,
        gate=decision.as_dict(),
        frame=frame,
        rankers=rankers,
        booster=booster,
        examples=shown,
        example_contributions=contributions,
        shadow_scores=shadow_scores,
        debiasing=str(trained.get("training_config", {}).get("debiasing", "none")),
    )

"""The run report: one self-contained HTML page with the figures, tables and example users."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import xgboost as xgb

from rankflow.ui.report import ReportInputs, render_report, top_contributions


def _booster() -> xgb.Booster:
    rng = np.random.default_rng(0)
    matrix = xgb.DMatrix(
        rng.random((200, 3)), label=rng.integers(0, 3, 200), feature_names=["price", "ctr", "age"]
    )
    matrix.set_group([20] * 10)
    return xgb.train({"objective": "rank:ndcg", "nthread": 1}, matrix, 5)


def _inputs(promote: bool) -> ReportInputs:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"qid": np.repeat(np.arange(30), 10), "label": rng.integers(0, 2, 300)})
    rankers = {name: rng.random(300) for name in ("challenger", "champion", "popularity")}
    table = {
        "challenger": {"ndcg@10": 0.5, "ipw_ndcg@10": 0.42, "truth_ndcg@10": 0.75},
        "variant:position_feature": {"ndcg@10": 0.47, "ipw_ndcg@10": 0.43, "truth_ndcg@10": 0.76},
    }
    gate = {
        "promote": promote,
        "reason": "segment country=FR: 0.3 vs 0.4 <worse>",
        "checks": [{"name": "segment country=FR", "passed": promote, "detail": "0.3 vs 0.4"}],
        "segments": [],
        "lists": {"challenger": {"catalog_coverage": 0.2}},
        "overlap": {"jaccard@10": 0.61},
    }
    examples = pd.DataFrame({"user_id": [7, 7], "rank": [1, 2], "item_id": [11, 12]})
    return ReportInputs(
        title="rankflow run report: model 3",
        facts={"model version": "3"},
        table=table,
        intervals={"challenger": {"low": 0.40, "high": 0.44}},
        gate=gate,
        frame=frame,
        rankers=rankers,
        booster=_booster(),
        examples=examples,
        example_contributions=["ctr +0.40, price -0.10", "age +0.05"],
        shadow_scores={"challenger": rng.random(100), "champion": rng.random(100)},
        debiasing="lambdarank_unbiased",
    )


def test_report_is_one_page_with_embedded_plots_and_every_section() -> None:
    page = render_report(_inputs(promote=False))
    assert page.startswith("<!doctype html>")
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{500,}"', page)) == 3
    for heading in (
        "Gate: NOT PROMOTED",
        "NDCG@k",
        "Variants: debiasing methods",
        "Segments",
        "Lists of the same users",
        "Score distribution",
        "Feature importance",
        "Example users",
    ):
        assert heading in page
    assert "0.4000 .. 0.4400" in page  # the challenger's interval
    assert "position_feature" in page
    assert "lambdarank_unbiased (challenger)" in page
    assert "0.7600" in page
    assert "ctr +0.40, price -0.10" in page
    assert "&lt;worse&gt;" in page  # text is escaped
    assert "http" not in page.replace("http-equiv", "")  # nothing is fetched from elsewhere


def test_top_contributions_name_the_features_that_move_each_score() -> None:
    booster = _booster()
    inputs = np.random.default_rng(2).random((4, 3)).astype("float32")
    explained = top_contributions(booster, inputs, ["price", "ctr", "age"], top=2)
    assert len(explained) == 4
    assert all(len(line.split(", ")) == 2 for line in explained)
    assert all(
        re.fullmatch(r"(price|ctr|age) [+-]\d\.\d\d, (price|ctr|age) [+-]\d\.\d\d", line)
        for line in explained
    )

"""The train step's rows: query groups without a click left out, samples of whole groups."""

from __future__ import annotations

import random

import pytest

from rankflow.model.spark_engine import VALIDATION, PartitionedRows
from rankflow.steps.train import clicked_groups_only, groups_with_clicks

pytestmark = pytest.mark.spark


def labelled_rows(spark, groups: int = 300, size: int = 6, seed: int = 3):
    """Rows of ``groups`` query groups over two days; about half the groups have a click."""
    draw = random.Random(seed)
    rows = []
    for g in range(groups):
        clicked = draw.random() < 0.5
        for position in range(1, size + 1):
            label = 1.0 if clicked and position == draw.randint(1, size) else 0.0
            ds = f"2026-11-0{1 + g % 2}"
            rows.append((ds, f"q{g}", position, label, g % 7 == 0))
    return spark.createDataFrame(
        rows, f"ds string, qid string, position int, label double, {VALIDATION} boolean"
    )


def test_only_groups_with_a_click_are_trained_on_whole(spark) -> None:
    rows = labelled_rows(spark)
    local = rows.toPandas()
    top = local.groupby(["ds", "qid"])["label"].max()
    wanted = set(top[top > 0].index)
    kept = groups_with_clicks(rows).toPandas()
    assert 0 < len(wanted) < len(top)
    assert set(zip(kept.ds, kept.qid, strict=True)) == wanted
    assert set(kept.groupby(["ds", "qid"]).size()) == {6}  # every row of a kept group


def test_groups_without_clicks_is_skip_or_keep_and_older_lineages_kept_them() -> None:
    assert clicked_groups_only({"groups_without_clicks": "skip"})
    assert not clicked_groups_only({"groups_without_clicks": "keep"})
    assert not clicked_groups_only({})  # a model trained before the setting: every group
    with pytest.raises(ValueError, match="skip or keep"):
        clicked_groups_only({"groups_without_clicks": "drop"})


def test_the_spark_engines_sample_keeps_whole_groups_and_every_validation_row(spark) -> None:
    from pyspark.sql import functions as F

    frame = labelled_rows(spark, groups=1000)
    train_rows = frame.where(~F.col(VALIDATION)).count()
    validation_rows = frame.count() - train_rows
    rows = PartitionedRows(frame, 2, train_rows, validation_rows)
    sample = rows.groups_sample(train_rows // 4)
    kept = sample.frame.toPandas()
    trained = kept[~kept[VALIDATION]]
    assert sample.train_rows == len(trained)
    assert train_rows * 0.15 < len(trained) < train_rows * 0.35
    assert set(trained.groupby(["ds", "qid"]).size()) == {6}
    assert int(kept[VALIDATION].sum()) == validation_rows == sample.validation_rows
    assert rows.groups_sample(train_rows) is rows

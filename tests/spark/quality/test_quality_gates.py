"""Data-quality gates: every seeded defect class blocks its step; clean generated days pass."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import functions as F

from rankflow.config import Settings
from rankflow.features.registry import MODEL_FEATURES
from rankflow.quality.gates import DataQualityError, gate
from rankflow.quality.raw import raw_day_path
from rankflow.quality.suites import feature_suite, ranked_lists_suite
from rankflow.runs import results_dir
from rankflow.steps.ingest import ingest_range
from rankflow.steps.score import list_statistics
from rankflow.steps.train import training_set_gate
from rankflow.transforms.bronze import MalformedShareError

pytestmark = pytest.mark.spark
DS = date(2026, 10, 12)
ROWS = 200  # events per clean day; a defect touches 10% of them (the gate tolerates 1%)


def event(i: int, ds: date = DS, **override: object) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": f"{ds}-e{i}",
        "event_type": "impression",
        "ts": f"{ds}T10:{i % 60:02d}:00Z",
        "user_id": 7 + i % 13,
        "item_id": 100 + i,
        "surface": "home",
        "session_id": f"{ds}-s{i // 20}",
        "position": i % 20 + 1,
    }
    row.update(override)
    return row


def clean_day(ds: date = DS, rows: int = ROWS) -> list[dict[str, Any]]:
    return [event(i, ds) for i in range(rows)]


def land(settings: Settings, rows: list[dict[str, Any]], ds: date = DS) -> None:
    folder = raw_day_path(settings, "events", ds)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-00000.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "_SUCCESS").touch()


def seeded(defect: str) -> list[dict[str, Any]]:
    """Return a clean day with one defect class in 10% of its rows."""
    rows = clean_day()
    hit = range(0, ROWS, 10)
    for i in hit:
        if defect == "null_user_id":
            rows[i]["user_id"] = None
        elif defect == "unknown_event_type":
            rows[i]["event_type"] = "teleport"
        elif defect == "position_below_1":
            rows[i]["position"] = 0
        elif defect == "timestamp_outside_day":
            rows[i]["ts"] = f"{DS + timedelta(days=1)}T03:00:00Z"
    if defect == "duplicate_event_ids":
        rows += [dict(rows[i]) for i in hit]
    if defect == "duplicate_impressions":
        rows += [{**rows[i], "event_id": f"retry-{i}"} for i in hit]
    return rows


RAW_DEFECTS = [
    ("null_user_id", "expect_column_values_to_not_be_null"),
    ("unknown_event_type", "expect_column_values_to_be_in_set"),
    ("position_below_1", "expect_column_values_to_be_between"),
    ("timestamp_outside_day", "expect_column_values_to_be_between"),
    ("duplicate_event_ids", "expect_column_values_to_be_unique"),
    ("duplicate_impressions", "expect_column_values_to_be_between"),
]


def blocked_checks(settings: Settings, suite: str, ds: date = DS) -> set[str]:
    record = json.loads((results_dir(settings, ds) / f"{suite}.json").read_text())
    return {o["check"] for o in record["outcomes"] if not o["success"]}


@pytest.mark.parametrize(("defect", "check"), RAW_DEFECTS)
def test_each_raw_event_defect_blocks_ingest_and_leaves_bronze_untouched(
    spark: Any, lake_settings: Settings, defect: str, check: str
) -> None:
    land(lake_settings, seeded(defect))
    with pytest.raises(DataQualityError, match="raw_events 2026-10-12: blocked"):
        ingest_range(spark, lake_settings, "events", DS, DS)
    assert check in blocked_checks(lake_settings, "raw_events")
    assert not Path(lake_settings.paths.table("bronze/events")).exists()
    assert (results_dir(lake_settings, DS) / "raw_events.html").stat().st_size > 5000


def test_a_collapsed_day_is_blocked_against_the_recent_days(
    spark: Any, lake_settings: Settings
) -> None:
    history = [DS - timedelta(days=d) for d in range(7, 0, -1)]
    for day in history:
        land(lake_settings, clean_day(day), day)
    ingest_range(spark, lake_settings, "events", history[0], history[-1])
    land(lake_settings, clean_day(DS, rows=ROWS // 4))
    with pytest.raises(DataQualityError, match="row_count_against_recent_days"):
        ingest_range(spark, lake_settings, "events", DS, DS)
    bronze = spark.read.format("delta").load(lake_settings.paths.table("bronze/events"))
    assert bronze.where(f"ds = DATE'{DS}'").count() == 0


def test_a_clean_day_passes_with_a_few_malformed_rows_quarantined(
    spark: Any, lake_settings: Settings
) -> None:
    rows = clean_day()
    rows[5]["position"] = 0  # 0.5% of the day: quarantined and counted, not a block
    land(lake_settings, rows)
    stats = ingest_range(spark, lake_settings, "events", DS, DS)[0]
    assert (stats.accepted, stats.quarantined) == (ROWS - 1, 1)
    assert blocked_checks(lake_settings, "raw_events") == set()


def test_too_many_malformed_items_are_a_data_quality_block(
    spark: Any, lake_settings: Settings
) -> None:
    folder = raw_day_path(lake_settings, "items", DS)
    folder.mkdir(parents=True)
    good = {"seller_id": 1, "listed_ts": f"{DS}T01:00:00Z", "category": "tops", "brand": "b"}
    good |= {"condition": "good", "price": 10.0}
    lines = [{**good, "item_id": i, "price": -1.0 if i % 5 == 0 else 10.0} for i in range(1, 51)]
    (folder / "part-00000.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    (folder / "_SUCCESS").touch()
    with pytest.raises(MalformedShareError, match="10 of 50 items rows"):
        ingest_range(spark, lake_settings, "items", DS, DS)


def item_features(spark: Any, **override: Any) -> Any:
    rows = []
    for i in range(100):
        row = {"item_id": i + 1, "item_ctr_1d": 0.1, "item_ctr_7d": 0.1, "item_ctr_28d": 0.1}
        row |= {"item_price": 20.0, "item_age_days": 3.0, "popularity": 1.0}
        row |= {"category": "tops", "brand": "b"}
        rows.append(row)
    for i in range(0, 100, 10):
        rows[i].update(override)
    frame = spark.createDataFrame(pd.DataFrame(rows))
    # Arrow turns pandas' NaN into null: put a real Spark NaN back where one was asked for
    for column, value in override.items():
        if isinstance(value, float) and math.isnan(value):
            frame = frame.withColumn(column, F.coalesce(F.col(column), F.lit(value)))
    return frame


@pytest.mark.parametrize(
    ("override", "check"),
    [
        ({"item_ctr_7d": 1.7}, "expect_column_values_to_be_between"),
        ({"item_price": -5.0}, "expect_column_values_to_be_between"),
        ({"item_price": float("nan")}, "expect_column_values_to_be_between"),
        ({"item_price": float("inf")}, "expect_column_values_to_be_between"),
        ({"item_price": None}, "expect_column_values_to_not_be_null"),
        ({"category": None}, "expect_column_values_to_not_be_null"),
        ({"item_id": 1}, "expect_column_values_to_be_unique"),
    ],
)
def test_feature_defects_block(
    spark: Any, lake_settings: Settings, override: dict[str, Any], check: str
) -> None:
    suite = feature_suite("items", DS, max_null_share=0.01)
    assert gate(lake_settings, DS, item_features(spark), "items_features", suite).blocking == []
    with pytest.raises(DataQualityError, match="items_features"):
        gate(lake_settings, DS, item_features(spark, **override), "items_features", suite)
    assert check in blocked_checks(lake_settings, "items_features")


def test_stale_user_features_block(spark: Any, lake_settings: Settings) -> None:
    users = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "country": ["FR", "DE", "LT"],
            "user_active_days_28d": [3, 1, 28],
            "user_clicks_28d": [0, 4, 9],
            "last_event_ts": pd.to_datetime(
                ["2026-10-09 08:00", "2026-10-10 12:00", "2026-10-11 23:00"]
            ),
        }
    )
    suite = feature_suite("users", DS, max_null_share=0.01)
    with pytest.raises(DataQualityError, match="expect_column_max_to_be_between"):
        gate(lake_settings, DS, spark.createDataFrame(users), "users_features", suite)


def training_frame(groups: int = 30) -> pd.DataFrame:
    rng = __import__("numpy").random.default_rng(0)
    rows = groups * 10
    frame = pd.DataFrame({name: rng.normal(size=rows) for name in MODEL_FEATURES})
    frame["qid"] = [f"q{g:04d}" for g in range(groups) for _ in range(10)]
    frame["label"] = rng.choice([0, 0, 0, 1, 2, 4], size=rows)
    return frame


def test_a_clean_training_set_passes(lake_settings: Settings) -> None:
    training_set_gate(lake_settings, DS, training_frame())
    assert blocked_checks(lake_settings, "training_set") == set()


@pytest.mark.parametrize(
    ("defect", "check"),
    [
        ("leaking_feature", "no_column_leaks_the_label"),
        ("split_query_group", "query_groups_contiguous_and_sorted"),
        ("label_out_of_range", "expect_column_values_to_be_between"),
    ],
)
def test_training_set_defects_block_training(
    lake_settings: Settings, defect: str, check: str
) -> None:
    frame = training_frame()
    if defect == "leaking_feature":
        frame[MODEL_FEATURES[3]] = frame["label"] + 0.01 * frame[MODEL_FEATURES[4]].abs()
    elif defect == "split_query_group":
        frame = pd.concat([frame.iloc[5:], frame.iloc[:5]], ignore_index=True)
    elif defect == "label_out_of_range":
        frame.loc[7, "label"] = 9
    with pytest.raises(DataQualityError, match="training_set"):
        training_set_gate(lake_settings, DS, frame)
    assert check in blocked_checks(lake_settings, "training_set")


def ranked(spark: Any, lists: dict[int, list[int]]) -> Any:
    return spark.createDataFrame(
        [(user, items) for user, items in lists.items()], "user_id long, item_ids array<long>"
    )


def catalogue(spark: Any) -> Any:
    rows = [(i, i >= 90) for i in range(1, 101)]  # items 90..100 have sold
    return spark.createDataFrame(rows, "item_id long, is_sold boolean")


CLEAN_LISTS = {user: [(user + k) % 80 + 1 for k in range(5)] for user in range(1, 41)}


@pytest.mark.parametrize(
    ("defect", "check"),
    [
        (None, None),
        ("duplicate_item", "expect_column_pair_values_to_be_equal"),
        ("sold_item", "expect_column_values_to_be_in_set"),
        ("unknown_item", "expect_column_values_to_be_in_set"),
        ("short_lists", "expect_column_values_to_be_between"),
        ("missing_users", "expect_table_row_count_to_be_between"),
    ],
)
def test_ranked_list_defects_block_publishing(
    spark: Any, lake_settings: Settings, defect: str | None, check: str | None
) -> None:
    lists = {user: list(items) for user, items in CLEAN_LISTS.items()}
    if defect == "duplicate_item":
        lists[3][4] = lists[3][0]
    elif defect == "sold_item":
        lists[4][2] = 95
    elif defect == "unknown_item":
        lists[5][1] = 5000
    elif defect == "short_lists":
        lists = {user: items[:3] if user % 2 else items for user, items in lists.items()}
    elif defect == "missing_users":
        lists = {user: items for user, items in lists.items() if user <= 30}
    statistics = list_statistics(ranked(spark, lists), catalogue(spark))
    suite = ranked_lists_suite(top_k=5, min_users=40, full_share=0.99)
    if defect is None:
        assert gate(lake_settings, DS, statistics, "ranked_lists", suite).blocking == []
        return
    with pytest.raises(DataQualityError, match="ranked_lists"):
        gate(lake_settings, DS, statistics, "ranked_lists", suite)
    assert check in blocked_checks(lake_settings, "ranked_lists")


def test_warnings_are_recorded_without_blocking(spark: Any, lake_settings: Settings) -> None:
    suite = feature_suite("items", DS, max_null_share=0.01)
    report = gate(lake_settings, DS, item_features(spark, brand=None), "items_features", suite)
    assert report.blocking == []
    assert [w.column for w in report.warnings] == ["brand"]
    record = json.loads((results_dir(lake_settings, DS) / "items_features.json").read_text())
    assert record["failed_warning"] == 1
    assert not record["blocked"]


def test_partitions_of_whole_sorted_query_groups_pass_and_a_split_group_fails(spark) -> None:
    from rankflow.quality.suites import partition_query_groups_outcome

    rows = spark.createDataFrame(
        [(group, position) for group in range(40) for position in range(5)], "g long, p int"
    )
    whole = rows.repartition(3, "g").sortWithinPartitions("g", "p")
    outcome = partition_query_groups_outcome(whole, "g")
    assert outcome.success, outcome.observed
    assert "40 groups in 40 runs of rows over 3 partitions, sorted" in outcome.observed

    # round-robin rows: a group's rows land in several partitions
    split = rows.repartition(3).sortWithinPartitions("g", "p")
    assert not partition_query_groups_outcome(split, "g").success
    # whole groups, but not sorted by their id within a partition
    unsorted = rows.repartition(3, "g").sortWithinPartitions(F.col("g").desc(), "p")
    assert not partition_query_groups_outcome(unsorted, "g").success

"""Training set: no feature sees its label day, graded labels, idempotent rewrites.

The tiny simulated marketplace of ``tests/spark/conftest.py`` (5 days, ingested once per
session); its last day ``D`` is the label day of every check.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from functools import reduce
from typing import Any

import pytest

from rankflow.config import Settings
from rankflow.features.registry import MODEL_FEATURES
from tiny_lake import TINY_DAY

pytestmark = pytest.mark.spark

D = TINY_DAY  # the label day: the last generated day
KEY = ["qid", "item_id"]
KEPT = [*KEY, "user_id", "position", "label", "features_as_of", "ds", *MODEL_FEATURES]


@pytest.fixture(scope="module")
def bronze(spark: Any, lake: Settings) -> Iterator[tuple[Any, Any, Any]]:
    """The bronze events (cached: every check rebuilds from them), items and users."""
    from rankflow.lake.tables import bronze as read_bronze

    events, items, users = read_bronze(spark, lake)
    events = events.cache()
    yield events, items, users
    events.unpersist()


@pytest.fixture(scope="module")
def written(spark: Any, lake: Settings) -> tuple[dict[str, int], int]:
    """Run the training-set step for ``D`` once; return its counts and the Delta version."""
    from rankflow.lake.tables import table_version
    from rankflow.steps.training_set import run_training_set

    counts = run_training_set(spark, lake, D, D)
    return counts, table_version(spark, lake.paths.table("silver/training_set"))


def training_table(spark: Any, settings: Settings, version: int) -> Any:
    """Read the ``D`` partition of the training set as it was at ``version``, sorted by key."""
    from pyspark.sql import functions as F

    path = settings.paths.table("silver/training_set")
    table = spark.read.format("delta").option("versionAsOf", version).load(path)
    return table.where(F.col("ds") == lit_date(D)).orderBy(*KEY)


@pytest.fixture(scope="module")
def baseline(spark: Any, lake: Settings, written: tuple[dict[str, int], int]) -> Any:
    """The training rows of ``D`` written from the untouched events, as pandas."""
    return training_table(spark, lake, written[1]).select(*KEPT).toPandas()


def training_rows(events: Any, items: Any, users: Any, settings: Settings) -> Any:
    from rankflow.transforms.training_set import build_training_set

    built = build_training_set(events, items, users, [D], settings.pipeline)
    return built.select(*KEPT).toPandas()


def lit_date(day: date) -> Any:
    from pyspark.sql import functions as F

    return F.lit(day.isoformat()).cast("date")


def as_event(frame: Any, event_type: str, session_prefix: str = "") -> Any:
    """Turn impression rows into ``event_type`` rows (optionally in another session)."""
    from pyspark.sql import functions as F

    session = F.concat(F.lit(session_prefix), F.col("session_id"))
    return (
        frame.withColumn("event_type", F.lit(event_type))
        .withColumn("session_id", session)
        .withColumn("event_id", F.concat_ws("-", F.lit("t"), session, "position", "event_type"))
    )


def union_all(frames: list[Any]) -> Any:
    return reduce(lambda a, b: a.unionByName(b), frames)


def changed_features(before: Any, after: Any) -> tuple[Any, list[str]]:
    """Join ``after`` to every row of ``before`` (one to one) and name the features that moved."""
    import numpy as np

    merged = before.merge(
        after, on=KEY, how="left", suffixes=("", "_after"), validate="one_to_one", indicator=True
    )
    assert (merged["_merge"] == "both").all(), "rows of the baseline vanished"
    changed = [
        name
        for name in MODEL_FEATURES
        if not np.allclose(
            merged[f"{name}_after"].astype("float64"),
            merged[name].astype("float64"),
            rtol=1e-9,
            atol=0.0,
            equal_nan=True,
        )
    ]
    return merged, changed


def test_baseline_is_one_row_per_impression_with_features_of_the_day_before(
    baseline: Any, bronze: tuple[Any, Any, Any]
) -> None:
    from pyspark.sql import functions as F

    events = bronze[0]
    impressions = (
        events.where((F.col("ds") == lit_date(D)) & (F.col("event_type") == "impression"))
        .select("session_id", "item_id")
        .distinct()
        .count()
    )
    assert len(baseline) == impressions > 1000
    assert not baseline.duplicated(KEY).any()
    assert set(baseline["ds"]) == {D}
    assert all(
        ds - as_of == timedelta(days=1)
        for ds, as_of in zip(baseline["ds"], baseline["features_as_of"], strict=True)
    )
    assert (baseline["label"] > 0).sum() > 10  # the label day has actions to hide


def test_no_feature_uses_the_label_day(
    baseline: Any, bronze: tuple[Any, Any, Any], lake: Settings
) -> None:
    """Rewrite day D's actions completely: labels change, no feature may move."""
    from pyspark.sql import functions as F

    events, items, users = bronze
    on_d = F.col("ds") == lit_date(D)
    shown = events.where(on_d & (F.col("event_type") == "impression"))
    odd = shown.where(F.col("position") % 2 == 1)
    perturbed = union_all(
        [
            # every action of D is gone ...
            events.where(~on_d | (F.col("event_type") == "impression")),
            # ... and odd positions now get clicked and bought in their own session ...
            as_event(odd, "click"),
            as_event(odd, "purchase"),
            # ... and every impression of D is repeated, clicked, saved, bagged and bought in a
            # second session of the same user on the same day (new rows, same items and users)
            *[
                as_event(shown, t, "leak-")
                for t in ("impression", "click", "like", "save", "add_to_bag", "purchase")
            ],
        ]
    )
    after = training_rows(perturbed, items, users, lake)

    assert len(after) == 2 * len(baseline)  # the leak sessions added their own rows
    merged, changed = changed_features(baseline, after)
    assert changed == []
    gains = lake.pipeline["labels"]["gains"]
    expected = merged["position"].map(lambda p: float(gains["purchase"]) if p % 2 else 0.0)
    assert (merged["label_after"] == expected).all()
    assert (merged["label_after"] != merged["label"]).sum() > len(merged) // 3
    assert all(
        ds - as_of == timedelta(days=1)
        for ds, as_of in zip(after["ds"], after["features_as_of"], strict=True)
    )


def test_the_day_before_does_move_the_features(
    baseline: Any, bronze: tuple[Any, Any, Any], lake: Settings
) -> None:
    """Same check on D - 1: a click there must reach the features (the check is sensitive)."""
    from pyspark.sql import functions as F

    events, items, users = bronze
    before = D - timedelta(days=1)
    shown = events.where((F.col("ds") == lit_date(D)) & (F.col("event_type") == "impression"))
    clicks = (
        as_event(shown, "click", "probe-")
        .withColumn("ds", lit_date(before))
        .withColumn("ts", F.lit(f"{before.isoformat()} 12:00:00").cast("timestamp"))
    )
    after = training_rows(events.unionByName(clicks), items, users, lake)

    merged, changed = changed_features(baseline, after)
    assert {"item_clicks_1d", "item_clicks_7d", "clicked_before", "user_clicks_28d"} <= set(changed)
    assert (merged["item_clicks_1d_after"] > merged["item_clicks_1d"]).all()
    assert (merged["clicked_before_after"] >= merged["clicked_before"] + 1).all()
    known_users = merged["user_clicks_28d"].notna()
    assert known_users.sum() > len(merged) // 2
    grew = merged["user_clicks_28d_after"] > merged["user_clicks_28d"]
    assert grew[known_users].all()
    assert (merged["label_after"] == merged["label"]).all()


ITEMS_SCHEMA = (
    "item_id long, seller_id long, listed_ts timestamp, category string, brand string, "
    "style string, size string, condition string, price double, seller_rating double, ds date"
)
USERS_SCHEMA = "user_id long, signup_ts timestamp, country string, size string, ds date"
EVENTS_SCHEMA = (
    "event_id string, event_type string, ts timestamp, user_id long, item_id long, "
    "surface string, session_id string, position int, ds date"
)


def test_labels_are_the_gain_of_the_strongest_action_in_the_same_session(
    spark: Any, lake_settings: Settings
) -> None:
    from rankflow.transforms.training_set import build_training_set

    gains = {k: float(v) for k, v in lake_settings.pipeline["labels"]["gains"].items()}
    assert gains["purchase"] > gains["add_to_bag"] > gains["save"] > gains["click"] > 0
    assert gains["like"] == gains["save"]
    noon = datetime(2026, 10, 5, 12)
    rows: list[tuple[Any, ...]] = []

    def add(session: str, event_type: str, item: int, position: int, day: date = D) -> None:
        ts = noon + timedelta(minutes=len(rows)) - (D - day)
        rows.append((f"e{len(rows)}", event_type, ts, 7, item, "home", session, position, day))

    for position, item in enumerate([1, 2, 3, 4, 5, 6, 7], start=1):
        add("s1", "impression", item, position)
    add("s1", "impression", 1, 9)  # the same item shown twice in a session is one row
    for event_type, item in [
        ("click", 1), ("add_to_bag", 1), ("purchase", 1),  # -> purchase
        ("click", 2), ("add_to_bag", 2),  # -> add_to_bag
        ("click", 3), ("save", 3),  # -> save
        ("like", 4),  # -> like
        ("click", 5),  # -> click
        ("click", 7), ("like", 7), ("add_to_bag", 7), ("save", 7),  # -> max = add_to_bag
        ("click", 8),  # item 8 is shown in s2, not s1
    ]:  # fmt: skip
        add("s1", event_type, item, 1)
    add("s2", "impression", 8, 1)
    add("s2", "purchase", 6, 2)  # item 6 bought in another session: s1's item 6 stays 0
    add("s0", "impression", 9, 1, day=D - timedelta(days=1))  # not a label day
    add("s0", "purchase", 9, 1, day=D - timedelta(days=1))
    events = spark.createDataFrame(rows, EVENTS_SCHEMA)
    items = spark.createDataFrame([], ITEMS_SCHEMA)
    users = spark.createDataFrame([], USERS_SCHEMA)

    built = build_training_set(events, items, users, [D], lake_settings.pipeline)
    labels = {(r["qid"], r["item_id"]): (r["label"], r["position"]) for r in built.collect()}

    assert labels == {
        ("s1", 1): (gains["purchase"], 1),
        ("s1", 2): (gains["add_to_bag"], 2),
        ("s1", 3): (gains["save"], 3),
        ("s1", 4): (gains["like"], 4),
        ("s1", 5): (gains["click"], 5),
        ("s1", 6): (0.0, 6),
        ("s1", 7): (gains["add_to_bag"], 7),
        ("s2", 8): (0.0, 1),
    }


def test_training_set_rewrite_is_idempotent(
    spark: Any, lake: Settings, written: tuple[dict[str, int], int], baseline: Any
) -> None:
    from pyspark.testing import assertDataFrameEqual

    from rankflow.lake.tables import table_version
    from rankflow.steps.training_set import run_training_set

    first, version = written
    second = run_training_set(spark, lake, D, D)

    assert first == second == {D.isoformat(): len(baseline)}
    assert table_version(spark, lake.paths.table("silver/training_set")) == version + 1
    assertDataFrameEqual(
        training_table(spark, lake, version + 1),
        training_table(spark, lake, version),
        checkRowOrder=True,
        rtol=1e-9,
        atol=0.0,
    )


def test_the_local_engine_refuses_a_window_it_cannot_hold_before_collecting(
    spark: Any, lake: Settings, written: tuple[dict[str, int], int], monkeypatch: Any
) -> None:
    from rankflow import host
    from rankflow.model.fit import TrainingWindow
    from rankflow.steps.train import (
        LOCAL_ENGINE_BYTES_PER_ROW,
        TrainingTooLarge,
        check_driver_room,
        groups_with_clicks,
    )

    window = TrainingWindow(D, D, D, D, D + timedelta(days=1))
    table = training_table(spark, lake, written[1])
    every, clicked = table.count(), groups_with_clicks(table).count()
    assert 0 < clicked < every

    def room(rows: int) -> None:
        monkeypatch.setattr(
            host, "available_memory_bytes", lambda: rows * LOCAL_ENGINE_BYTES_PER_ROW
        )

    room(every)
    check_driver_room(spark, lake, window, written[1], clicked_only=False)
    room(every - 1)
    with pytest.raises(TrainingTooLarge, match=rf"collects {every:,} rows .* set training.engine"):
        check_driver_room(spark, lake, window, written[1], clicked_only=False)
    room(clicked)  # the bound does not fit; the clicked groups' exact count does
    check_driver_room(spark, lake, window, written[1], clicked_only=True)
    room(clicked - 1)
    with pytest.raises(TrainingTooLarge, match=rf"collects {clicked:,} rows"):
        check_driver_room(spark, lake, window, written[1], clicked_only=True)
    monkeypatch.setattr(host, "available_memory_bytes", lambda: None)  # no /proc/meminfo
    check_driver_room(spark, lake, window, written[1], clicked_only=False)


def test_stream_features_are_those_of_each_lists_request_less_the_lag(
    spark: Any, lake_settings: Settings
) -> None:
    """``training.stream_features``: every row of a list gets the features as of its request.

    The list was requested when its first item was shown; a click on that list's first item,
    before its later items were shown, must not reach their features (the service ranked the
    whole list at once). Events of the day before count when inside the session window.
    """
    from rankflow.transforms.training_set import build_training_set

    noon = datetime(2026, 10, 5, 12)
    assert noon.date() == D
    rows: list[tuple[Any, ...]] = []

    def add(session: str, event_type: str, item: int, position: int, at: datetime) -> None:
        rows.append((f"e{len(rows)}", event_type, at, 7, item, "home", session, position,
                     at.date()))  # fmt: skip

    second = timedelta(seconds=1)
    add("s0", "impression", 1, 1, noon - 10 * 60 * second)  # 11:50, shoes of brand x
    add("s0", "click", 1, 1, noon - 9 * 60 * second)  # 11:51: a positive in the window
    add("s1", "impression", 2, 1, noon)  # the request: 12:00:00
    add("s1", "impression", 3, 2, noon)
    add("s1", "click", 2, 1, noon + second)  # after the request: must not count
    add("s1", "impression", 1, 3, noon + 2 * second)  # shown later in the same list
    add("s9", "impression", 2, 1, noon - 12 * 3600 * second - 3600 * second)  # 23:00 the day before
    add("s8", "impression", 3, 1, noon - 3 * 3600 * second)  # 09:00: earlier today
    events = spark.createDataFrame(rows, EVENTS_SCHEMA)
    listed = datetime(2026, 9, 1)
    items = spark.createDataFrame(
        [(1, 1, listed, "shoes", "x", None, None, "good", 10.0, None, listed.date()),
         (2, 1, listed, "shoes", "y", None, None, "good", 10.0, None, listed.date()),
         (3, 1, listed, "bags", "x", None, None, "good", 10.0, None, listed.date())],
        ITEMS_SCHEMA,
    )  # fmt: skip
    users = spark.createDataFrame([], USERS_SCHEMA)
    config = {**lake_settings.pipeline}
    config["training"] = {**config["training"], "stream_features": True}

    built = build_training_set(events, items, users, [D], config)
    got = {r["item_id"]: r.asDict() for r in built.where("qid = 's1'").collect()}

    cutoff = noon - second  # floor(request) - 1 s of declared lag
    since = (cutoff - (noon - 9 * 60 * second)).total_seconds()
    assert {i: (got[i]["sess_pos_category"], got[i]["sess_pos_brand"]) for i in got} == {
        1: (1.0, 1.0), 2: (1.0, 0.0), 3: (0.0, 1.0)
    }  # fmt: skip
    assert {i: got[i]["sess_secs_since_pos"] for i in got} == {1: since, 2: since, 3: since}
    assert {i: got[i]["sess_seen"] for i in got} == {1: 1.0, 2: 0.0, 3: 0.0}
    # today so far: item 3 shown at 09:00, item 2 only yesterday, item 1 at 11:50
    assert {i: got[i]["today_impressions"] for i in got} == {1: 1.0, 2: 0.0, 3: 1.0}
    assert {i: got[i]["today_clicks"] for i in got} == {1: 1.0, 2: 0.0, 3: 0.0}
    assert {i: got[i]["today_saves"] for i in got} == {1: 0.0, 2: 0.0, 3: 0.0}

    default = build_training_set(events, items, users, [D], lake_settings.pipeline)
    assert lake_settings.pipeline["training"]["stream_features"] is False
    off = default.where("qid = 's1'").select("today_impressions", "sess_seen").collect()
    assert len(off) == 3
    assert all(v is None for r in off for v in r)  # null: not computed

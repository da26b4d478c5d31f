"""The user x item function: golden cases of SQL's semantics, and the Arrow face Spark calls."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from rankflow.features.on_demand import (
    Affinity,
    ItemSide,
    UserSide,
    affinity_of,
    cross_feature_batches,
    cross_features,
    price_distance,
    size_fit,
)
from rankflow.features.registry import CROSS_FEATURES

I64 = np.int64


def test_affinity_finds_each_rows_user_and_value_and_defaults_to_zero() -> None:
    # user 0: {3: .25, 7: .75}; user 1: {3: .5}; user 2: no map
    aff = Affinity(
        np.array([0, 0, 1], I64), np.array([7, 3, 3], I64), np.array([0.75, 0.25, 0.5], "f4")
    )
    users = np.array([0, 0, 1, 1, 2, 0], I64)
    values = np.array([3, 7, 3, 7, 3, -1], I64)
    got = affinity_of(users, values, aff)
    assert got.dtype == np.float32
    assert got.tolist() == [0.25, 0.75, 0.5, 0.0, 0.0, 0.0]


def test_affinity_with_no_entries_at_all_is_zero() -> None:
    empty = Affinity(np.array([], I64), np.array([], I64), np.array([], "f4"))
    assert affinity_of(np.array([0, 1], I64), np.array([0, 5], I64), empty).tolist() == [0, 0]


@pytest.mark.parametrize(
    ("item", "declared", "expected"),
    [
        (1, 1, 1.0),  # the user's size
        (1, 2, 0.0),  # another size
        (9, 2, 1.0),  # one size fits everyone
        (9, -1, 1.0),  # ... even a user whose size is unknown
        (1, -1, math.nan),  # unknown user size
        (-1, 1, math.nan),  # unknown item size
        (-1, -1, math.nan),
    ],
)
def test_size_fit_follows_sql_three_valued_logic(item: int, declared: int, expected: float) -> None:
    got = float(size_fit(np.array([item], I64), np.array([declared], I64), one_size=9)[0])
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


def test_price_distance_is_nan_for_missing_or_non_positive_prices() -> None:
    prices = np.array([np.e, 0.0, -3.0, np.nan, 1.0], "f4")
    means = np.array([0.0, 1.0, 1.0, 1.0, np.nan], "f4")
    got = price_distance(prices, means)
    assert got[0] == np.float32(abs(np.log(np.float64(np.float32(np.e)))))
    assert np.isnan(got[1:]).all()


def test_every_output_is_float32_in_registry_order() -> None:
    aff = {d: Affinity(np.array([0], I64), np.array([0], I64), np.array([1.0], "f4"))
           for d in ("category", "brand", "style", "size")}  # fmt: skip
    users = UserSide(aff, np.array([0], I64), np.array([1.0], "f4"))
    items = ItemSide({d: np.array([0, 1], I64) for d in aff}, np.array([5.0, 6.0], "f4"))
    out = cross_features(
        np.array([0, 0], I64), items, users, np.array([2, 0], "f4"), np.array([1, 0], "f4"), -1
    )
    assert list(out) == CROSS_FEATURES
    assert all(v.dtype == np.float32 and v.shape == (2,) for v in out.values())
    assert out["aff_brand"].tolist() == [1.0, 0.0]
    assert out["size_fit"].tolist() == [1.0, 0.0]
    assert out["seen_before"].tolist() == [2.0, 0.0]


def test_the_arrow_face_drops_the_maps_and_handles_null_maps_and_strings() -> None:
    affinity = pa.map_(pa.string(), pa.float64())
    batch = pa.RecordBatch.from_pydict(
        {
            "user_id": [1, 1, 2],
            "item_id": [10, 11, 10],
            "category": ["shoes", "bags", "shoes"],
            "brand": ["x", None, "x"],
            "style": ["a", "a", "a"],
            "size": ["m", "one_size", None],
            "item_price": [10.0, 20.0, None],
            "declared_size": ["m", "m", None],
            "user_log_price_mean": [2.0, 2.0, None],
            "seen_before": [3, None, None],
            "clicked_before": [1, None, None],
            "category_affinity": pa.array(
                [[("shoes", 0.6), ("bags", 0.4)], [("shoes", 0.6), ("bags", 0.4)], None], affinity
            ),
            "brand_affinity": pa.array([[("x", 1.0)], [("x", 1.0)], None], affinity),
            "style_affinity": pa.array([None, None, None], affinity),
            "size_affinity": pa.array([[("m", 1.0)], [("m", 1.0)], []], affinity),
        }
    )
    (out,) = list(cross_feature_batches(iter([batch])))
    assert out.schema.names == ["user_id", "item_id", "category", "brand", "style", "size",
                                "item_price", "declared_size", "user_log_price_mean",
                                *CROSS_FEATURES]  # fmt: skip
    rows = out.to_pydict()
    assert rows["aff_category"] == [np.float32(0.6), np.float32(0.4), 0.0]
    assert rows["aff_brand"] == [1.0, 0.0, 0.0]
    assert rows["aff_style"] == [0.0, 0.0, 0.0]
    assert rows["aff_size"] == [1.0, 0.0, 0.0]
    assert rows["size_fit"][:2] == [1.0, 1.0]
    assert math.isnan(rows["size_fit"][2])
    assert rows["seen_before"] == [3, 0, 0]  # counts stay integers in the lake's tables
    assert rows["clicked_before"] == [1, 0, 0]
    assert out.schema.field("seen_before").type == pa.int64()
    assert math.isnan(rows["price_distance"][2])


def joined_rows(rng: np.random.Generator, rows: int) -> pa.RecordBatch:
    """Joined rows of a few users over two days, grouped by (as_of, user) as the join leaves them.

    The same user has other maps on the other day, so a run must end where the day changes.
    """
    import datetime as dt

    affinity = pa.map_(pa.string(), pa.float64())
    values = ["a", "b", "c", None]
    keys = sorted(zip(rng.integers(0, 2, rows), rng.integers(0, 4, rows), strict=True))
    maps = {
        (day, user): [(v, float(rng.random())) for v in rng.choice(["a", "b", "c"], 2, False)]
        for day in range(2)
        for user in range(4)
    }
    columns: dict[str, object] = {
        "as_of": [dt.date(2026, 1, 1 + day) for day, _ in keys],
        "user_id": [int(user) for _, user in keys],
        "item_id": list(range(rows)),
        "item_price": rng.choice([0.0, 5.0, 20.0], rows).tolist(),
        "declared_size": [values[(day + user) % 4] for day, user in keys],
        "user_log_price_mean": [float(day + user) for day, user in keys],
        "seen_before": rng.integers(0, 3, rows).tolist(),
        "clicked_before": rng.integers(0, 2, rows).tolist(),
    }
    for name in ("category", "brand", "style", "size"):
        columns[name] = rng.choice(values, rows).tolist()
        columns[f"{name}_affinity"] = pa.array([maps[day, user] for day, user in keys], affinity)
    return pa.RecordBatch.from_pydict(columns)


def test_the_user_side_is_read_once_a_run_and_equals_reading_it_every_row() -> None:
    from rankflow.features.on_demand import cross_feature_columns, user_runs

    batch = joined_rows(np.random.default_rng(3), 60)
    starts, _ = user_runs(batch)
    assert 1 < len(starts) <= 8  # at most 2 days x 4 users, far fewer than the rows
    once_a_run = cross_feature_columns(batch)
    every_row = [cross_feature_columns(batch.slice(i, 1)) for i in range(batch.num_rows)]
    for name in CROSS_FEATURES:
        expected = np.concatenate([row[name] for row in every_row])
        np.testing.assert_array_equal(once_a_run[name], expected, err_msg=name)
    # rows out of order are each their own run, and still right
    shuffled = batch.take(pa.array(np.random.default_rng(4).permutation(batch.num_rows)))
    assert len(user_runs(shuffled)[0]) > len(starts)
    order = np.argsort(shuffled.column("item_id").to_numpy())
    for name, values in cross_feature_columns(shuffled).items():
        np.testing.assert_array_equal(values[order], once_a_run[name], err_msg=name)

"""Simulated sales and the lists the repair reads: each item sells once, widely shown first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from rankflow.sim.sales import simulate_sales

START = datetime(2026, 10, 31, tzinfo=UTC)


def test_each_item_sells_at_most_once_inside_its_hour() -> None:
    items = np.arange(1, 501)
    drops = simulate_sales(items, np.ones(500), START, hours=6, per_hour=50, seed=1)
    sold = [item for _, sales in drops for item, _ in sales]
    assert len(sold) == 300
    assert len(set(sold)) == 300
    for hour, sales in drops:
        assert all(hour <= ts < hour + timedelta(hours=1) for _, ts in sales)


def test_widely_shown_items_sell_more_often() -> None:
    items = np.arange(1, 1001)
    weights = np.where(items <= 100, 50.0, 1.0)
    drops = simulate_sales(items, weights, START, hours=1, per_hour=100, seed=3)
    sold = np.array([item for _, sales in drops for item, _ in sales])
    assert (sold <= 100).mean() > 0.5  # 10% of the items, 5x their share of the sales


def test_a_sold_out_catalogue_stops_selling() -> None:
    drops = simulate_sales(np.arange(1, 4), np.ones(3), START, hours=3, per_hour=2, seed=0)
    assert [len(sales) for _, sales in drops] == [2, 1, 0]


def test_published_lists_are_read_alike_from_encoded_and_list_columns() -> None:
    import pyarrow as pa

    from rankflow.publish.repair import list_arrays
    from rankflow.store.encoding import encode_list_array

    lists = pa.array([[1, 2, 3], [4], [5, 6]], pa.list_(pa.int64()))
    users = pa.array([10, 11, 12])
    encoded = pa.RecordBatch.from_arrays([users, encode_list_array(lists)], ["user_id", "v"])
    plain = pa.RecordBatch.from_arrays([users, lists], ["user_id", "item_ids"])
    for batch in (encoded.slice(1, 2), plain.slice(1, 2)):
        got_users, offsets, flat = list_arrays(batch)
        assert got_users.tolist() == [11, 12]
        assert offsets.tolist() == [0, 1, 3]
        assert flat.tolist() == [4, 5, 6]


def test_items_many_lists_show_weigh_more_but_every_item_can_sell() -> None:
    from rankflow.sim.sales import sale_weights

    catalogue = np.array([1, 2, 3, 4])
    weights = sale_weights(catalogue, shown=np.array([2, 4, 9]), shown_counts=np.array([9, 1, 5]))
    assert weights.tolist() == pytest.approx([1.0, 1 + np.log(10), 1.0, 1 + np.log(2)])

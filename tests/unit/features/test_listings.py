"""A live listing's item features, by hand: what the training set gives a listing it lacks."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from rankflow.features.listings import (
    ListingContext,
    context_of_items,
    listing_columns,
    listing_vectors,
)
from rankflow.features.registry import ITEM_FEATURES, WINDOWS
from rankflow.quality.live import Listing

DAY_END = 1_796_688_000_000  # 2026-12-08 00:00 UTC
CONTEXT = ListingContext(DAY_END, 20.0, {1: 0.1, 7: 0.05, 28: 0.04}, {"dresses": 25.0})


def listing_values(one: Listing, context: ListingContext) -> dict[str, float]:
    """One listing's features as plain floats."""
    return {name: float(values[0]) for name, values in listing_columns([one], context).items()}


def listing(**changes: object) -> Listing:
    fields = {"item_id": 7, "seller_id": 3, "listed_ts_ms": DAY_END + 3_600_000,
              "category": "dresses", "brand": "zara", "condition": "good", "price": 30.0,
              "style": None, "size": "M", "seller_rating": 4.5} | changes  # fmt: skip
    return Listing(**fields)  # type: ignore[arg-type]


def test_nothing_counted_the_catalogues_rates_and_the_category_median() -> None:
    values = listing_values(listing(), CONTEXT)
    for w in WINDOWS:
        assert values[f"item_clicks_{w}d"] == values[f"item_impressions_{w}d"] == 0.0
        assert values[f"item_ctr_{w}d"] == (0.0 + CONTEXT.rates[w] * 20.0) / (0.0 + 20.0)
    assert values["item_ctr_7d"] == 0.05
    assert values["item_age_days"] == 0.0  # listed after the feature day: never negative
    assert values["item_price"] == 30.0
    assert values["item_price_rel_category"] == 30.0 / 25.0
    assert values["item_condition_rank"] == 2.0
    assert values["seller_rating"] == 4.5


def test_unknown_things_are_missing_not_zero() -> None:
    values = listing_values(
        listing(category="coats", condition="worn out", seller_rating=None), CONTEXT
    )
    assert math.isnan(values["item_price_rel_category"])  # no median for the category
    assert math.isnan(values["item_condition_rank"])
    assert math.isnan(values["seller_rating"])


def test_a_listing_older_than_the_day_end_has_its_age() -> None:
    values = listing_values(listing(listed_ts_ms=DAY_END - 43_200_000), CONTEXT)
    assert values["item_age_days"] == 0.5


def test_vectors_follow_the_requested_order_as_float32() -> None:
    names = list(reversed(ITEM_FEATURES))
    vectors = listing_vectors([listing(), listing(price=50.0)], CONTEXT, names)
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, len(names))
    assert vectors[1, names.index("item_price_rel_category")] == np.float32(2.0)


def test_the_context_reads_the_rates_and_medians_back_from_the_item_rows() -> None:
    rows = {name: [0.0, 0.0, 0.0] for name in ITEM_FEATURES}
    rows["item_clicks_7d"], rows["item_impressions_7d"] = [1.0, 2.0, 0.0], [10.0, 30.0, 0.0]
    rows["item_price"] = [10.0, 20.0, 35.0]
    rows["item_price_rel_category"] = [0.5, 1.0, 1.0]
    table = pa.table({**rows, "category": ["a", "a", "b"]})
    context = context_of_items(table, DAY_END, 20.0)
    assert context.rates[7] == 3.0 / 40.0
    assert context.rates[1] == 0.0  # nothing shown: 0 / max(0, 1)
    assert context.medians == {"a": 20.0, "b": 35.0}
    assert ListingContext.from_json(context.to_json()) == context

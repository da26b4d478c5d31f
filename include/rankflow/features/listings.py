"""Live listings' item features: what the training set gives a listing its feature day lacks.

The training set joins each impression to item features as of the day before, with a listing
lag of one day (:func:`rankflow.features.batch.item_features`): a listing created on the
impression day has its attributes, nothing counted, the catalogue's click-through rate per
window, age 0 and its price over its category's median price of the feature day. The ranking
service meets such listings live, before any nightly run knows them, and computes the same
vector from the listing record and the feature version's :class:`ListingContext` (the rates and
medians, read back exactly from the day's item rows). ``tests/spark/transforms/
test_listing_features.py`` proves the two equal; the skew check rebuilds served listings with
:func:`rankflow.features.batch.listing_features`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from rankflow.features.registry import CONDITION_RANK, COUNTED_TYPES, WINDOWS
from rankflow.quality.live import Listing

if TYPE_CHECKING:
    import pyarrow as pa

DAY_SECONDS = 86_400


@dataclass(frozen=True)
class ListingContext:
    """What a feature day knows of its catalogue that a new listing's features need."""

    day_end_ms: int  # the end of the feature day (00:00 UTC of the next day)
    prior_weight: float  # pseudo-impressions of the smoothed click-through rate
    rates: dict[int, float]  # window (days) -> the catalogue's click-through rate
    medians: dict[str, float]  # category -> median price

    def to_json(self) -> str:
        """The context as JSON (the snapshot file's metadata)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ListingContext:
        """The context a snapshot recorded."""
        found = json.loads(text)
        return cls(
            int(found["day_end_ms"]),
            float(found["prior_weight"]),
            {int(w): float(r) for w, r in found["rates"].items()},
            {str(c): float(m) for c, m in found["medians"].items()},
        )


def context_of_items(items: pa.Table, day_end_ms: int, prior_weight: float) -> ListingContext:
    """The context of a feature day's item rows (doubles, before the snapshot's float32).

    The rates are the sums the features job divided; a category's median is the price of its
    items whose relative price is exactly 1 (``batch.context_of_features``, in Spark).
    """
    import pyarrow.compute as pc

    rates = {}
    for w in WINDOWS:
        clicks = pc.sum(items.column(f"item_clicks_{w}d")).as_py() or 0
        impressions = pc.sum(items.column(f"item_impressions_{w}d")).as_py() or 0
        rates[w] = float(clicks) / float(max(impressions, 1))
    at_median = items.filter(pc.equal(items.column("item_price_rel_category"), 1.0))
    grouped = at_median.group_by("category").aggregate([("item_price", "min")])
    medians = {
        str(c): float(m)
        for c, m in zip(
            grouped.column("category").to_pylist(),
            grouped.column("item_price_min").to_pylist(),
            strict=True,
        )
        if c is not None and m is not None
    }
    return ListingContext(day_end_ms, prior_weight, rates, medians)


def listing_columns(listings: Sequence[Listing], context: ListingContext) -> dict[str, np.ndarray]:
    """Live listings' item features, computed as Spark's ``feature_rows`` does (float64)."""
    n = len(listings)
    price = np.array([listing.price for listing in listings], np.float64)
    listed_seconds = np.array([listing.listed_ts_ms for listing in listings], np.float64) / 1000.0
    median = np.array(
        [context.medians.get(listing.category, math.nan) for listing in listings], np.float64
    )
    columns = {f"item_{name}_{w}d": np.zeros(n) for w in WINDOWS for name in COUNTED_TYPES}
    for w in WINDOWS:
        # (clicks + prior * weight) / (impressions + weight), with nothing counted
        rate = (0.0 + context.rates[w] * context.prior_weight) / (0.0 + context.prior_weight)
        columns[f"item_ctr_{w}d"] = np.full(n, rate)
    age = (context.day_end_ms / 1000.0 - listed_seconds) / DAY_SECONDS
    columns["item_age_days"] = np.maximum(0.0, age)
    columns["item_price"] = price
    with np.errstate(divide="ignore", invalid="ignore"):
        columns["item_price_rel_category"] = np.where(median != 0, price / median, math.nan)
    columns["item_condition_rank"] = np.array(
        [CONDITION_RANK.get(listing.condition, math.nan) for listing in listings], np.float64
    )
    columns["seller_rating"] = np.array(
        [math.nan if (r := listing.seller_rating) is None else r for listing in listings],
        np.float64,
    )
    return columns


def listing_vectors(
    listings: Sequence[Listing], context: ListingContext, feature_names: Sequence[str]
) -> np.ndarray:
    """The float32 item vectors of live listings, in ``feature_names`` order (NaN: unknown)."""
    columns = listing_columns(listings, context)
    vectors = np.full((len(listings), len(feature_names)), np.nan, np.float32)
    for j, name in enumerate(feature_names):
        if name in columns:
            vectors[:, j] = columns[name]
    return vectors

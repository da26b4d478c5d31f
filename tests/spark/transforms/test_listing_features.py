"""A listing the feature day lacks: the service's vector equals the training set's row.

The training set joins the tiny day's impressions to item features as of the day before with a
listing lag of one day (``item_features(listing_lag_days=1)``): the listings created on the
tiny day get their attributes and nothing counted. The ranking service computes the same
vector live from the listing record and the day before's snapshot context
(``rankflow.features.listings``); the skew check rebuilds it in Spark
(``batch.listing_features`` over ``batch.context_of_features``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from rankflow.config import Settings
from rankflow.features.registry import ITEM_FEATURES
from tiny_lake import TINY_DAY

pytestmark = pytest.mark.spark

AS_OF = TINY_DAY - timedelta(days=1)


@pytest.fixture(scope="module")
def rows(spark: Any, lake: Settings) -> Iterator[dict[str, Any]]:
    """The day before's item rows with and without the listing lag, and the tiny day's listings."""
    from pyspark.sql import functions as F

    from rankflow.features.batch import calendar, item_features
    from rankflow.lake.tables import bronze

    events, items, _ = bronze(spark, lake)
    config = {**lake.pipeline["features"], "gains": lake.pipeline["labels"]["gains"]}
    days = calendar(spark, [AS_OF])
    training = item_features(items, events, days, config, listing_lag_days=1).cache()
    nightly = item_features(items, events, days, config).cache()
    listings = items.where(F.col("ds") == F.lit(TINY_DAY)).cache()
    assert listings.count() > 0, "the tiny day lists nothing new"
    yield {"training": training, "nightly": nightly, "listings": listings, "config": config}
    for frame in (training, nightly, listings):
        frame.unpersist()


def day_end_ms(day: date) -> int:
    """00:00 UTC of the day after ``day``, in ms."""
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    return int(end.timestamp() * 1000)


def as_listing(row: Any) -> Any:
    """A bronze item row as the event log carries a new listing."""
    from rankflow.quality.live import Listing

    return Listing(
        item_id=int(row["item_id"]),
        seller_id=int(row["seller_id"]),
        listed_ts_ms=int(row["listed_ms"]),
        category=row["category"],
        brand=row["brand"],
        condition=row["condition"],
        price=float(row["price"]),
        style=row["style"],
        size=row["size"],
        seller_rating=None if row["seller_rating"] is None else float(row["seller_rating"]),
    )


def test_a_new_listing_gets_online_the_vector_training_gives_it(rows: dict[str, Any]) -> None:
    from pyspark.sql import functions as F

    from rankflow.features.listings import context_of_items, listing_vectors

    listings = (
        rows["listings"]
        .select("*", F.unix_millis("listed_ts").alias("listed_ms"))
        .orderBy("item_id")
        .collect()
    )
    wanted = [int(r["item_id"]) for r in listings]
    trained = rows["training"].where(F.col("item_id").isin(wanted)).orderBy("item_id").toPandas()
    assert trained["item_id"].tolist() == wanted
    context = context_of_items(
        rows["nightly"].toArrow(), day_end_ms(AS_OF), float(rows["config"]["ctr_prior_weight"])
    )
    online = listing_vectors([as_listing(r) for r in listings], context, ITEM_FEATURES)
    offline = trained[ITEM_FEATURES].to_numpy(np.float64).astype(np.float32)
    for j, name in enumerate(ITEM_FEATURES):
        np.testing.assert_array_equal(online[:, j], offline[:, j], err_msg=name)
    # not vacuous: prices relative to a median, rates above zero, a rank per condition
    assert np.isfinite(online[:, ITEM_FEATURES.index("item_price_rel_category")]).all()
    assert (online[:, ITEM_FEATURES.index("item_ctr_7d")] > 0).all()
    assert (online[:, ITEM_FEATURES.index("item_age_days")] == 0).all()


def test_the_skew_checks_rebuild_of_a_listing_is_the_training_row(
    rows: dict[str, Any], spark: Any
) -> None:
    from pyspark.sql import functions as F

    from rankflow.features.batch import context_of_features, listing_features

    rates, medians = context_of_features(rows["nightly"])
    listed = rows["listings"].select("*", F.lit(AS_OF).alias("as_of"))
    weight = float(rows["config"]["ctr_prior_weight"])
    rebuilt = listing_features(listed, rates, medians, weight).orderBy("item_id").toPandas()
    wanted = rebuilt["item_id"].tolist()
    trained = rows["training"].where(F.col("item_id").isin(wanted)).orderBy("item_id").toPandas()
    for name in [*ITEM_FEATURES, "is_sold", "popularity"]:
        np.testing.assert_array_equal(
            rebuilt[name].to_numpy(np.float64), trained[name].to_numpy(np.float64), err_msg=name
        )


def test_items_listed_by_the_feature_day_train_on_the_features_they_are_served(
    rows: dict[str, Any],
) -> None:
    """The listing lag adds rows, and changes none: every item's row equals the nightly one."""
    nightly = rows["nightly"].orderBy("item_id").toPandas()
    trained = (
        rows["training"].join(rows["nightly"].select("item_id"), "item_id", "left_semi")
        .orderBy("item_id")
        .toPandas()
    )  # fmt: skip
    assert trained["item_id"].tolist() == nightly["item_id"].tolist()
    for name in [*ITEM_FEATURES, "is_sold", "popularity"]:
        np.testing.assert_array_equal(
            trained[name].to_numpy(np.float64), nightly[name].to_numpy(np.float64), err_msg=name
        )

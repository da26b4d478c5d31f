"""The pandas and Spark faces of list health are one definition: the same figures on any lists."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rankflow.evaluation.lists import list_health, list_health_spark

pytestmark = pytest.mark.spark


def random_lists(seed: int, users: int, k: int) -> pd.DataFrame:
    """Ranked lists of ``k`` distinct items per user from a catalogue of 300 items, 40 sellers."""
    rng = np.random.default_rng(seed)
    catalogue = pd.DataFrame(
        {
            "item_id": np.arange(300),
            "category": rng.integers(0, 12, 300),
            "seller_id": rng.zipf(1.6, 300) % 40,  # a few sellers hold many items
            "price": rng.gamma(2.0, 20.0, 300).round(2),
        }
    )
    rows = [
        pd.DataFrame({"user_id": user, "item_id": rng.choice(300, k, replace=False)}).assign(
            rank=np.arange(1, k + 1)
        )
        for user in range(users)
    ]
    return pd.concat(rows).merge(catalogue, on="item_id")


@pytest.mark.parametrize(
    ("seed", "depth", "top_percent"), [(1, None, 10.0), (2, 5, 1.0), (3, 3, 25.0)]
)
def test_the_pandas_and_spark_faces_agree(spark, seed: int, depth: int | None, top_percent: float):
    entries = random_lists(seed, users=60, k=8)
    expected = list_health(entries, 300, top_percent, depth)
    got = list_health_spark(spark.createDataFrame(entries), 300, top_percent, depth)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert math.isclose(got[name], value, rel_tol=1e-12), (name, got[name], value)


def test_diversity_and_seller_share_count_only_the_top_of_each_list(spark) -> None:
    entries = random_lists(4, users=30, k=8)
    whole, top3 = list_health(entries, 300, 10.0), list_health(entries, 300, 10.0, depth=3)
    assert top3["catalog_coverage"] == whole["catalog_coverage"]  # every entry counts
    assert top3["distinct_categories"] < whole["distinct_categories"]
    assert top3["distinct_categories"] <= 3
    assert top3["distinct_sellers"] <= 3

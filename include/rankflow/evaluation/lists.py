"""Top-k list figures shared by the promotion gate and monitoring: health, overlap, exposure."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame


def top_lists(candidates: pd.DataFrame, scores: np.ndarray, k: int) -> pd.DataFrame:
    """Each user's top-k candidates by score (ties by item id), with ``rank`` from 1."""
    ranked = candidates.assign(score=scores).sort_values(
        ["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable"
    )
    top = ranked.groupby("user_id", sort=False).head(k).copy()
    top["rank"] = top.groupby("user_id", sort=False).cumcount() + 1
    return top.drop(columns="score").reset_index(drop=True)


def list_health(
    entries: pd.DataFrame, catalogue_size: int, top_seller_percent: float, depth: int | None = None
) -> dict[str, float]:
    """Coverage, diversity and seller concentration of ranked lists (pandas face).

    ``entries`` has one row per list entry: ``user_id``, ``item_id``, ``rank`` (from 1),
    ``category``, ``seller_id``, ``price``. Catalogue coverage and mean price count every entry;
    the per-user diversity and the top sellers' slot share count the entries at ``rank <= depth``
    (all when None). :func:`list_health_spark` is the same definition in Spark, tested to agree.
    """
    top = entries if depth is None else entries[entries["rank"] <= depth]
    per_user = top.groupby("user_id")
    slots = top["seller_id"].value_counts().to_numpy()
    shown = entries["item_id"].nunique()
    return {
        "users": float(entries["user_id"].nunique()),
        "catalog_coverage": shown / catalogue_size if catalogue_size else 0.0,
        "distinct_categories": float(per_user["category"].nunique().mean()),
        "distinct_sellers": float(per_user["seller_id"].nunique().mean()),
        "top_seller_share": top_slot_share(slots, top_seller_percent),
        "mean_price": float(entries["price"].mean()),
    }


def list_health_spark(
    entries: DataFrame, catalogue_size: int, top_seller_percent: float, depth: int | None = None
) -> dict[str, float]:
    """The figures of :func:`list_health` aggregated in Spark (only per-seller counts come back)."""
    from pyspark.sql import functions as F

    top = entries if depth is None else entries.where(F.col("rank") <= depth)
    totals = entries.agg(
        F.countDistinct("user_id").alias("users"),
        F.countDistinct("item_id").alias("shown"),
        F.avg("price").alias("mean_price"),
    ).first()
    diversity = (
        top.groupBy("user_id")
        .agg(
            F.countDistinct("category").alias("categories"),
            F.countDistinct("seller_id").alias("sellers"),
        )
        .agg(F.avg("categories"), F.avg("sellers"))
        .first()
    )
    slots = np.array(
        [row[0] for row in top.groupBy("seller_id").count().select("count").collect()],
        dtype=np.float64,
    )
    shown = int(totals["shown"]) if totals else 0
    return {
        "users": float(totals["users"]) if totals else 0.0,
        "catalog_coverage": shown / catalogue_size if catalogue_size else 0.0,
        "distinct_categories": finite_or_nan(diversity[0] if diversity else None),
        "distinct_sellers": finite_or_nan(diversity[1] if diversity else None),
        "top_seller_share": top_slot_share(slots, top_seller_percent),
        "mean_price": finite_or_nan(totals["mean_price"] if totals else None),
    }


def finite_or_nan(value: float | None) -> float:
    """A Spark aggregate as a float (NaN when there was nothing to aggregate)."""
    return math.nan if value is None else float(value)


def top_slot_share(slots: np.ndarray, top_percent: float) -> float:
    """The share of list slots held by the top ``top_percent``% of the sellers that have slots."""
    shown = np.sort(np.asarray(slots, dtype=np.float64)[np.asarray(slots) > 0])[::-1]
    if not len(shown):
        return 0.0
    top = max(1, math.ceil(len(shown) * top_percent / 100.0))
    return float(shown[:top].sum() / shown.sum())


def overlap_depths(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``X[u, d-1]`` = items shared by the top d of both lists of user u (lists of unique ids)."""
    n, k = a.shape
    equal = a[:, :, None] == b[:, None, :]
    users, i, j = np.nonzero(equal)
    counts = np.zeros((n, k), dtype=np.float64)
    np.add.at(counts, (users, np.maximum(i, j)), 1.0)
    result: np.ndarray = np.cumsum(counts, axis=1)
    return result


def rank_biased_overlap(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    """Extrapolated rank-biased overlap (Webber et al. 2010) of equal-length lists, per row."""
    k = a.shape[1]
    agreement = overlap_depths(a, b) / np.arange(1, k + 1)
    weights = p ** np.arange(1, k + 1)
    result: np.ndarray = agreement[:, -1] * p**k + (1.0 - p) / p * (agreement @ weights)
    return result


def padded_lists(top: pd.DataFrame, users: np.ndarray, k: int, pad: int) -> np.ndarray:
    """A (users, k) matrix of item ids by rank; short lists padded with ``pad``."""
    matrix = np.full((len(users), k), pad, dtype=np.int64)
    row = np.searchsorted(users, top["user_id"].to_numpy())
    matrix[row, top["rank"].to_numpy() - 1] = top["item_id"].to_numpy()
    return matrix


def mix_shift(before: pd.Series, after: pd.Series) -> float:
    """Total variation distance between two categorical distributions (0 same, 1 disjoint)."""
    p = before.value_counts(normalize=True)
    q = after.value_counts(normalize=True)
    joined = p.to_frame("p").join(q.to_frame("q"), how="outer").fillna(0.0)
    return float((joined["p"] - joined["q"]).abs().sum() / 2.0)


def price_buckets(prices: pd.Series, edges: np.ndarray) -> pd.Series:
    """Label each price with its bucket between ``edges`` (the champion's price quintiles)."""
    import pandas as pd

    return pd.Series(np.digitize(prices.to_numpy(), edges))


def list_overlap(
    champion: pd.DataFrame, challenger: pd.DataFrame, k: int, p: float
) -> dict[str, float]:
    """How much the challenger's lists differ from the champion's for the same users."""
    users = np.union1d(champion["user_id"].unique(), challenger["user_id"].unique())
    a = padded_lists(champion, users, k, pad=-1)
    b = padded_lists(challenger, users, k, pad=-2)
    shared = overlap_depths(a, b)[:, -1]
    sizes = (a >= 0).sum(axis=1) + (b >= 0).sum(axis=1)
    jaccard = np.divide(shared, sizes - shared, out=np.ones_like(shared), where=sizes > shared)
    edges = np.quantile(champion["price"], [0.2, 0.4, 0.6, 0.8])
    return {
        f"jaccard@{k}": float(jaccard.mean()),
        f"rbo@{k}": float(rank_biased_overlap(a, b, p).mean()),
        "category_mix_shift": mix_shift(champion["category"], challenger["category"]),
        "price_mix_shift": mix_shift(
            price_buckets(champion["price"], edges), price_buckets(challenger["price"], edges)
        ),
        "mean_price_change": float(challenger["price"].mean() / champion["price"].mean() - 1.0),
    }


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0: all equal, towards 1: one holds everything)."""
    sorted_values = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(sorted_values), sorted_values.sum()
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * np.sum(ranks * sorted_values) / (n * total)) - (n + 1) / n)

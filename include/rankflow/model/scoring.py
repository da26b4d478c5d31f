"""Batch scoring: the champion model over all candidates, top-K per user, fallback list."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from rankflow.features.registry import by_popularity

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xgboost as xgb
    from pyspark.sql import DataFrame

RANKED_SCHEMA = "user_id long, item_ids array<long>, scores array<float>, items_u32le binary"
_BOOSTERS: dict[str, xgb.Booster] = {}


def top_k_per_user(
    user_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray, k: int
) -> pd.DataFrame:
    """Return one row per user with its ``k`` best items by score (ties: smaller item id first).

    ``items_u32le`` holds each list already encoded as the Redis value, so publishing is a copy.
    """
    import numpy as np
    import pandas as pd

    from rankflow.store.encoding import encode_runs

    order = np.lexsort((item_ids, -scores, user_ids))
    users, items, ranked = user_ids[order], item_ids[order], scores[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    rank = np.arange(len(users)) - np.repeat(starts, ends - starts)
    keep = rank < k
    kept_users, kept_items, kept_scores = users[keep], items[keep], ranked[keep]
    bounds = np.flatnonzero(np.r_[True, kept_users[1:] != kept_users[:-1]])
    return pd.DataFrame(
        {
            "user_id": kept_users[bounds],
            "item_ids": np.split(kept_items, bounds[1:]),
            "scores": np.split(kept_scores.astype("float32"), bounds[1:]),
            "items_u32le": encode_runs(kept_items, bounds),
        }
    )


def cached_booster(model_key: str, raw: bytes) -> xgb.Booster:
    """Load the model once per Python worker process and reuse it for every batch."""
    from rankflow.model.fit import booster_from_bytes

    if model_key not in _BOOSTERS:
        _BOOSTERS.clear()
        _BOOSTERS[model_key] = booster_from_bytes(raw, nthread=1)
    return _BOOSTERS[model_key]


def make_scorer(
    model_raw: bytes, model_key: str, k: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Build the ``mapInPandas`` function: predict, then keep the top ``k`` per user.

    The model's bytes travel inside the function, which Spark ships to each executor once (a
    pickled function over 1 MB goes out as a broadcast), in local, cluster and Connect mode
    alike; each Python worker then parses the model once (``cached_booster``). Rows arrive
    sorted by user within the partition; a user's rows may straddle two Arrow batches, so the
    last user of each batch is carried over to the next one.
    """

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        booster = cached_booster(model_key, model_raw)
        carry: pd.DataFrame | None = None
        for batch in batches:
            if batch.empty:
                continue
            frame = batch if carry is None else pd.concat([carry, batch], ignore_index=True)
            last_user = frame["user_id"].iat[-1]
            done = frame["user_id"].to_numpy() != last_user
            carry = frame[~done]
            ready = frame[done]
            if len(ready):
                yield rank_frame(booster, ready, k)
        if carry is not None and len(carry):
            yield rank_frame(booster, carry, k)

    return score


def rank_frame(booster: xgb.Booster, frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Score a frame of candidate rows and reduce it to top-``k`` lists."""
    from rankflow.model.fit import model_inputs

    scores = booster.inplace_predict(model_inputs(booster, frame))
    return top_k_per_user(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(), scores, k)


def score_candidates(
    scored_input: DataFrame,
    model_raw: bytes,
    model_key: str,
    k: int,
    *,
    placed_by_user: bool = False,
) -> DataFrame:
    """Apply the model to ``user_id, item_id, <features>`` rows; return top-``k`` per user.

    ``placed_by_user``: every row of a user is already in one partition (``scoring_input``
    places them), so the rows are only sorted; otherwise they are first shuffled by user. A
    user whose rows were spread would get several lists, which the ranked-lists gate refuses
    (``user_id`` unique).
    """
    from rankflow.lake.session import user_partitions

    if not placed_by_user:
        partitions = user_partitions(scored_input.sparkSession)
        scored_input = scored_input.repartition(partitions, "user_id")
    return scored_input.sortWithinPartitions("user_id").mapInPandas(
        make_scorer(model_raw, model_key, k), RANKED_SCHEMA
    )


def fallback_list(items: DataFrame, k: int) -> list[int]:
    """Return the ``k`` most popular available items: the list for users without history."""
    from pyspark.sql import functions as F

    rows = (
        items.where(~F.col("is_sold"))
        .orderBy(*by_popularity())
        .limit(k)
        .select("item_id")
        .collect()
    )
    return [int(row[0]) for row in rows]

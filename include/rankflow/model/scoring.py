"""Batch scoring: the champion model over all candidates, top-K per user, fallback list."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from rankflow.features.registry import by_popularity

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import xgboost as xgb
    from pyspark.sql import DataFrame

RANKED_SCHEMA = "user_id long, item_ids array<long>, scores array<float>, items_u32le binary"
CUT_AFTER_ROWS = 1 << 20  # scored rows held before they are cut down to each user's best k
_BOOSTERS: dict[str, xgb.Booster] = {}


def run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal consecutive values begins."""
    import numpy as np

    if not len(values):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]])


def best_positions(
    user_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray, k: int
) -> np.ndarray:
    """Positions of each user's ``k`` best rows, by user, best first (ties: smaller item id)."""
    import numpy as np

    order = np.lexsort((item_ids, -scores, user_ids))
    starts = run_starts(user_ids[order])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    best: np.ndarray = order[rank < k]
    return best


def ranked_batch(user_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray) -> pa.RecordBatch:
    """Rows sorted by user, best first, as one list a user (``RANKED_SCHEMA``).

    ``items_u32le`` holds each list already encoded as the Redis value, so publishing is a copy.
    """
    import numpy as np
    import pyarrow as pa

    from rankflow.store.encoding import encode_runs

    starts = run_starts(user_ids)
    offsets = pa.array(np.r_[starts, len(user_ids)].astype(np.int32))
    columns = [
        pa.array(user_ids[starts], pa.int64()),
        pa.ListArray.from_arrays(offsets, pa.array(item_ids, pa.int64())),
        pa.ListArray.from_arrays(offsets, pa.array(scores, pa.float32())),
        encode_runs(item_ids, starts),
    ]
    return pa.RecordBatch.from_arrays(columns, ["user_id", "item_ids", "scores", "items_u32le"])


def top_k_per_user(
    user_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray, k: int
) -> pa.RecordBatch:
    """Return one list per user of its ``k`` best items by score (ties: smaller item id first)."""
    import numpy as np

    keep = best_positions(user_ids, item_ids, scores, k)
    return ranked_batch(user_ids[keep], item_ids[keep], np.asarray(scores[keep], np.float32))


class BestPerUser:
    """Each user's ``k`` best (item, score) pairs among the rows seen so far.

    Rows usually arrive grouped by user (the join with the user features sorts them), so each
    batch is cut to its users' best ``k`` on its own (a sort of one batch), and the last user
    of a batch is held back until the next one shows whether it goes on. Rows in any other
    order are still right: once a user turns up in two cut batches, the kept rows are merged
    and cut again whenever more wait than are kept (at least ``CUT_AFTER_ROWS``). Memory stays
    near users x ``k``; the best ``k`` of a union are the best ``k`` of its parts' best ``k``.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.carry: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.seen: set[int] = set()
        self.mixed = False  # some user is in two parts: the parts need a merge
        self.kept = 0
        self.waiting = 0

    def add(self, user_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray) -> None:
        """Take a batch of scored rows."""
        import numpy as np

        rows = [user_ids, item_ids, scores]
        if self.carry is not None:
            rows = [np.concatenate(pair) for pair in zip(self.carry, rows, strict=True)]
        last = rows[0] == rows[0][-1]
        self.carry = self._best(*(column[last] for column in rows))
        if not last.all():
            self._keep(*(column[~last] for column in rows))

    def ranked(self) -> pa.RecordBatch:
        """The lists: one row per user seen (``RANKED_SCHEMA``)."""
        import numpy as np

        if self.carry is not None:
            self._keep(*self.carry)
            self.carry = None
        if self.mixed and len(self.parts) > 1:
            self._cut()
        if not self.parts:
            empty = np.zeros(0, dtype=np.int64)
            return ranked_batch(empty, empty, np.zeros(0, dtype=np.float32))
        users, items, scores = (np.concatenate(c) for c in zip(*self.parts, strict=True))
        return ranked_batch(users, items, scores)

    def _best(
        self, users: np.ndarray, items: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows cut to each user's best ``k``, by user, best first."""
        keep = best_positions(users, items, scores, self.k)
        return users[keep], items[keep], scores[keep]

    def _keep(self, users: np.ndarray, items: np.ndarray, scores: np.ndarray) -> None:
        """Cut rows to their users' best ``k`` and keep them as a part."""
        part = self._best(users, items, scores)
        if not self.mixed:
            present = part[0][run_starts(part[0])].tolist()
            self.mixed = not self.seen.isdisjoint(present)
            self.seen.update(present)
        self.parts.append(part)
        self.waiting += len(part[0])
        if self.mixed and self.waiting >= max(CUT_AFTER_ROWS, self.kept):
            self._cut()

    def _cut(self) -> None:
        """Merge the parts into one, each user's best ``k`` rows sorted by user and rank."""
        import numpy as np

        merged = self._best(*(np.concatenate(c) for c in zip(*self.parts, strict=True)))
        self.parts = [merged]
        self.kept, self.waiting = len(merged[0]), 0


def cached_booster(model_key: str, raw: bytes) -> xgb.Booster:
    """Load the model once per Python worker process and reuse it for every batch."""
    from rankflow.model.fit import booster_from_bytes

    if model_key not in _BOOSTERS:
        _BOOSTERS.clear()
        _BOOSTERS[model_key] = booster_from_bytes(raw, nthread=1)
    return _BOOSTERS[model_key]


def make_scorer(
    model_raw: bytes, model_key: str, k: int, *, cross_features: bool = False
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Build the ``mapInArrow`` function: features, predict, then keep the top ``k`` per user.

    The model's bytes travel inside the function, which Spark ships to each executor once (a
    pickled function over 1 MB goes out as a broadcast), in local, cluster and Connect mode
    alike; each Python worker then parses the model once (``cached_booster``). Every row of a
    user is in the partition; the rows need no order (:class:`BestPerUser`). With
    ``cross_features`` the rows are joined rows still holding the affinity maps, and the user x
    item features are computed here (``cross_feature_columns``), in the same pass as the model.
    """

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np

        from rankflow.features.on_demand import cross_feature_columns
        from rankflow.features.registry import STREAM_FEATURES
        from rankflow.features.stream import quiet_values
        from rankflow.model.fit import arrow_model_inputs

        booster = cached_booster(model_key, model_raw)
        quiet = bool(set(booster.feature_names or ()) & set(STREAM_FEATURES))
        best = BestPerUser(k)
        for batch in batches:
            if not batch.num_rows:
                continue
            computed = cross_feature_columns(batch) if cross_features else {}
            if quiet:  # a nightly list is read from the day's start: nothing happened yet
                computed = {**quiet_values(batch.num_rows), **computed}
            scores = booster.inplace_predict(arrow_model_inputs(booster, batch, computed))
            users = np.asarray(batch.column("user_id").to_numpy(), dtype=np.int64)
            items = np.asarray(batch.column("item_id").to_numpy(), dtype=np.int64)
            best.add(users, items, np.asarray(scores, dtype=np.float32))
        ranked = best.ranked()
        if ranked.num_rows:
            yield ranked

    return score


def score_candidates(
    scored_input: DataFrame,
    model_raw: bytes,
    model_key: str,
    k: int,
    *,
    placed_by_user: bool = False,
    cross_features: bool = False,
) -> DataFrame:
    """Apply the model to ``user_id, item_id, <features>`` rows; return top-``k`` per user.

    ``placed_by_user``: every row of a user is already in one partition (``scoring_input``
    places them); otherwise they are first shuffled by user. A user whose rows were spread
    would get several lists, which the ranked-lists gate refuses (``user_id`` unique).
    ``cross_features``: the rows are joined rows with the affinity maps
    (``join_features_by_user``); the user x item features are computed in the scorer.
    """
    from rankflow.lake.session import user_partitions

    if not placed_by_user:
        partitions = user_partitions(scored_input.sparkSession)
        scored_input = scored_input.repartition(partitions, "user_id")
    scorer = make_scorer(model_raw, model_key, k, cross_features=cross_features)
    return scored_input.mapInArrow(scorer, RANKED_SCHEMA)


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

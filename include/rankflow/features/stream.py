"""Stream features: what a user did in the last half hour, and what each item got today so far.

Each is defined as of a request (or impression) time ``t`` minus a declared lag: only events
with ``ts < cutoff(t)`` count, where ``cutoff(t)`` is ``t`` floored to the second minus
``lag_seconds``. The updater's state keeps event times (a user's recent events) or the last
seconds apart (an item's day counters), so the online value leaves out exactly the events the
offline backfill leaves out, however fast the updater is.

- ``sess_pos_category`` / ``sess_pos_brand``: the user's positive events (click, like, save,
  add-to-bag, purchase) in ``[cutoff - window, cutoff)`` on items of the candidate's category /
  brand;
- ``sess_seen``: times the candidate was shown to the user in that window;
- ``sess_secs_since_pos``: seconds from the user's last positive event in the window to the
  cutoff (NaN: none);
- ``today_impressions`` / ``today_clicks`` / ``today_saves``: the item's events before the
  cutoff on the UTC day of the last millisecond counted (``cutoff - 1``; likes count as saves,
  as in the batch features; ``rankflow.store.fresh.day_as_of``).

Two implementations, proven equal by ``tests/spark/transforms/test_stream_equivalence.py``: the
updater's state in Redis reduced by :func:`session_features` and :func:`today_features` (what the
ranking service reads), and :func:`backfill`, Spark window functions over bronze events (what
the training set gets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from rankflow.quality.raw import EVENT_TYPES

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SESSION_FEATURES = ("sess_pos_category", "sess_pos_brand", "sess_seen", "sess_secs_since_pos")
TODAY_FEATURES = ("today_impressions", "today_clicks", "today_saves")
POSITIVE_CODES = np.array(
    [EVENT_TYPES.index(t) for t in ("click", "like", "save", "add_to_bag", "purchase")], np.uint8
)
IMPRESSION_CODE = EVENT_TYPES.index("impression")


def cutoff_ms(request_ms: int, lag_seconds: int) -> int:
    """The first millisecond a feature as of ``request_ms`` leaves out (whole seconds)."""
    return (request_ms // 1000 - lag_seconds) * 1000


def session_features(
    ts_ms: np.ndarray,
    item_ids: np.ndarray,
    event_types: np.ndarray,
    cutoff: int,
    window_ms: int,
    candidates: np.ndarray,
    candidate_category: np.ndarray,
    candidate_brand: np.ndarray,
    attributes: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> dict[str, np.ndarray]:
    """The session features of one user's candidates from the user's recent events.

    ``attributes`` maps item ids to their category and brand codes (-1: unknown, never equal to
    a candidate's); the candidates' own codes come in ``candidate_category``/``candidate_brand``.
    """
    inside = (ts_ms >= cutoff - window_ms) & (ts_ms < cutoff)
    positive = inside & np.isin(event_types, POSITIVE_CODES)
    shown = inside & (event_types == IMPRESSION_CODE)
    n = len(candidates)
    out: dict[str, np.ndarray] = {}
    if positive.any():
        category, brand = attributes(item_ids[positive])
        out["sess_pos_category"] = _matches(candidate_category, category[category >= 0])
        out["sess_pos_brand"] = _matches(candidate_brand, brand[brand >= 0])
        since = (cutoff - int(ts_ms[positive].max())) / 1000.0
        out["sess_secs_since_pos"] = np.full(n, since, np.float32)
    else:
        out["sess_pos_category"] = np.zeros(n, np.float32)
        out["sess_pos_brand"] = np.zeros(n, np.float32)
        out["sess_secs_since_pos"] = np.full(n, np.nan, np.float32)
    out["sess_seen"] = _matches(candidates, item_ids[shown])
    return {name: out[name] for name in SESSION_FEATURES}


def _matches(values: np.ndarray, events: np.ndarray) -> np.ndarray:
    """How many of ``events`` equal each of ``values`` (float32; -1 values match nothing)."""
    if len(events) == 0:
        return np.zeros(len(values), np.float32)
    keys, counts = np.unique(events, return_counts=True)
    at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    found = (keys[at] == values) & (values >= 0)
    return np.where(found, counts[at], 0).astype(np.float32)


def today_features(counts: list[tuple[int, int, int] | None]) -> dict[str, np.ndarray]:
    """The today-so-far features of candidates from their counters as of the cutoff.

    ``None`` (counters that cannot say exactly what was before the cutoff) is NaN: missing,
    never a wrong number.
    """
    values = np.array(
        [c if c is not None else (np.nan, np.nan, np.nan) for c in counts], np.float32
    ).reshape(-1, 3)
    return {name: values[:, j] for j, name in enumerate(TODAY_FEATURES)}


def quiet_values(n: int) -> dict[str, np.ndarray]:
    """The stream features of ``n`` candidates when nothing happened lately (float32).

    No positive event and no impression in the user's window, no event on the item today: what
    a user opening the app at midnight gets. The nightly lists are scored with these values
    (they are read from the start of the day, before the user's first event of it).
    """
    values = {name: np.zeros(n, np.float32) for name in (*SESSION_FEATURES, *TODAY_FEATURES)}
    values["sess_secs_since_pos"] = np.full(n, np.nan, np.float32)
    return values


# --------------------------------------------------------------------------- offline (Spark)


def backfill(
    events: DataFrame,
    attributes: DataFrame,
    queries: DataFrame,
    *,
    lag_seconds: int,
    window_ms: int,
) -> DataFrame:
    """The stream features of every query row, rebuilt from logged events (point in time).

    ``events``: ``event_type, ts, user_id, item_id`` (bronze: one row per event id and day);
    ``attributes``: ``item_id, category, brand``; ``queries``: any columns with ``user_id,
    item_id, request_ms``. Each feature is a window function over the events and the queries
    unioned by key and ordered by time, the query standing at its cutoff with weight 0: the
    range ``[cutoff - window, cutoff - 1]`` ms is exactly "in the window, before the cutoff".
    Returns the queries with ``SESSION_FEATURES`` and ``TODAY_FEATURES`` (float, NaN missing).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    day_ms = 86_400_000
    positives = [EVENT_TYPES[int(c)] for c in POSITIVE_CODES]
    known = attributes.select("item_id", "category", "brand").dropDuplicates(["item_id"])
    logged = events.select(
        "user_id", "item_id", "event_type", F.unix_millis(F.col("ts")).alias("t")
    ).join(known, "item_id", "left")
    # each query gets an id once (checkpointed: every branch below must see the same ids)
    asked = (
        queries.withColumn("_q", F.monotonically_increasing_id())
        .withColumn("_cutoff", (F.floor(F.col("request_ms") / 1000) - lag_seconds) * 1000)
        .join(
            known.select(
                "item_id", F.col("category").alias("_category"), F.col("brand").alias("_brand")
            ),
            "item_id",
            "left",
        )
        .localCheckpoint()
    )

    def as_of(
        keys: list[str],
        happened: DataFrame,
        wanted: DataFrame,
        values: dict[str, Column],
        frame_start: int | None,
        how: str = "sum",
    ) -> DataFrame:
        """``_q`` and each value aggregated over the events of its key before its cutoff."""
        rows = happened.select(*keys, "t", *[v.alias(n) for n, v in values.items()],
                               F.lit(None).cast("long").alias("_q"))  # fmt: skip
        marks = wanted.select(*keys, F.col("_cutoff").alias("t"),
                              *[F.lit(None).cast("double").alias(n) for n in values],
                              "_q")  # fmt: skip
        start = Window.unboundedPreceding if frame_start is None else -frame_start
        window = Window.partitionBy(*keys).orderBy("t").rangeBetween(start, -1)
        aggregate = F.sum if how == "sum" else F.max
        return (
            rows.unionByName(marks)
            .select("_q", *[aggregate(n).over(window).alias(n) for n in values])
            .where(F.col("_q").isNotNull())
        )

    positive = logged.where(F.col("event_type").isin(*positives))
    one = F.lit(1.0)
    # what the window functions need of a query (the query's own columns may share names)
    keys = asked.select("_q", "user_id", "item_id", "_cutoff", "_category", "_brand")
    by_category = as_of(
        ["user_id", "category"],
        positive.where(F.col("category").isNotNull()),
        keys.where(F.col("_category").isNotNull()).withColumnRenamed("_category", "category"),
        {"sess_pos_category": one},
        window_ms,
    )
    by_brand = as_of(
        ["user_id", "brand"],
        positive.where(F.col("brand").isNotNull()),
        keys.where(F.col("_brand").isNotNull()).withColumnRenamed("_brand", "brand"),
        {"sess_pos_brand": one},
        window_ms,
    )
    seen = as_of(
        ["user_id", "item_id"],
        logged.where(F.col("event_type") == "impression"),
        keys,
        {"sess_seen": one},
        window_ms,
    )
    last_positive = as_of(
        ["user_id"], positive, keys, {"_last": F.col("t").cast("double")}, window_ms, "max"
    )
    counted = logged.where(F.col("event_type").isin("impression", "click", "like", "save"))
    today = as_of(
        ["item_id", "_day"],
        counted.withColumn("_day", F.floor(F.col("t") / day_ms)),
        keys.withColumn("_day", F.floor((F.col("_cutoff") - 1) / day_ms)),
        {
            "today_impressions": (F.col("event_type") == "impression").cast("double"),
            "today_clicks": (F.col("event_type") == "click").cast("double"),
            "today_saves": F.col("event_type").isin("like", "save").cast("double"),
        },
        None,
    )
    joined = asked
    for part in (by_category, by_brand, seen, last_positive, today):
        joined = joined.join(part, "_q", "left")
    counts = ["sess_pos_category", "sess_pos_brand", "sess_seen", *TODAY_FEATURES]
    since = (F.col("_cutoff") - F.col("_last")) / 1000.0
    return joined.select(
        *queries.columns,
        *[F.coalesce(F.col(n), F.lit(0.0)).cast("float").alias(n) for n in counts],
        F.coalesce(since, F.lit(float("nan"))).cast("float").alias("sess_secs_since_pos"),
    ).select(*queries.columns, *SESSION_FEATURES, *TODAY_FEATURES)

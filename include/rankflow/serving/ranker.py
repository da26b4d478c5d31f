"""Re-rank one user's candidates: one Redis round trip, the snapshot, the shared function.

The user's value (vector and profile) and history of the served feature version come in one
``MGET`` — with, when the model takes stream features, the user's recent events and the
candidates' day counters from the stream updater's fresh state; item features come from the
in-process snapshot; the user x item features from the same function the Spark jobs call; the
stream features from the reduction the offline backfill is proven equal to
(``rankflow.features.stream``), NaN when the updater is stale; the scores from one
``inplace_predict``. Live listings the snapshot lacks are found in the side tables of
:class:`rankflow.serving.live.LiveCatalogue` (the features training gives new listings). Sold
items are removed; candidates neither knows are returned after the ranked ones, in request
order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rankflow.features.on_demand import Affinity, ItemSide, UserSide, cross_features
from rankflow.features.registry import AFFINITY_DIMENSIONS, STREAM_FEATURES, USER_FEATURES
from rankflow.features.stream import session_features, today_features
from rankflow.serving.snapshot import Listed
from rankflow.serving.state import Served, model_matrix
from rankflow.store.commands import _bytes
from rankflow.store.fresh import (
    day_as_of,
    decode_item_day,
    decode_recent,
    item_day_key,
    user_recent_key,
)
from rankflow.store.vectors import EMPTY_HISTORY, Profile, decode_history, decode_user

if TYPE_CHECKING:
    import redis

Fetched = tuple[bytes | None, bytes | None]  # a user's value (vector, profile) and history


@dataclass(frozen=True)
class FreshInputs:
    """What the stream features of one request are computed from."""

    cutoff_ms: int
    window_ms: int
    recent: bytes | None  # the user's recent events
    item_days: list[bytes | None]  # each request candidate's day counters, in request order
    stale: bool  # the updater is behind: every stream feature is missing (NaN)


def fresh_keys(prefix: str, user_id: int, candidates: np.ndarray, cutoff: int) -> list[str]:
    """The fresh-state keys a request's stream features read: the user's, then each candidate's."""
    day, _ = day_as_of(cutoff)
    return [
        user_recent_key(prefix, user_id),
        *(item_day_key(prefix, day, int(i)) for i in candidates),
    ]


@dataclass(frozen=True)
class ModelInputs:
    """Every scored candidate, its model input row and its score (the skew check replays them)."""

    item_ids: np.ndarray
    matrix: np.ndarray
    scores: np.ndarray
    stream_cutoff_ms: int | None = None  # the stream features were as of this (None: not read)


@dataclass(frozen=True)
class Ranked:
    """A re-ranked candidate set."""

    item_ids: list[int]
    scores: list[float | None]  # None for candidates the snapshot does not know
    unknown: int
    sold: int
    user_known: bool
    inputs: ModelInputs | None = None  # kept for the serving log's sampled users


def user_side(profile: Profile | None, log_price_mean: float) -> UserSide:
    """One user's affinities, declared size and price band (an unknown user: none, NaN)."""
    if profile is None:
        empty = Affinity(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        affinity = dict.fromkeys(AFFINITY_DIMENSIONS, empty)
        size = -1
    else:
        affinity = {
            d: Affinity(np.zeros(len(profile.codes[d]), np.int64), profile.codes[d],
                        profile.shares[d])
            for d in AFFINITY_DIMENSIONS
        }  # fmt: skip
        size = profile.declared_size
    return UserSide(affinity, np.array([size], np.int64), np.array([log_price_mean], np.float32))


def fetch_user(
    client: redis.Redis, prefix: str, version: str, user_id: int, extra: Sequence[str] = ()
) -> tuple[Fetched, list[bytes | None]]:
    """The user's value and history of a feature version and ``extra`` keys: one ``MGET``."""
    from rankflow.store.keys import feature_key

    keys = [feature_key(prefix, version, group, user_id) for group in ("u", "h")]
    values = [_bytes(v) for v in client.mget([*keys, *extra])]
    return (values[0], values[1]), values[2:]


@dataclass(frozen=True)
class CandidateRows:
    """The candidates found in the snapshot or among live listings: known, sold, and scored."""

    known: np.ndarray
    sold: np.ndarray
    ids: np.ndarray  # the scored candidates (known, unsold), in request order
    vectors: np.ndarray  # their item vectors (scored x item features)
    codes: dict[str, np.ndarray]  # their attribute codes


@dataclass(frozen=True)
class UserInputs:
    """One user's side of the model inputs, decoded from the fetched values."""

    vector: np.ndarray
    side: UserSide
    seen: np.ndarray
    clicked: np.ndarray


def candidate_rows(served: Served, candidates: np.ndarray, listed: Listed = ()) -> CandidateRows:
    """Find the candidates in the snapshot, then among live listings; the unsold get scored."""
    snapshot = served.features.snapshot
    at, known = snapshot.positions(candidates)
    sold = known & snapshot.is_sold[at]
    source = np.zeros(len(candidates), np.int64)  # 0: the snapshot, t: listed[t - 1]
    for t, table in enumerate(listed, start=1):
        rows, found = table.positions(candidates)
        found &= ~known
        source[found], at[found] = t, rows[found]
        known |= found
    scored = known & ~sold
    if not listed:  # the usual case: every row from the snapshot
        rows = at[scored]
        codes = {name: values[rows] for name, values in snapshot.codes.items()}
        return CandidateRows(known, sold, candidates[scored], snapshot.vectors[rows], codes)
    where, rows = source[scored], at[scored]
    vectors = np.empty((len(rows), snapshot.vectors.shape[1]), np.float32)
    codes = {name: np.empty(len(rows), np.int64) for name in snapshot.codes}
    for t, table in enumerate((snapshot, *listed)):
        mine = where == t
        if mine.any():
            vectors[mine] = table.vectors[rows[mine]]
            for name in codes:
                codes[name][mine] = table.codes[name][rows[mine]]
    return CandidateRows(known, sold, candidates[scored], vectors, codes)


def user_inputs(fetched: Fetched, ids: np.ndarray) -> UserInputs:
    """Decode the user's vector, profile and history (an unknown user: NaN, none, none)."""
    value, history = fetched
    if value is None:
        user_vector, profile = np.full(len(USER_FEATURES), np.nan, np.float32), None
    else:
        user_vector, profile = decode_user(value, len(USER_FEATURES), AFFINITY_DIMENSIONS)
    price_band = float(user_vector[USER_FEATURES.index("user_log_price_mean")])
    shown = decode_history(history) if history is not None else EMPTY_HISTORY
    seen, clicked = shown.lookup(ids)
    return UserInputs(user_vector, user_side(profile, price_band), seen, clicked)


def user_item_features(
    served: Served, rows: CandidateRows, user: UserInputs
) -> dict[str, np.ndarray]:
    """The user x item features of the scored candidates (the Spark jobs' function)."""
    snapshot = served.features.snapshot
    price = rows.vectors[:, snapshot.feature_names.index("item_price")]
    codes = {d: rows.codes[d] for d in AFFINITY_DIMENSIONS}
    return cross_features(
        np.zeros(len(rows.ids), np.int64),
        ItemSide(codes, price),
        user.side,
        user.seen,
        user.clicked,
        served.features.one_size,
    )


def ranked_answer(
    candidates: np.ndarray,
    rows: CandidateRows,
    scores: np.ndarray,
    k: int,
    user_known: bool,
    inputs: ModelInputs | None = None,
) -> Ranked:
    """Order the scored candidates (ties: smaller id), then the unknown ones in request order."""
    order = np.lexsort((rows.ids, -scores))[:k]
    unknown = candidates[~rows.known]
    room = max(k - len(order), 0)
    return Ranked(
        item_ids=[*rows.ids[order].tolist(), *unknown[:room].tolist()],
        scores=[*np.asarray(scores[order], np.float32).tolist(), *[None] * min(room, len(unknown))],
        unknown=int((~rows.known).sum()),
        sold=int(rows.sold.sum()),
        user_known=user_known,
        inputs=inputs,
    )


def stream_inputs(
    served: Served, rows: CandidateRows, fresh: FreshInputs, listed: Listed = ()
) -> dict[str, np.ndarray]:
    """The stream features of the scored candidates (all NaN when the updater is stale)."""
    n = len(rows.ids)
    if fresh.stale:
        return {name: np.full(n, np.nan, np.float32) for name in STREAM_FEATURES}
    snapshot = served.features.snapshot

    def attributes(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The category and brand codes of the user's event items (a live listing's too)."""
        category, brand = np.full(len(ids), -1, np.int64), np.full(len(ids), -1, np.int64)
        for table in (*listed, snapshot):
            if len(table.item_ids):
                at, known = table.positions(ids)
                category = np.where(known, table.codes["category"][at], category)
                brand = np.where(known, table.codes["brand"][at], brand)
        return category, brand

    recent = decode_recent(fresh.recent)
    session = session_features(
        recent["ts_ms"], recent["item_id"].astype(np.int64), recent["event_type"],
        fresh.cutoff_ms, fresh.window_ms, rows.ids,
        rows.codes["category"], rows.codes["brand"], attributes,
    )  # fmt: skip
    _, second = day_as_of(fresh.cutoff_ms)
    scored = rows.known & ~rows.sold
    days = [fresh.item_days[i] for i in np.flatnonzero(scored)]
    today = today_features([decode_item_day(v).as_of(second) for v in days])
    return {**session, **today}


def rank(
    served: Served,
    fetched: Fetched,
    candidates: np.ndarray,
    k: int,
    keep_inputs: bool = False,
    fresh: FreshInputs | None = None,
    listed: Listed = (),
) -> Ranked:
    """Score the known, unsold candidates and order them (ties: smaller item id first).

    ``listed``: the live listings the served snapshot lacks (its version's side tables).
    """
    rows = candidate_rows(served, candidates, listed)
    user = user_inputs(fetched, rows.ids)
    cross = user_item_features(served, rows, user)
    stream = stream_inputs(served, rows, fresh, listed) if fresh is not None else None
    matrix = model_matrix(served, rows.vectors, user.vector, cross, stream)
    scores = served.model.booster.inplace_predict(matrix)
    inputs = None
    if keep_inputs:
        # a stale updater's answers took no stream values: nothing to rebuild (NaN both sides)
        cutoff = fresh.cutoff_ms if fresh is not None and not fresh.stale else None
        inputs = ModelInputs(rows.ids, matrix, np.asarray(scores, np.float32), cutoff)
    return ranked_answer(candidates, rows, scores, k, fetched[0] is not None, inputs)


def nightly_order(nightly: list[int], candidates: np.ndarray | None, k: int) -> list[int]:
    """The fallback answer: the nightly list's order over the candidates, then the rest.

    Without candidates it is the nightly list itself.
    """
    if candidates is None:
        return nightly[:k]
    wanted = set(candidates.tolist())
    first = [i for i in nightly if i in wanted]
    taken = set(first)
    rest = [i for i in candidates.tolist() if i not in taken]
    return [*first, *rest][:k]

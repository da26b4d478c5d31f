"""A model that takes stream features gets them from the fresh state, in the request's one MGET.

The updater's script applies real events to a real Redis; the ranking path reads them back for
a request (``fetch_user`` with the fresh keys) and puts the stream features into the model's
matrix: the values the offline backfill is proven equal to, and NaN for every one of them when
the updater is stale.
"""

from __future__ import annotations

import numpy as np
import pytest

from rankflow.features.registry import (
    AFFINITY_DIMENSIONS,
    ITEM_FEATURES,
    MODEL_FEATURES,
    STREAM_FEATURES,
    STREAM_LAG_SECONDS,
    schema_hash,
)
from rankflow.features.stream import cutoff_ms
from rankflow.quality.live import LiveEvent, encode_record
from rankflow.quality.raw import EVENT_TYPES
from rankflow.serving.ranker import FreshInputs, fetch_user, fresh_keys, rank
from rankflow.serving.snapshot import ItemSnapshot
from rankflow.serving.state import FeatureVersion, Served, ServedModel, input_layout
from rankflow.stream.log import Entry
from rankflow.stream.updater import UpdaterConfig, apply_entries

pytestmark = pytest.mark.services

PREFIX = "rfs"
CONFIG = UpdaterConfig(
    prefix=PREFIX, session_window_seconds=1800, lag_seconds=STREAM_LAG_SECONDS,
    max_recent_events=1024, day_ttl_seconds=172_800, id_buckets=16, batch=500, block_ms=10,
)  # fmt: skip
T = 1_796_634_000_000  # 2026-12-07 09:00:00 UTC
ITEMS = np.arange(1, 7, dtype=np.int64)  # categories 0 0 1 1 2 2, brands 5 6 5 6 5 6


def served_pair() -> Served:
    """A feature version of six items and a small real model over every input, stream too."""
    import xgboost as xgb

    rng = np.random.default_rng(3)
    codes = {d: np.full(6, -1, np.int64) for d in AFFINITY_DIMENSIONS}
    codes["category"] = np.array([0, 0, 1, 1, 2, 2])
    codes["brand"] = np.array([5, 6, 5, 6, 5, 6])
    snapshot = ItemSnapshot(
        "fv1", schema_hash(), ITEMS, rng.normal(size=(6, len(ITEM_FEATURES))).astype(np.float32),
        codes, np.zeros(6, bool), [f"v{i}" for i in range(8)], list(ITEM_FEATURES),
    )  # fmt: skip
    names = [*MODEL_FEATURES, *STREAM_FEATURES]
    matrix = xgb.DMatrix(rng.normal(size=(400, len(names))), label=rng.integers(0, 3, 400),
                         feature_names=names)  # fmt: skip
    matrix.set_group([20] * 20)
    booster = xgb.train({"objective": "rank:ndcg", "max_depth": 3, "nthread": 1}, matrix, 5)
    model = ServedModel("1", schema_hash(), booster, input_layout(names))
    return Served(model, FeatureVersion("fv1", schema_hash(), snapshot, -1))


def apply(redis_client, events: list[LiveEvent]) -> None:
    entries = [Entry(0, (n + 1, 0), encode_record(e)) for n, e in enumerate(events)]
    apply_entries(redis_client, entries, CONFIG, partition="redis:0", caught_up=True)


def event(n: int, kind: str, ts: int, item: int, user: int = 7) -> LiveEvent:
    return LiveEvent(f"srv-{n}", EVENT_TYPES.index(kind), ts, user, item, "home", "s", 1)


def served_stream_columns(redis_client, served: Served, request_ms: int, stale: bool):
    """The stream columns of the model's matrix for user 7 over the six items."""
    cutoff = cutoff_ms(request_ms, STREAM_LAG_SECONDS)
    fetched, values = fetch_user(
        redis_client, PREFIX, "fv1", 7, fresh_keys(PREFIX, 7, ITEMS, cutoff)
    )
    fresh = FreshInputs(cutoff, CONFIG.session_window_seconds * 1000, values[0], values[1:], stale)
    ranked = rank(served, fetched, ITEMS, 6, keep_inputs=True, fresh=fresh)
    assert ranked.inputs is not None
    # the serving log records the cutoff the skew check rebuilds at; none when nothing was read
    assert ranked.inputs.stream_cutoff_ms == (None if stale else cutoff)
    order = np.argsort(ranked.inputs.item_ids)  # back to item order 1..6
    columns = [served.model.plan.stream_columns[served.model.plan.stream_names.index(name)]
               for name in STREAM_FEATURES]  # fmt: skip
    return {
        name: ranked.inputs.matrix[order, c]
        for name, c in zip(STREAM_FEATURES, columns, strict=False)
    }


def test_the_model_gets_the_stream_features_of_the_fresh_state(redis_client) -> None:
    served = served_pair()
    assert served.model.reads_stream
    apply(redis_client, [
        event(1, "impression", T - 60_000, item=1),
        event(2, "click", T - 50_000, item=1),  # category 0, brand 5
        event(3, "impression", T - 40_000, item=3),
        event(4, "save", T - 30_000, item=4),  # category 1, brand 6
        event(5, "impression", T - 20_000, item=3, user=8),  # another user: item counts only
        event(6, "click", T - 500, item=2),  # inside the lag of a request at T: left out
    ])  # fmt: skip
    got = served_stream_columns(redis_client, served, T, stale=False)
    np.testing.assert_array_equal(got["sess_pos_category"], [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(got["sess_pos_brand"], [1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(got["sess_seen"], [1, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(got["sess_secs_since_pos"], [29.0] * 6)  # cutoff T - 1 s
    np.testing.assert_array_equal(got["today_impressions"], [1, 0, 2, 0, 0, 0])
    np.testing.assert_array_equal(got["today_clicks"], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(got["today_saves"], [0, 0, 0, 1, 0, 0])
    later = served_stream_columns(redis_client, served, T + 2_000, stale=False)
    np.testing.assert_array_equal(later["today_clicks"], [1, 1, 0, 0, 0, 0])  # now past the lag


def test_a_stale_updater_makes_every_stream_feature_missing(redis_client) -> None:
    served = served_pair()
    apply(redis_client, [event(1, "click", T - 50_000, item=1)])
    got = served_stream_columns(redis_client, served, T, stale=True)
    assert all(np.isnan(values).all() for values in got.values())


def test_a_live_listing_is_ranked_with_its_features_and_its_session_clicks(redis_client) -> None:
    """Listed through the updater, polled by the service: scored like training sees new items."""
    from dataclasses import replace

    from rankflow.features.listings import ListingContext, listing_vectors
    from rankflow.quality.live import Listing
    from rankflow.serving.live import LiveCatalogue

    base = served_pair()
    context = ListingContext(T - 9 * 3_600_000, 20.0, {1: 0.1, 7: 0.08, 28: 0.05}, {"v2": 40.0})
    snapshot = replace(base.features.snapshot, context=context)
    served = Served(base.model, replace(base.features, snapshot=snapshot))
    listing = Listing(99, 5, T - 120_000, "v2", "v6", "very_good", 30.0, None, "v7", 4.5)
    click = event(1, "click", T - 50_000, item=99)  # category 2, brand 6
    entries = [Entry(0, (1, 0), encode_record(listing)), Entry(0, (2, 0), encode_record(click))]
    apply_entries(redis_client, entries, CONFIG, partition="redis:0", caught_up=True)
    live = LiveCatalogue(redis_client, PREFIX, 0.5)
    live.follow(snapshot)
    listed = live.listed_for(snapshot)
    assert [table.item_ids.tolist() for table in listed] == [[99]]
    np.testing.assert_array_equal(listed[0].codes["category"], [2])
    np.testing.assert_array_equal(listed[0].codes["style"], [-1])  # not given: missing

    candidates = np.array([3, 99, 5], np.int64)
    cutoff = cutoff_ms(T, STREAM_LAG_SECONDS)
    fetched, values = fetch_user(
        redis_client, PREFIX, "fv1", 7, fresh_keys(PREFIX, 7, candidates, cutoff)
    )
    fresh = FreshInputs(cutoff, CONFIG.session_window_seconds * 1000, values[0], values[1:], False)
    ranked = rank(served, fetched, candidates, 3, True, fresh, listed)
    assert ranked.unknown == 0
    assert None not in ranked.scores
    assert ranked.inputs is not None
    assert ranked.inputs.item_ids.tolist() == [3, 99, 5]  # request order, the listing in place
    plan = served.model.plan
    row = ranked.inputs.matrix[1]
    expected = listing_vectors([listing], context, list(ITEM_FEATURES))[0]
    np.testing.assert_array_equal(row[plan.item_columns], expected[plan.item_sources])
    snapshot_rows = snapshot.vectors[[2, 4]][:, plan.item_sources]
    np.testing.assert_array_equal(ranked.inputs.matrix[[0, 2]][:, plan.item_columns], snapshot_rows)
    category = plan.stream_columns[plan.stream_names.index("sess_pos_category")]
    brand = plan.stream_columns[plan.stream_names.index("sess_pos_brand")]
    # the click on the listing counts for the candidates of its category (2) and brand (6)
    np.testing.assert_array_equal(ranked.inputs.matrix[:, category], [0, 1, 1])
    np.testing.assert_array_equal(ranked.inputs.matrix[:, brand], [0, 1, 0])

    without = rank(served, fetched, candidates, 3, True, fresh)  # no side table: unknown
    assert without.unknown == 1
    assert without.item_ids[-1] == 99
    assert without.scores[-1] is None

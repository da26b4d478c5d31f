"""Live listings the snapshot lacks: side tables shaped like it, found in request order."""

from __future__ import annotations

import itertools

import numpy as np

from rankflow.features.listings import ListingContext, listing_vectors
from rankflow.features.registry import AFFINITY_DIMENSIONS, ITEM_FEATURES
from rankflow.quality.live import Listing
from rankflow.serving.ranker import candidate_rows
from rankflow.serving.snapshot import ItemSnapshot, with_listings
from rankflow.serving.state import FeatureVersion, Served

CONTEXT = ListingContext(1_796_688_000_000, 20.0, {1: 0.1, 7: 0.05, 28: 0.04}, {"c1": 25.0})
VOCABULARY = ["b1", "c1", "c2", "m"]


def snapshot() -> ItemSnapshot:
    """Items 2, 4 (sold) and 6 of a feature version with a listing context."""
    vectors = np.arange(3 * len(ITEM_FEATURES), dtype=np.float32).reshape(3, -1)
    codes = {d: np.array([0, 1, 2]) for d in AFFINITY_DIMENSIONS}
    return ItemSnapshot("fv", "h", np.array([2, 4, 6]), vectors, codes,
                        np.array([False, True, False]), VOCABULARY, list(ITEM_FEATURES),
                        CONTEXT)  # fmt: skip


def listing(item: int, price: float = 30.0, category: str = "c1") -> Listing:
    return Listing(item, 1, 1_796_690_000_000, category, "b1", "good", price, None, "m", 4.0)


def test_listings_grow_in_few_tables_each_item_once() -> None:
    items = snapshot()
    listed = with_listings((), items, [listing(1), listing(3), listing(1), listing(4)])
    assert [t.item_ids.tolist() for t in listed] == [[1, 3]]  # 4 is the snapshot's, 1 once
    for start in range(10, 200, 10):
        listed = with_listings(listed, items, [listing(i) for i in range(start, start + 10)])
    sizes = [len(t.item_ids) for t in listed]
    assert sum(sizes) == 2 + 190
    assert len(listed) <= 8
    assert all(2 * b < a for a, b in itertools.pairwise(sizes))  # halving, newest last
    held = np.concatenate([t.item_ids for t in listed])
    assert len(np.unique(held)) == len(held)
    assert with_listings(listed, items, [listing(3)]) is listed  # nothing new: the same tables


def test_codes_come_from_the_snapshots_vocabulary_then_from_the_listings() -> None:
    items = snapshot()
    listed = with_listings((), items, [listing(1, category="c2"), listing(3, category="x"),
                                       listing(7, category="y")])  # fmt: skip
    (table,) = listed
    # a value the version never saw equals itself only, as the strings do offline
    np.testing.assert_array_equal(table.codes["category"], [2, 4, 5])
    assert table.vocabulary == [*VOCABULARY, "x", "y"]
    np.testing.assert_array_equal(table.codes["style"], [-1, -1, -1])  # not given: missing
    np.testing.assert_array_equal(table.codes["size"], [3, 3, 3])
    listed = with_listings(listed, items, [listing(8, category="y"), listing(9, category="z")])
    (merged,) = listed  # 2 new are at least half of 3: one table again
    assert merged.item_ids.tolist() == [1, 3, 7, 8, 9]
    np.testing.assert_array_equal(merged.codes["category"], [2, 4, 5, 5, 6])  # y: the same code
    assert items.vocabulary == VOCABULARY  # the snapshot's own is untouched


def test_candidates_are_found_in_request_order_across_the_tables() -> None:
    items = snapshot()
    served = Served(None, FeatureVersion("fv", "h", items, -1))  # type: ignore[arg-type]
    listed = with_listings((), items, [listing(9, price=10.0), listing(13)])
    listed = with_listings(listed, items, [listing(5, price=20.0)])  # merged: one table of 3
    listed = with_listings(listed, items, [listing(11, price=50.0)])  # a second table
    assert len(listed) == 2
    rows = candidate_rows(served, np.array([5, 2, 7, 11, 4, 9, 6]), listed)
    assert rows.ids.tolist() == [5, 2, 11, 9, 6]  # 7 unknown, 4 sold
    assert rows.known.tolist() == [True, True, False, True, True, True, True]
    assert rows.sold.tolist() == [False, False, False, False, True, False, False]
    new = listing_vectors([listing(5, 20.0), listing(11, 50.0), listing(9, 10.0)], CONTEXT,
                          ITEM_FEATURES)  # fmt: skip
    np.testing.assert_array_equal(rows.vectors[[0, 2, 3]], new)
    np.testing.assert_array_equal(rows.vectors[[1, 4]], items.vectors[[0, 2]])
    np.testing.assert_array_equal(rows.codes["category"], [1, 0, 1, 1, 2])
    alone = candidate_rows(served, np.array([5, 2, 6]))
    assert alone.ids.tolist() == [2, 6]
    np.testing.assert_array_equal(alone.vectors, items.vectors[[0, 2]])


def test_a_snapshot_without_a_listing_context_ranks_no_listing() -> None:
    from dataclasses import replace

    old = replace(snapshot(), context=None)
    assert with_listings((), old, [listing(1)]) == ()

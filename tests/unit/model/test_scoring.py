"""Batch scoring's top-K per user: best first, ties by item id, short lists kept."""

from __future__ import annotations

import numpy as np

from rankflow.model.scoring import top_k_per_user


def test_top_k_keeps_best_items_per_user_in_order() -> None:
    users = np.array([2, 1, 2, 1, 2, 1, 3])
    items = np.array([20, 10, 21, 11, 22, 12, 30])
    scores = np.array([0.1, 0.9, 0.5, 0.2, 0.5, 0.3, 1.0])
    ranked = top_k_per_user(users, items, scores, k=2).to_pandas()
    as_lists = {
        int(u): list(map(int, i)) for u, i in zip(ranked.user_id, ranked.item_ids, strict=True)
    }
    # user 2: items 21 and 22 tie on 0.5 -> smaller item id first
    assert as_lists == {1: [10, 12], 2: [21, 22], 3: [30]}
    assert [len(s) for s in ranked.scores] == [2, 2, 1]


def test_top_k_handles_short_lists_and_k_larger_than_candidates() -> None:
    ranked = top_k_per_user(np.array([5, 5]), np.array([1, 2]), np.array([0.0, 1.0]), k=100)
    ranked = ranked.to_pandas()
    assert list(ranked.item_ids[0]) == [2, 1]


def test_the_best_k_kept_while_rows_arrive_equal_the_best_k_of_all_rows(monkeypatch) -> None:
    import pyarrow as pa

    from rankflow.model import scoring
    from rankflow.model.scoring import RANKED_SCHEMA, BestPerUser

    monkeypatch.setattr(scoring, "CUT_AFTER_ROWS", 50)  # cut many times
    rng = np.random.default_rng(11)
    rows = 2_000
    users = rng.integers(0, 40, rows)
    items = rng.permutation(rows) % 700  # some users hold an item twice: ties on equal ids
    scores = rng.integers(0, 20, rows).astype(np.float32)  # many ties on score
    best = BestPerUser(k=7)
    for part in np.array_split(np.arange(rows), 37):
        best.add(users[part], items[part], scores[part])
    assert best.kept <= 40 * 7
    ranked = best.ranked()
    expected = top_k_per_user(users, items, scores, k=7)
    assert ranked.equals(expected)
    assert ranked.num_rows == len(np.unique(users))
    assert pa.types.is_binary(ranked.schema.field("items_u32le").type)
    assert ranked.schema.names == [f.split()[0] for f in RANKED_SCHEMA.split(", ")]


def test_no_rows_give_no_lists() -> None:
    from rankflow.model.scoring import BestPerUser

    assert BestPerUser(k=3).ranked().num_rows == 0


def test_rows_grouped_by_user_are_cut_batch_by_batch_and_give_the_same_lists(monkeypatch) -> None:
    from rankflow.model import scoring
    from rankflow.model.scoring import BestPerUser

    monkeypatch.setattr(scoring, "CUT_AFTER_ROWS", 50)
    rng = np.random.default_rng(12)
    users = np.repeat(rng.permutation(60) * 7, rng.integers(1, 30, 60))  # grouped, not sorted
    items = rng.permutation(len(users))
    scores = rng.integers(0, 10, len(users)).astype(np.float32)
    best = BestPerUser(k=5)
    for part in np.array_split(np.arange(len(users)), 23):  # users straddle the batches
        best.add(users[part], items[part], scores[part])
    assert not best.mixed  # no merge was needed: each user's rows came in one run
    ranked = best.ranked().to_pandas().set_index("user_id")
    expected = top_k_per_user(users, items, scores, k=5).to_pandas().set_index("user_id")
    assert sorted(ranked.index) == sorted(expected.index)
    for user, row in expected.iterrows():
        assert list(ranked.loc[user, "item_ids"]) == list(row["item_ids"])
        assert list(ranked.loc[user, "scores"]) == list(row["scores"])


def test_one_user_over_every_batch_is_held_back_to_the_end_and_still_listed() -> None:
    from rankflow.model.scoring import BestPerUser

    best = BestPerUser(k=3)
    for start in range(0, 12, 4):
        rows = np.arange(start, start + 4)
        best.add(np.full(4, 9), rows, rows.astype(np.float32))
    assert best.parts == []  # every row so far belongs to the held-back user
    ranked = best.ranked().to_pylist()
    assert [(r["user_id"], r["item_ids"]) for r in ranked] == [(9, [11, 10, 9])]

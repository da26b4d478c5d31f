"""Batch scoring's top-K per user: best first, ties by item id, short lists kept."""

from __future__ import annotations

import numpy as np

from rankflow.model.scoring import top_k_per_user


def test_top_k_keeps_best_items_per_user_in_order() -> None:
    users = np.array([2, 1, 2, 1, 2, 1, 3])
    items = np.array([20, 10, 21, 11, 22, 12, 30])
    scores = np.array([0.1, 0.9, 0.5, 0.2, 0.5, 0.3, 1.0])
    ranked = top_k_per_user(users, items, scores, k=2)
    as_lists = {
        int(u): list(map(int, i)) for u, i in zip(ranked.user_id, ranked.item_ids, strict=True)
    }
    # user 2: items 21 and 22 tie on 0.5 -> smaller item id first
    assert as_lists == {1: [10, 12], 2: [21, 22], 3: [30]}
    assert [len(s) for s in ranked.scores] == [2, 2, 1]


def test_top_k_handles_short_lists_and_k_larger_than_candidates() -> None:
    ranked = top_k_per_user(np.array([5, 5]), np.array([1, 2]), np.array([0.0, 1.0]), k=100)
    assert list(ranked.item_ids[0]) == [2, 1]

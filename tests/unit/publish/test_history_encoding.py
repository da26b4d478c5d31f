"""Histories streamed out of a seen-pairs file equal histories encoded at once, in any batching."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rankflow.publish.feature_values import RowTally, history_values, pairs_sorted, user_histories
from rankflow.store.vectors import decode_history


def seen_rows(users: list[int], items: list[int]) -> pa.RecordBatch:
    """Flat seen-pair rows with distinct counts per row (so a misplaced row shows)."""
    n = len(users)
    return pa.RecordBatch.from_pydict(
        {
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array(items, pa.int64()),
            "seen_before": pa.array(range(1, n + 1), pa.int64()),
            "clicked_before": pa.array([i % 3 for i in range(n)], pa.int64()),
        }
    )


def decoded(batches: list[pa.RecordBatch]) -> dict[int, tuple[list[int], list[float], list[float]]]:
    """user -> (items, seen, clicked) of encoded ``user_id, value`` batches."""
    out = {}
    for batch in batches:
        for user, value in zip(
            batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
        ):
            assert user not in out, f"user {user} encoded twice"
            history = decode_history(value)
            out[user] = (
                history.item_ids.tolist(),
                history.seen.tolist(),
                history.clicked.tolist(),
            )
    return out


def test_a_user_whose_rows_cross_batches_is_encoded_once_and_whole() -> None:
    rows = seen_rows([1, 1, 2, 2, 2, 2, 3, 5, 5], [4, 9, 1, 2, 3, 8, 7, 1, 2])
    whole_users, whole_values = history_values(rows)
    whole = decoded([pa.RecordBatch.from_arrays([whole_users, whole_values], ["u", "v"])])
    for size in (1, 2, 3, 4, 9):
        tally = RowTally()
        batches = [rows.slice(i, size) for i in range(0, rows.num_rows, size)]
        assert decoded(list(user_histories(batches, tally))) == whole
        assert tally.rows == rows.num_rows
    assert whole[2] == ([1, 2, 3, 8], [3.0, 4.0, 5.0, 6.0], [2.0, 0.0, 1.0, 2.0])


def test_unsorted_pairs_are_sorted_and_encode_as_sorted_ones_do() -> None:
    shuffled = seen_rows([2, 1, 2, 1], [8, 9, 3, 4])
    assert not pairs_sorted(np.array([2, 1, 2, 1]), np.array([8, 9, 3, 4]))
    users, values = history_values(shuffled)
    got = decoded([pa.RecordBatch.from_arrays([users, values], ["u", "v"])])
    assert got == {1: ([4, 9], [4.0, 2.0], [0.0, 1.0]), 2: ([3, 8], [3.0, 1.0], [2.0, 0.0])}


def test_a_file_not_sorted_by_user_is_refused() -> None:
    rows = seen_rows([1, 3, 2], [1, 1, 1])
    with pytest.raises(ValueError, match="not sorted by user"):
        list(user_histories([rows], RowTally()))
    # the disorder across a batch boundary is caught too
    with pytest.raises(ValueError, match="not sorted by user"):
        list(user_histories([rows.slice(0, 2), rows.slice(2)], RowTally()))

"""Histories streamed out of a seen-pairs file equal histories encoded at once, in any batching."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rankflow.publish.feature_values import RowTally, file_histories, history_values, pair_order
from rankflow.store.vectors import decode_history, pack_runs


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


def test_a_file_in_any_order_and_batching_gives_each_user_one_whole_history() -> None:
    rows = seen_rows([2, 1, 5, 2, 3, 2, 1, 5, 2], [8, 9, 2, 3, 7, 1, 4, 1, 2])
    for size in (1, 2, 4, 9):
        tally = RowTally()
        batches = [rows.slice(i, size) for i in range(0, rows.num_rows, size)]
        got = decoded(list(file_histories(batches, tally)))
        assert tally.rows == rows.num_rows
        assert got[2] == ([1, 2, 3, 8], [6.0, 9.0, 4.0, 1.0], [2.0, 2.0, 0.0, 0.0])
        assert got[1] == ([4, 9], [7.0, 2.0], [0.0, 1.0])
        assert sorted(got) == [1, 2, 3, 5]
    assert list(file_histories([], RowTally())) == []


def test_the_fast_sort_key_and_lexsort_order_pairs_alike() -> None:
    rng = np.random.default_rng(3)
    users = rng.integers(0, 2**31 - 1, 5000)
    items = rng.integers(0, 2**32 - 1, 5000)
    fast = pair_order(users, items)
    slow = np.lexsort((items, users))
    assert fast is not None
    assert np.array_equal(users[fast], users[slow])
    assert np.array_equal(items[fast], items[slow])
    negative = pair_order(users - 2**40, items)  # outside the key's range: lexsort
    assert negative is not None
    assert np.array_equal(negative, slow)
    assert pair_order(np.array([1, 1, 2]), np.array([3, 4, 1])) is None  # already sorted


def test_an_item_id_a_history_cannot_store_is_refused() -> None:
    with pytest.raises(ValueError, match="item ids must be within"):
        history_values(seen_rows([1], [2**32]))


def test_packed_runs_are_each_rows_runs_part_after_part() -> None:
    rng = np.random.default_rng(7)
    rows = 300
    lengths = [rng.integers(0, 6, rows), np.ones(rows, np.int64), rng.integers(0, 3, rows)]
    words = [rng.integers(0, 2**32, int(n.sum())).astype("<u4") for n in lengths]
    words[1] = words[1].view("<f4")  # any 4-byte dtype
    offsets, packed = pack_runs(rows, list(zip(lengths, words, strict=True)))
    expected, taken = [], [0, 0, 0]
    for r in range(rows):  # one row at a time, part after part
        value = b""
        for p in range(3):
            n = int(lengths[p][r])
            value += words[p][taken[p] : taken[p] + n].tobytes()
            taken[p] += n
        expected.append(value)
    data = packed.tobytes()
    assert [data[offsets[r] : offsets[r + 1]] for r in range(rows)] == expected
    with pytest.raises(ValueError, match="4-byte words"):
        pack_runs(rows, [(lengths[0], words[0].astype(np.int64))])


def test_every_history_of_a_large_random_file_decodes_to_its_pairs() -> None:
    rng = np.random.default_rng(11)
    users = np.sort(rng.integers(0, 50, 2000))
    items = rng.permutation(10_000)[:2000]  # distinct, so each (user, item) pair is once
    users_out, values = history_values(seen_rows(users.tolist(), items.tolist()))
    assert users_out.to_pylist() == sorted(set(users.tolist()))
    seen = np.arange(1, 2001, dtype=np.float32)
    for user, value in zip(users_out.to_pylist(), values.to_pylist(), strict=True):
        history = decode_history(value)
        mine = users == user
        order = np.argsort(items[mine])
        assert history.item_ids.tolist() == items[mine][order].tolist()
        assert history.seen.tolist() == seen[mine][order].tolist()

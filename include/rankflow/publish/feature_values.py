"""Encode feature rows as the online store's values, in bulk with Arrow and numpy.

The formats are ``store.vectors``'; Spark tasks call these on batches read from the features
commit's files (``publish.feature_files``), and tests on hand-made batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rankflow.features.on_demand import MAP_COLUMNS, map_entries
from rankflow.store.vectors import NO_CODE, pack_runs

if TYPE_CHECKING:
    import pyarrow as pa

HISTORY_COLUMNS = ("user_id", "item_id", "seen_before", "clicked_before")


def feature_matrix(batch: pa.RecordBatch, names: list[str]) -> np.ndarray:
    """The (rows x features) little-endian float32 matrix of ``names`` (nulls become NaN)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    matrix = np.empty((batch.num_rows, len(names)), dtype="<f4")
    for j, name in enumerate(names):
        column = pc.fill_null(batch.column(name).cast(pa.float64()), np.nan)
        matrix[:, j] = column.to_numpy()
    return matrix


def vector_values(batch: pa.RecordBatch, names: list[str]) -> pa.Array:
    """One float32 little-endian vector per row of ``names`` (nulls become NaN), in bulk."""
    import pyarrow as pa

    matrix = feature_matrix(batch, names)
    width = 4 * len(names)
    offsets = np.arange(batch.num_rows + 1, dtype=np.int64) * width
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(matrix.tobytes())]
    return pa.Array.from_buffers(pa.large_binary(), batch.num_rows, buffers)


def codes_of(strings: pa.Array, vocab: pa.Array) -> np.ndarray:
    """Vocabulary codes of a string column (-1 for null or unknown)."""
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(pc.index_in(strings, vocab), -1).to_numpy(), dtype=np.int64)


def user_values(batch: pa.RecordBatch, names: list[str], vocab: pa.Array) -> pa.Array:
    """Each user's value (``store.vectors``): the vector of ``names``, then the profile."""
    import pyarrow as pa

    rows = batch.num_rows
    vector = feature_matrix(batch, names)
    widths = np.full(rows, len(names), dtype=np.int64)
    offsets, data = pack_runs(rows, [(widths, vector.ravel()), *profile_parts(batch, vocab)])
    return pa.Array.from_buffers(
        pa.large_binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def profile_parts(batch: pa.RecordBatch, vocab: pa.Array) -> list[tuple[np.ndarray, np.ndarray]]:
    """The profile's runs of words per row (``pack_runs`` parts): size, sorted affinities."""
    rows = batch.num_rows
    sizes = codes_of(batch.column("declared_size"), vocab)
    sizes = np.where(sizes < 0, NO_CODE, sizes).astype("<u4")
    one = np.ones(rows, dtype=np.int64)
    parts: list[tuple[np.ndarray, np.ndarray]] = [(one, sizes)]
    for name in MAP_COLUMNS:
        entries, counts = map_entries(batch.column(name))
        codes = codes_of(entries.field("key"), vocab)
        if (codes < 0).any():
            raise ValueError(f"{name} holds values missing from the vocabulary")
        shares = np.asarray(entries.field("value").to_numpy(zero_copy_only=False), "<f4")
        order = codes_within_rows(codes, counts)
        if order is not None:
            codes, shares = codes[order], shares[order]
        parts += [(one, counts.astype("<u4")), (counts, codes.astype("<u4")), (counts, shares)]
    return parts


def codes_within_rows(codes: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
    """The permutation sorting each row's codes (rows own ``counts`` each), ``None`` if sorted."""
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    same_row = owner[1:] == owner[:-1]
    if bool(np.all(~same_row | (codes[1:] >= codes[:-1]))):
        return None
    return np.argsort((owner << 32) | codes)  # codes < 2**32, rows < 2**31


def history_values(rows: pa.RecordBatch) -> tuple[pa.Array, pa.Array]:
    """Each user's history (``store.vectors``) from flat ``user_id, item_id, seen, clicked`` rows.

    Every row of a user must be in ``rows``, each (user, item) pair once (the seen table's
    key); returns the users (ascending) and their values: item ids ascending, times shown,
    clicks.

    Raises:
        ValueError: an item id does not fit the uint32 a history stores.
    """
    import pyarrow as pa

    users = np.asarray(rows.column("user_id").to_numpy(), np.int64)
    items = np.asarray(rows.column("item_id").to_numpy(), np.int64)
    if len(items) and (items.min() < 0 or items.max() >= NO_CODE):  # encode_history's bound
        raise ValueError(f"item ids must be within 0..{NO_CODE - 1} to be stored in a history")
    order = pair_order(users, items)
    if order is not None:
        users, items = users[order], items[order]

    def floats(name: str) -> np.ndarray:
        # through double, as the on-demand function and the audit convert counts (null: NaN)
        values = rows.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        values = np.asarray(values, "<f4")
        return values if order is None else values[order]

    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else users
    lengths = np.diff(np.r_[starts, len(users)])
    columns = [items.astype("<u4"), floats("seen_before"), floats("clicked_before")]
    offsets, data = pack_runs(len(starts), [(lengths, words) for words in columns])
    values = pa.Array.from_buffers(
        pa.large_binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return pa.array(users[starts]), values


def pair_order(users: np.ndarray, items: np.ndarray) -> np.ndarray | None:
    """The permutation sorting ``(user, item)`` pairs, or ``None`` when they already are.

    One int64 key (user in the high 32 bits) sorts about six times faster than ``lexsort``;
    users outside ``0..2**31-1`` fall back to ``lexsort``.
    """
    if len(users) < 2:
        return None
    later_user = users[1:] > users[:-1]
    same_user = users[1:] == users[:-1]
    if bool(np.all(later_user | (same_user & (items[1:] >= items[:-1])))):
        return None
    if users.min() >= 0 and users.max() < 2**31:
        return np.argsort((users << 32) | items)
    return np.lexsort((items, users))


@dataclass
class RowTally:
    """Rows a reader has read (a file's are checked against its Delta statistics)."""

    rows: int = 0


def file_histories(batches: Iterable[pa.RecordBatch], tally: RowTally) -> Iterator[pa.RecordBatch]:
    """The ``user_id, value`` histories of one seen file's rows, read whole first.

    A file holds whole users (the features step hash-partitions the seen pairs by user and
    sorts them; unsorted ones are sorted here): memory grows with the file, not the table.
    """
    import pyarrow as pa

    rows = []
    for batch in batches:
        tally.rows += batch.num_rows
        if batch.num_rows:
            rows.append(batch)
    if rows:
        whole = rows[0] if len(rows) == 1 else pa.concat_batches(rows)
        users, values = history_values(whole)
        yield pa.RecordBatch.from_arrays([users, values], names=["user_id", "value"])

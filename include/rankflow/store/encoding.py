"""Value encoding of the ranked lists (pure): u32le item ids, Arrow batches, MSET packing."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from rankflow.store.keys import check_name, version_base

SCHEMA_VERSION = "2"  # 2: lists in hash buckets of about 32 users (1: a key per user)
ENCODING = "u32le"
MAX_ITEM_ID = 2**32 - 1
_ITEM_DTYPE = np.dtype("<u4")
VALUE_COLUMN = "items_u32le"  # optional column holding each list already encoded
FEATURE_COLUMN = "value"  # the column holding each encoded feature value (store.vectors)

UserIds: TypeAlias = "npt.ArrayLike"
ItemLists: TypeAlias = "npt.NDArray[Any] | Sequence[npt.ArrayLike]"


# --------------------------------------------------------------------------- encoding (pure)


def _as_item_array(item_ids: npt.ArrayLike) -> npt.NDArray[np.uint32]:
    """Return item ids as a little-endian uint32 array, raising if any id does not fit."""
    arr = np.asarray(item_ids)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=_ITEM_DTYPE)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"item ids must be integers, got dtype {arr.dtype}")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high > MAX_ITEM_ID:
        raise ValueError(
            f"item ids must fit in uint32 [0, {MAX_ITEM_ID}]; got range [{low}, {high}]"
        )
    return np.ascontiguousarray(arr, dtype=_ITEM_DTYPE)


def encode_items(item_ids: npt.ArrayLike) -> bytes:
    """Encode one ranked list: item ids as little-endian uint32 in rank order (4 bytes each)."""
    arr = _as_item_array(item_ids)
    if arr.ndim != 1:
        raise ValueError(f"one list must be one-dimensional, got shape {arr.shape}")
    return arr.tobytes()


def encode_runs(item_ids: npt.ArrayLike, starts: npt.ArrayLike) -> pa.BinaryArray:
    """Encode consecutive runs of one flat id array (run ``i`` begins at ``starts[i]``) in bulk.

    The scorer's lists come out as one flat array per batch; this validates and converts it
    once and returns one Arrow binary value a run over the converted buffer (no copy per run).
    """
    data = _as_item_array(item_ids)
    if data.ndim != 1:
        raise ValueError(f"item ids must be one flat array, got shape {data.shape}")
    if data.nbytes > np.iinfo(np.int32).max:
        raise ValueError(f"{data.size} item ids exceed one Arrow binary array; encode fewer")
    first = np.asarray(starts, dtype=np.int64)
    if first.size and (first[0] != 0 or np.any(np.diff(first) < 0) or first[-1] > data.size):
        raise ValueError("run starts must begin at 0, be sorted and lie inside the array")
    offsets = (np.r_[first, data.size] * _ITEM_DTYPE.itemsize).astype(np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.binary(), int(first.size), buffers)


def decode_item_array(value: bytes) -> npt.NDArray[np.int64]:
    """Decode a stored list (or several, concatenated) into item ids in rank order."""
    if len(value) % _ITEM_DTYPE.itemsize:
        raise ValueError(f"a list value must be a multiple of 4 bytes, got {len(value)}")
    return np.frombuffer(value, dtype=_ITEM_DTYPE).astype(np.int64)


def decode_items(value: bytes) -> list[int]:
    """Decode a stored list back into item ids in rank order."""
    return [int(i) for i in decode_item_array(value).tolist()]


def list_batch(user_ids: UserIds, item_lists: ItemLists) -> pa.RecordBatch:
    """Return ``user_id, item_ids`` as the Arrow batch the writers take, from numpy or lists.

    ``item_lists`` is a 2-D array (one row per user) or a sequence of 1-D lists.
    """
    ids = pa.array(np.asarray(user_ids)) if not isinstance(user_ids, pa.Array) else user_ids
    if isinstance(item_lists, np.ndarray) and item_lists.ndim == 2:
        rows = list(item_lists)
    else:
        rows = [np.asarray(r) for r in item_lists]
    if any(r.ndim != 1 for r in rows):
        raise ValueError("each list must be one-dimensional")
    if len(rows) != len(ids):
        raise ValueError(f"{len(ids)} user ids but {len(rows)} lists")
    kinds = {r.dtype.kind for r in rows if r.size}
    if not kinds <= {"i", "u"}:
        raise ValueError(f"item ids must be integers, got dtype kinds {sorted(kinds)}")
    lengths = np.fromiter((r.size for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    filled = [r for r in rows if r.size]
    # int64 for all rows: mixing int64 and uint64 rows would otherwise promote to float64
    flat: npt.ArrayLike = np.concatenate(filled, dtype=np.int64, casting="unsafe") if filled else []
    if filled and any(r.dtype.kind == "u" and r.max() > np.iinfo(np.int64).max for r in filled):
        raise ValueError(f"item ids must fit in uint32 [0, {MAX_ITEM_ID}]")
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.int64()))
    return pa.RecordBatch.from_arrays([ids, lists], names=["user_id", "item_ids"])


def encode_list_array(lists: pa.Array) -> pa.BinaryArray:
    """Encode every list of an Arrow list column as a ``u32le`` value, in bulk.

    The flattened ids are cast once to uint32 (which rejects ids out of range) and the list
    offsets, times four, become the binary offsets: no per-user Python work.
    """
    if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
        raise ValueError(f"item lists must be an Arrow list column, got {lists.type}")
    if not pa.types.is_integer(lists.type.value_type):
        raise ValueError(f"item ids must be integers, got {lists.type.value_type}")
    flat = lists.flatten()
    if lists.null_count or flat.null_count:
        raise ValueError("item lists must not be null or contain null ids")
    if len(flat):
        low, high = pc.min_max(flat).values()
        if low.as_py() < 0 or high.as_py() > MAX_ITEM_ID:
            raise ValueError(
                f"item ids must fit in uint32 [0, {MAX_ITEM_ID}]; "
                f"got range [{low.as_py()}, {high.as_py()}]"
            )
    if sys.byteorder != "little":
        raise RuntimeError("the u32le encoder relies on a little-endian machine")
    ids = pc.cast(flat, pa.uint32())
    data = ids.buffers()[1].slice(ids.offset * 4, len(ids) * 4) if len(ids) else pa.py_buffer(b"")
    starts = lists.offsets
    offsets = pc.multiply_checked(pc.subtract(starts, starts[0]), pa.scalar(4, starts.type))
    binary = pa.large_binary() if pa.types.is_large_list(lists.type) else pa.binary()
    return pa.Array.from_buffers(binary, len(lists), [None, offsets.buffers()[1], data])


def batch_values(batch: pa.RecordBatch) -> pa.Array:
    """Return a batch's values: ``items_u32le`` (lists) or ``value`` (features), else encoded.

    Without either column the ``item_ids`` lists are encoded; every value is a whole number of
    4-byte words.
    """
    names = batch.schema.names
    column = VALUE_COLUMN if VALUE_COLUMN in names else FEATURE_COLUMN
    if column not in names:
        return encode_list_array(batch.column("item_ids"))
    values = batch.column(column)
    if not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
        raise ValueError(f"{column} must be binary, got {values.type}")
    lengths = pc.binary_length(values)
    if values.null_count or pc.any(pc.not_equal(pc.bit_wise_and(lengths, 3), 0)).as_py():
        raise ValueError(f"{column} values must be non-null multiples of 4 bytes")
    return values


def user_key_array(
    prefix: str, surface: str, version: str, user_ids: pa.Array, group: str = "u"
) -> pa.Array:
    """Return the key of every id of an Arrow column, in bulk (ints in decimal).

    ``group`` is the key's entity segment: ``u`` (users' lists, user vectors) or another
    feature group (``store.vectors.GROUPS``).
    """
    if user_ids.null_count:
        raise ValueError("user ids must not be null")
    if pa.types.is_integer(user_ids.type):
        text = pc.cast(user_ids, pa.string())
    elif pa.types.is_string(user_ids.type) or pa.types.is_large_string(user_ids.type):
        if len(user_ids) and pc.min(pc.utf8_length(user_ids)).as_py() == 0:
            raise ValueError("string user ids must not be empty")
        text = user_ids
    else:
        raise ValueError(f"user ids must be integers or strings, got {user_ids.type}")
    segment = check_name(group, "group")
    base = pa.scalar(f"{version_base(prefix, surface, version)}:{segment}:".encode(), pa.binary())
    return pc.binary_join_element_wise(
        base, pc.cast(text, pa.binary()), pa.scalar(b"", pa.binary())
    )


def mset_arguments(keys: pa.Array, values: pa.Array) -> pa.Array:
    """Return ``$<len> CRLF key CRLF $<len> CRLF value CRLF`` per pair: MSET's RESP arguments.

    Consecutive pairs are contiguous in the result's data buffer, so one MSET command is a
    header plus one slice of that buffer.
    """
    if len(keys) != len(values):
        raise ValueError(f"need as many keys as values: {len(keys)}/{len(values)}")

    kind = (
        pa.large_binary()
        if pa.types.is_large_binary(keys.type) or pa.types.is_large_binary(values.type)
        else pa.binary()
    )
    keys, values = pc.cast(keys, kind), pc.cast(values, kind)

    def length_text(column: pa.Array) -> pa.Array:
        return pc.cast(pc.cast(pc.binary_length(column), pa.string()), kind)

    parts = [b"$", length_text(keys), b"\r\n", keys, b"\r\n$", length_text(values)]
    parts += [b"\r\n", values, b"\r\n"]
    scalars = [pa.scalar(p, kind) if isinstance(p, bytes) else p for p in parts]
    return pc.binary_join_element_wise(*scalars, pa.scalar(b"", kind))


def mset_commands(arguments: pa.Array, pairs_per_command: int) -> Iterator[list[Any]]:
    """Yield MSET commands of ``pairs_per_command`` pairs as ``[header, buffer slice]`` chunks."""
    if pairs_per_command < 1:
        raise ValueError("pairs_per_command must be at least 1")
    offsets = _offsets(arguments)
    data = memoryview(_data(arguments))
    for start in range(0, len(arguments), pairs_per_command):
        end = min(start + pairs_per_command, len(arguments))
        header = b"*%d\r\n$4\r\nMSET\r\n" % (2 * (end - start) + 1)
        yield [header, data[int(offsets[start]) : int(offsets[end])]]


def hset_stream(
    arguments: pa.Array,
    key_base: bytes,
    buckets: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
) -> tuple[pa.Buffer, npt.NDArray[np.int64]]:
    """Return one HSET per bucket as one contiguous buffer, and the offset where each ends.

    Bucket ``buckets[n]`` (key ``key_base`` + its number in decimal) gets the pairs
    ``starts[n]`` to ``starts[n+1]`` of ``arguments``, :func:`mset_arguments` of (field, value)
    pairs sorted by bucket (``starts`` ends with ``len(arguments)``). The headers are built by
    compute kernels over the buckets; a bucket's pairs are already one slice of the arguments'
    buffer, so the run is one join of header and pair slices (a copy, no work per pair), and
    goes to the socket in a few large writes.
    """
    starts = np.asarray(starts, dtype=np.int64)
    pairs = np.diff(starts)
    if len(pairs) != len(buckets) or (len(pairs) and pairs.min() < 1):
        raise ValueError("need one non-empty run of pairs per bucket")
    big = pa.large_binary()

    def text(values: npt.NDArray[np.int64]) -> pa.Array:
        return pc.cast(pc.cast(pa.array(values), pa.string()), big)

    keys = pc.binary_join_element_wise(
        pa.scalar(key_base, big), text(np.asarray(buckets, np.int64)), pa.scalar(b"", big)
    )
    parts = [b"*", text(2 * pairs + 2), b"\r\n$4\r\nHSET\r\n$", text(_lengths(keys)), b"\r\n"]
    parts += [keys, b"\r\n"]
    headers = pc.binary_join_element_wise(
        *[pa.scalar(p, big) if isinstance(p, bytes) else p for p in parts], pa.scalar(b"", big)
    )
    head_at = _offsets(headers)
    body_at = _offsets(arguments)[starts]
    head, body = memoryview(_data(headers)), memoryview(_data(arguments))
    pieces = []
    for h0, h1, b0, b1 in zip(
        head_at[:-1].tolist(),
        head_at[1:].tolist(),
        body_at[:-1].tolist(),
        body_at[1:].tolist(),
        strict=True,
    ):
        pieces += [head[h0:h1], body[b0:b1]]
    ends = np.cumsum(np.diff(head_at) + np.diff(body_at))
    return pa.py_buffer(b"".join(pieces)), ends


def _offsets(column: pa.Array) -> npt.NDArray[np.int64]:
    """The ``len + 1`` value offsets of a (sliced) binary column into its data buffer."""
    width = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    raw = np.frombuffer(column.buffers()[1], dtype=width)
    return raw[column.offset : column.offset + len(column) + 1].astype(np.int64)


def _data(column: pa.Array) -> pa.Buffer:
    """The data buffer of a binary column (an empty one when it has none)."""
    return column.buffers()[2] or pa.py_buffer(b"")


def _lengths(column: pa.Array) -> npt.NDArray[np.int64]:
    """The byte length of every value of a binary column, as numpy."""
    return np.asarray(pc.binary_length(column).to_numpy(), dtype=np.int64)

"""The Redis value encoding's contract, byte for byte (docs/redis-layout.md, "Value encoding").

Each list is its item ids as unsigned 32-bit little-endian integers, concatenated; writers take
Arrow batches (``user_id``, ``item_ids``) or already-encoded ``items_u32le`` values, and send MSET
commands framed in RESP. These tests pin the exact bytes, the exact error of every refusal (an id
that does not fit is refused, never wrapped), and the shapes and slices the writers meet.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from rankflow.store import encoding
from rankflow.store.encoding import (
    ENCODING,
    MAX_ITEM_ID,
    SCHEMA_VERSION,
    VALUE_COLUMN,
    batch_values,
    decode_item_array,
    decode_items,
    encode_items,
    encode_list_array,
    encode_runs,
    list_batch,
    mset_arguments,
    mset_commands,
    user_key_array,
)
from rankflow.store.keys import USERS_PER_BUCKET, bucket_count, user_bucket_key

RANGE = "item ids must fit in uint32 [0, 4294967295]"


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern that accepts this message and nothing around it."""
    return f"^{re.escape(message)}$"


def framed(commands: object) -> list[bytes]:
    """The bytes each MSET command puts on the wire (its header and its buffer slice)."""
    return [b"".join(bytes(chunk) for chunk in command) for command in commands]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the documented layout


def test_the_layout_constants_are_the_documented_ones() -> None:
    assert (ENCODING, SCHEMA_VERSION, VALUE_COLUMN) == ("u32le", "2", "items_u32le")
    assert MAX_ITEM_ID == 4_294_967_295


def test_a_users_bucket_is_its_id_modulo_the_versions_bucket_count() -> None:
    # docs/redis-layout.md: user 42 of a version with 31 buckets -> rf:home:v:<v>:b:11, field 42
    version = "20240105-792c6b90c3"
    assert user_bucket_key("rf", "home", version, 42, 31) == f"rf:home:v:{version}:b:11"
    assert bucket_count(15_189, USERS_PER_BUCKET) == 479  # the first prime >= 15,189 / 32
    assert bucket_count(1, USERS_PER_BUCKET) == 2
    with pytest.raises(TypeError, match="integer user ids"):
        user_bucket_key("rf", "home", version, "u-7", 31)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2\\*\\*53"):
        user_bucket_key("rf", "home", version, 2**53, 31)


def test_the_documented_example_values() -> None:
    # rf:home:v:20240105-792c6b90c3:u:42 -> e9 03 00 00 4d 00 00 00 05 00 00 00 (items 1001, 77, 5)
    assert encode_items([1001, 77, 5]).hex(" ") == "e9 03 00 00 4d 00 00 00 05 00 00 00"
    assert encode_items([5, 6, 7]).hex(" ") == "05 00 00 00 06 00 00 00 07 00 00 00"
    assert decode_items(bytes.fromhex("e9030000 4d000000 05000000")) == [1001, 77, 5]


def test_a_one_item_list_is_its_four_bytes() -> None:
    assert encode_items([7]) == b"\x07\x00\x00\x00"
    assert encode_items(np.array([258], dtype=np.uint16)) == b"\x02\x01\x00\x00"


def test_every_integer_dtype_encodes_to_the_same_four_bytes_per_id() -> None:
    expected = b"\x00\x00\x00\x00" + b"\xff\x00\x00\x00" + b"\x00\x00\x01\x00"
    for dtype in ("<i8", ">i8", "<u8", "<i4", ">u4", "<u4"):
        assert encode_items(np.array([0, 255, 65536], dtype=dtype)) == expected, dtype


@pytest.mark.parametrize("ids", [[0], [MAX_ITEM_ID], [0, MAX_ITEM_ID]])
def test_both_ends_of_the_uint32_range_are_valid_ids(ids: list[int]) -> None:
    assert decode_items(encode_items(ids)) == ids
    assert encode_runs(np.array(ids), [0]).to_pylist() == [encode_items(ids)]
    column = pa.array([ids], type=pa.list_(pa.int64()))
    assert encode_list_array(column).to_pylist() == [encode_items(ids)]


@pytest.mark.parametrize(
    ("ids", "low", "high"),
    [([-1, 2], -1, 2), ([3, 2**32], 3, 2**32), ([-5, 2**33], -5, 2**33)],
)
def test_an_id_outside_uint32_is_refused_with_the_range_it_saw(
    ids: list[int], low: int, high: int
) -> None:
    message = exactly(f"{RANGE}; got range [{low}, {high}]")
    with pytest.raises(ValueError, match=message):
        encode_items(ids)
    with pytest.raises(ValueError, match=message):
        encode_runs(np.array(ids), [0])
    with pytest.raises(ValueError, match=message):
        encode_list_array(pa.array([ids], type=pa.list_(pa.int64())))


def test_non_integer_ids_are_refused_naming_their_dtype() -> None:
    with pytest.raises(ValueError, match=exactly("item ids must be integers, got dtype float64")):
        encode_items([1.0, 2.0])
    with pytest.raises(ValueError, match=exactly("item ids must be integers, got dtype bool")):
        encode_items([True])


def test_an_empty_list_of_any_dtype_is_an_empty_value() -> None:
    assert encode_items(np.array([], dtype=np.float64)) == b""
    assert encode_items(np.array([], dtype=">i8")) == b""
    assert encode_runs(np.array([], dtype=np.float64), [0]).to_pylist() == [b""]


def test_one_list_must_be_one_dimensional_even_when_empty() -> None:
    for matrix in ([[1, 2], [3, 4]], np.zeros((2, 0), dtype=np.int64)):
        shape = np.asarray(matrix).shape
        with pytest.raises(
            ValueError, match=exactly(f"one list must be one-dimensional, got shape {shape}")
        ):
            encode_items(matrix)


def test_decoding_gives_int64_ids_and_names_a_bad_length() -> None:
    decoded = decode_item_array(b"\xff\xff\xff\xff\x01\x00\x00\x00")
    assert decoded.dtype == np.int64
    assert decoded.tolist() == [MAX_ITEM_ID, 1]
    assert decode_item_array(b"").tolist() == []
    for size in (1, 2, 3, 5, 7):
        with pytest.raises(
            ValueError, match=exactly(f"a list value must be a multiple of 4 bytes, got {size}")
        ):
            decode_item_array(b"\x00" * size)


# --------------------------------------------------------------------------- runs of a flat array


def test_runs_split_a_flat_array_at_their_starts() -> None:
    flat = np.array([1, 2, 3, 4, 5, 6], dtype=np.uint32)
    assert encode_runs(flat, np.array([0, 1, 4], dtype=np.int32)).to_pylist() == [
        b"\x01\x00\x00\x00",
        b"\x02\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00",
        b"\x05\x00\x00\x00\x06\x00\x00\x00",
    ]
    assert encode_runs(flat, (0,)).to_pylist() == [encode_items(flat)]
    assert encode_runs(flat, [0, 6, 6]).to_pylist() == [encode_items(flat), b"", b""]
    assert encode_runs(flat, []).to_pylist() == []


@pytest.mark.parametrize("starts", [[1], [2, 4], [0, 3, 1], [0, 7], [0, 0, 7]])
def test_run_starts_outside_the_array_or_out_of_order_are_refused(starts: list[int]) -> None:
    message = exactly("run starts must begin at 0, be sorted and lie inside the array")
    with pytest.raises(ValueError, match=message):
        encode_runs(np.arange(6), starts)


@pytest.mark.parametrize("dtype", [np.uint64, np.uint32, np.int32, np.float64])
def test_run_starts_of_any_numeric_dtype_are_checked_alike(dtype: type) -> None:
    flat = np.arange(6)
    assert encode_runs(flat, np.array([0, 2], dtype=dtype)).to_pylist() == [
        encode_items([0, 1]),
        encode_items([2, 3, 4, 5]),
    ]
    with pytest.raises(ValueError, match="run starts must begin at 0, be sorted"):
        encode_runs(flat, np.array([0, 3, 2], dtype=dtype))  # unsigned: 2 - 3 must not wrap


def test_runs_need_one_flat_array() -> None:
    with pytest.raises(
        ValueError, match=exactly("item ids must be one flat array, got shape (2, 2)")
    ):
        encode_runs([[1, 2], [3, 4]], [0])


# --------------------------------------------------------------------------- Arrow batches


def test_a_batch_holds_user_ids_and_int64_lists_under_the_writers_column_names() -> None:
    batch = list_batch([10, 11], [[5, 4], []])
    assert batch.schema.names == ["user_id", "item_ids"]
    assert batch.schema.field("item_ids").type == pa.list_(pa.int64())
    assert batch.column(0).to_pylist() == [10, 11]
    assert batch.column(1).to_pylist() == [[5, 4], []]
    empty = list_batch([1, 2], [[], []])
    assert empty.schema.field("item_ids").type == pa.list_(pa.int64())
    assert empty.column(1).to_pylist() == [[], []]


def test_arrow_user_ids_are_taken_as_they_are() -> None:
    ids = pa.array(["u-1", "u-2"], type=pa.large_string())
    batch = list_batch(ids, [[1], [2]])
    assert batch.column(0).type == pa.large_string()
    assert batch.column(0).to_pylist() == ["u-1", "u-2"]
    numbers = list_batch(pa.array([7, None], type=pa.int32()), [[1], [2]])
    assert numbers.column(0).type == pa.int32()
    assert numbers.column(0).to_pylist() == [7, None]


def test_a_pandas_list_column_is_a_valid_input() -> None:
    # ``Series.to_numpy()`` of a column of lists is a 1-D object array of lists
    lists = np.empty(3, dtype=object)
    lists[:] = [[3, 2, 1], [], [9]]
    batch = list_batch(np.array([1, 2, 3]), lists)
    assert batch.column(1).to_pylist() == [[3, 2, 1], [], [9]]
    assert encode_list_array(batch.column(1)).to_pylist() == [
        encode_items([3, 2, 1]),
        b"",
        encode_items([9]),
    ]


def test_signed_and_unsigned_lists_mix_without_losing_an_id() -> None:
    rows = [np.array([MAX_ITEM_ID, 1], dtype=np.uint64), np.array([2], dtype=np.int64)]
    batch = list_batch([1, 2], rows)
    assert batch.column(1).to_pylist() == [[MAX_ITEM_ID, 1], [2]]
    assert batch.column(1).type == pa.list_(pa.int64())
    uints = list_batch([1], [np.array([2**63 - 1], dtype=np.uint64)])
    assert uints.column(1).to_pylist() == [[2**63 - 1]]  # kept exactly ...
    with pytest.raises(ValueError, match=exactly(f"{RANGE}; got range [{2**63 - 1}, {2**63 - 1}]")):
        encode_list_array(uints.column(1))  # ... so that the encoder refuses it


def test_ids_beyond_float_precision_are_kept_exactly_when_signed_and_unsigned_mix() -> None:
    rows = [np.array([2**53 + 1], dtype=np.uint64), np.array([3], dtype=np.int64)]
    batch = list_batch([1, 2], rows)
    assert batch.column(1).to_pylist() == [[2**53 + 1], [3]]
    with pytest.raises(ValueError, match=exactly(f"{RANGE}; got range [3, {2**53 + 1}]")):
        encode_list_array(batch.column(1))


def test_categorical_user_ids_become_plain_text_keys() -> None:
    import pandas as pd

    batch = list_batch(pd.Categorical(["u-1", "u-2", "u-1"]), [[1], [2], [3]])
    assert batch.column(0).type == pa.string()
    assert user_key_array("rf", "home", "v1", batch.column(0)).to_pylist() == [
        b"rf:home:v:v1:u:u-1",
        b"rf:home:v:v1:u:u-2",
        b"rf:home:v:v1:u:u-1",
    ]


@pytest.mark.parametrize(
    "big", [np.array([1, 2**63], dtype=np.uint64), np.array([2**64 - 1, 0], dtype=np.uint64)]
)
def test_an_unsigned_id_beyond_int64_is_refused_not_wrapped(big: np.ndarray) -> None:
    with pytest.raises(ValueError, match=exactly(RANGE)):
        list_batch([1, 2], [[1], big])


def test_batch_inputs_are_checked_with_their_own_message() -> None:
    with pytest.raises(ValueError, match=exactly("3 user ids but 2 lists")):
        list_batch([1, 2, 3], [[1], [2]])
    with pytest.raises(ValueError, match=exactly("each list must be one-dimensional")):
        list_batch([1], [[[1, 2]]])
    with pytest.raises(ValueError, match=exactly("each list must be one-dimensional")):
        list_batch([1, 2], np.zeros((2, 2, 2), dtype=np.int64))
    with pytest.raises(
        ValueError, match=exactly("item ids must be integers, got dtype kinds ['f', 'i']")
    ):
        list_batch([1, 2], [[1], [1.5]])
    with pytest.raises(
        ValueError, match=exactly("item ids must be integers, got dtype kinds ['U', 'f']")
    ):
        list_batch([1, 2, 3], [[1.5], ["a"], []])


def test_list_encoding_refuses_what_is_not_a_list_of_integers() -> None:
    with pytest.raises(
        ValueError, match=exactly("item lists must be an Arrow list column, got int64")
    ):
        encode_list_array(pa.array([1, 2]))
    with pytest.raises(ValueError, match=exactly("item ids must be integers, got double")):
        encode_list_array(pa.array([[1.0]], type=pa.list_(pa.float64())))
    null = exactly("item lists must not be null or contain null ids")
    with pytest.raises(ValueError, match=null):
        encode_list_array(pa.array([[1], None], type=pa.list_(pa.int64())))
    with pytest.raises(ValueError, match=null):
        encode_list_array(pa.array([[1, None]], type=pa.list_(pa.int64())))


def test_list_encoding_refuses_to_run_on_a_big_endian_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoding, "sys", SimpleNamespace(byteorder="big"))
    with pytest.raises(
        RuntimeError, match=exactly("the u32le encoder relies on a little-endian machine")
    ):
        encode_list_array(pa.array([[1]], type=pa.list_(pa.int64())))


@pytest.mark.parametrize("value_type", [pa.uint32(), pa.int64(), pa.int32(), pa.uint64()])
def test_a_sliced_list_column_encodes_only_its_own_lists(value_type: pa.DataType) -> None:
    column = pa.array([[1, 2], [3], [4, 5, 6], [7]], type=pa.list_(value_type)).slice(1, 2)
    assert encode_list_array(column).to_pylist() == [
        b"\x03\x00\x00\x00",
        b"\x04\x00\x00\x00\x05\x00\x00\x00\x06\x00\x00\x00",
    ]


def test_list_encoding_keeps_the_offset_width_of_its_input() -> None:
    small = encode_list_array(pa.array([[1], []], type=pa.list_(pa.int32())))
    large = encode_list_array(pa.array([[1], []], type=pa.large_list(pa.int32())))
    assert (small.type, large.type) == (pa.binary(), pa.large_binary())
    assert small.to_pylist() == large.to_pylist() == [b"\x01\x00\x00\x00", b""]


# --------------------------------------------------------------------------- stored values


def test_a_batch_without_stored_values_has_its_lists_encoded() -> None:
    batch = list_batch([1, 2], [[1001, 77, 5], []])
    assert batch_values(batch).to_pylist() == [bytes.fromhex("e90300004d00000005000000"), b""]


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_stored_values_of_whole_uint32s_are_used_as_they_are(kind: pa.DataType) -> None:
    values = pa.array([b"", b"\x01\x00\x00\x00", b"\x00" * 8], type=kind)
    batch = pa.record_batch({"user_id": [1, 2, 3], VALUE_COLUMN: values})
    assert batch_values(batch).equals(values)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 6, 7, 9])
def test_a_stored_value_that_is_not_whole_uint32s_is_refused(size: int) -> None:
    batch = pa.record_batch(
        {"user_id": [1, 2], VALUE_COLUMN: pa.array([b"\x00" * 4, b"\x00" * size])}
    )
    with pytest.raises(
        ValueError, match=exactly("items_u32le values must be non-null multiples of 4 bytes")
    ):
        batch_values(batch)


def test_a_null_or_text_stored_value_is_refused() -> None:
    null = pa.record_batch({"user_id": [1, 2], VALUE_COLUMN: pa.array([b"\x00" * 4, None])})
    with pytest.raises(
        ValueError, match=exactly("items_u32le values must be non-null multiples of 4 bytes")
    ):
        batch_values(null)
    text = pa.record_batch({"user_id": [1], VALUE_COLUMN: pa.array(["abcd"])})
    with pytest.raises(ValueError, match=exactly("items_u32le must be binary, got string")):
        batch_values(text)


# --------------------------------------------------------------------------- keys and MSET


def test_user_keys_in_bulk_are_the_documented_keys() -> None:
    version = "20240105-792c6b90c3"
    ints = user_key_array("rf", "home", version, pa.array([42, -7, 0], type=pa.int64()))
    assert ints.to_pylist() == [
        b"rf:home:v:20240105-792c6b90c3:u:42",
        b"rf:home:v:20240105-792c6b90c3:u:-7",
        b"rf:home:v:20240105-792c6b90c3:u:0",
    ]
    text = user_key_array("rf", "home", version, pa.array(["a", "u-7"], type=pa.large_string()))
    assert text.to_pylist() == [
        b"rf:home:v:20240105-792c6b90c3:u:a",
        b"rf:home:v:20240105-792c6b90c3:u:u-7",
    ]
    assert user_key_array("rf", "home", version, pa.array([], type=pa.string())).to_pylist() == []


def test_bad_user_ids_in_bulk_are_refused_with_their_message() -> None:
    with pytest.raises(ValueError, match=exactly("user ids must not be null")):
        user_key_array("rf", "home", "v", pa.array(["a", None]))
    with pytest.raises(ValueError, match=exactly("string user ids must not be empty")):
        user_key_array("rf", "home", "v", pa.array(["", "b"], type=pa.large_string()))
    with pytest.raises(
        ValueError, match=exactly("user ids must be integers or strings, got double")
    ):
        user_key_array("rf", "home", "v", pa.array([1.5]))


def test_mset_arguments_are_resp_bulk_strings() -> None:
    keys = pa.array([b"rf:home:v:1:u:42", b"k"])
    values = pa.array([bytes.fromhex("e90300004d00000005000000"), b""])
    assert mset_arguments(keys, values).to_pylist() == [
        b"$16\r\nrf:home:v:1:u:42\r\n$12\r\n" + bytes.fromhex("e90300004d00000005000000") + b"\r\n",
        b"$1\r\nk\r\n$0\r\n\r\n",
    ]


def test_mset_arguments_stay_large_when_either_side_is_large() -> None:
    small = pa.array([b"k"])
    large = pa.array([b"\x01\x00\x00\x00"], type=pa.large_binary())
    for keys, values in ((small, large), (large, small), (large, large)):
        arguments = mset_arguments(keys, values)
        assert arguments.type == pa.large_binary()
    assert mset_arguments(small, small).type == pa.binary()
    assert mset_arguments(small, large).to_pylist() == [b"$1\r\nk\r\n$4\r\n\x01\x00\x00\x00\r\n"]


def test_mset_arguments_name_both_counts_when_they_differ() -> None:
    with pytest.raises(ValueError, match=exactly("need as many keys as values: 2/1")):
        mset_arguments(pa.array([b"a", b"b"]), pa.array([b"x"]))


def test_one_pair_per_command_is_allowed_and_zero_is_refused() -> None:
    arguments = mset_arguments(pa.array([b"a", b"b"]), pa.array([b"1", b"2"]))
    assert framed(mset_commands(arguments, 1)) == [
        b"*3\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n",
        b"*3\r\n$4\r\nMSET\r\n$1\r\nb\r\n$1\r\n2\r\n",
    ]
    for pairs in (0, -1):
        with pytest.raises(ValueError, match=exactly("pairs_per_command must be at least 1")):
            list(mset_commands(arguments, pairs))


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_mset_commands_of_a_sliced_batch_send_only_its_pairs(kind: pa.DataType) -> None:
    keys = pa.array([b"a", b"bb", b"c", b"dd", b"e"], type=kind)
    values = pa.array([b"1", b"22", b"", b"4444", b"5"], type=kind)
    arguments = mset_arguments(keys, values).slice(1, 3)  # bb, c, dd
    assert framed(mset_commands(arguments, 2)) == [
        b"*5\r\n$4\r\nMSET\r\n$2\r\nbb\r\n$2\r\n22\r\n$1\r\nc\r\n$0\r\n\r\n",
        b"*3\r\n$4\r\nMSET\r\n$2\r\ndd\r\n$4\r\n4444\r\n",
    ]
    assert framed(mset_commands(arguments, 10)) == [
        b"*7\r\n$4\r\nMSET\r\n$2\r\nbb\r\n$2\r\n22\r\n$1\r\nc\r\n$0\r\n\r\n$2\r\ndd\r\n$4\r\n4444\r\n"
    ]
    assert framed(mset_commands(arguments.slice(0, 0), 2)) == []


def test_mset_commands_cover_every_pair_exactly_once() -> None:
    keys = pa.array([f"k{i}".encode() for i in range(7)])
    values = pa.array([encode_items([i]) for i in range(7)])
    commands = framed(mset_commands(mset_arguments(keys, values), 3))
    assert [c.split(b"\r\n", 1)[0] for c in commands] == [b"*7", b"*7", b"*3"]
    body = b"".join(c.split(b"MSET\r\n", 1)[1] for c in commands)
    assert body == b"".join(mset_arguments(keys, values).to_pylist())

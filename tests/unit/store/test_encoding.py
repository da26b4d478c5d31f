"""Key bytes and value encoding of the Redis serving store (pure: no server)."""

from __future__ import annotations

import re
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from rankflow.store.commands import lua_source
from rankflow.store.encoding import (
    batch_values,
    decode_items,
    encode_items,
    encode_list_array,
    encode_runs,
    hset_stream,
    list_batch,
    mset_arguments,
    mset_commands,
    user_key_array,
)
from rankflow.store.keys import (
    check_name,
    current_key,
    fallback_key,
    meta_key,
    namespace,
    new_version_id,
    previous_key,
    user_id_text,
    user_key,
    user_key_pattern,
    versions_key,
)
from rankflow.store.writer import WriteStats


def test_surface_keys_are_exact() -> None:
    assert namespace("rf", "home") == "rf:home"
    assert current_key("rf", "home") == "rf:home:current"
    assert previous_key("rf", "home") == "rf:home:previous"
    assert versions_key("rf", "home") == "rf:home:versions"


def test_version_keys_are_exact() -> None:
    version = "20240105-0a1b2c3d4e"
    assert meta_key("rf", "home", version) == "rf:home:v:20240105-0a1b2c3d4e:meta"
    assert fallback_key("rf", "home", version) == "rf:home:v:20240105-0a1b2c3d4e:fallback"
    assert user_key("rf", "home", version, 42) == "rf:home:v:20240105-0a1b2c3d4e:u:42"
    assert user_key("rf", "home", version, "u-7") == "rf:home:v:20240105-0a1b2c3d4e:u:u-7"
    assert user_key_pattern("rf", "home", version) == "rf:home:v:20240105-0a1b2c3d4e:u:*"


@pytest.mark.parametrize(
    "user_ids",
    [
        np.array([0, 7, 123456789012, -3], dtype=np.int64),
        np.array([1, 2, 4_000_000_000], dtype=np.uint32),
        [5, 6, 7],
        np.array(["a", "user:9", "é"]),
        ["x", "y"],
    ],
)
def test_bulk_user_keys_match_the_single_key_function(user_ids: object) -> None:
    bulk = user_key_array("rf", "home", "v1", pa.array(np.asarray(user_ids))).to_pylist()
    single = [user_key("rf", "home", "v1", u).encode() for u in np.asarray(user_ids).tolist()]
    assert bulk == single


def test_integer_user_ids_are_plain_decimal_whatever_their_dtype() -> None:
    ids = pa.array(np.array([12], dtype=np.int16))
    assert user_key_array("rf", "s", "v", ids).to_pylist() == [b"rf:s:v:v:u:12"]
    assert user_id_text(np.int64(-5)) == "-5"
    assert user_id_text(np.uint64(2**63)) == str(2**63)


@pytest.mark.parametrize("bad", [True, "", 1.5, None, b"1"])
def test_user_ids_must_be_int_or_non_empty_str(bad: object) -> None:
    with pytest.raises(TypeError):
        user_id_text(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "a:b", "a*", "h?", "[x]", "{home}", "a b", "ü"])
def test_key_segments_reject_separators_and_glob_characters(bad: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        current_key("rf", bad)
    with pytest.raises(ValueError, match="must match"):
        meta_key("rf", "home", bad)
    with pytest.raises(ValueError, match="must match"):
        namespace(bad, "home")


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (pa.array([1, None]), "must not be null"),
        (pa.array(["a", ""]), "must not be empty"),
        (pa.array([1.5]), "integers or strings"),
    ],
)
def test_bulk_user_keys_reject_bad_ids(ids: pa.Array, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        user_key_array("rf", "home", "v", ids)


def test_items_are_little_endian_uint32_in_rank_order() -> None:
    assert encode_items([1, 256, 2**32 - 1]) == (
        b"\x01\x00\x00\x00" + b"\x00\x01\x00\x00" + b"\xff\xff\xff\xff"
    )
    assert encode_items(np.array([3, 1], dtype=">i8")) == b"\x03\x00\x00\x00\x01\x00\x00\x00"


def test_encoding_round_trips_and_keeps_order() -> None:
    ids = [9, 0, 4_000_000_000, 12, 12]
    value = encode_items(ids)
    assert len(value) == 4 * len(ids)
    assert decode_items(value) == ids
    assert all(type(i) is int for i in decode_items(value))


def test_empty_list_encodes_to_empty_bytes() -> None:
    assert encode_items([]) == b""
    assert decode_items(b"") == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([-1, 2], "fit in uint32"),
        ([2**32], "fit in uint32"),
        (np.array([1, 2**40], dtype=np.uint64), "fit in uint32"),
        ([1.0, 2.0], "must be integers"),
        ([1, float("nan")], "must be integers"),
        ([True, False], "must be integers"),
        (["1"], "must be integers"),
        ([2**70], "must be integers"),
        ([[1, 2], [3, 4]], "one-dimensional"),
    ],
)
def test_invalid_item_ids_are_rejected_clearly(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_items(bad)  # type: ignore[arg-type]


def test_decode_rejects_a_value_that_is_not_whole_uint32s() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        decode_items(b"\x01\x00\x00")


def encoded(item_lists: object) -> list[bytes]:
    """Encode lists the way the writers do: Arrow list column -> u32le binary column."""
    return encode_list_array(
        list_batch(np.arange(len(item_lists)), item_lists).column(1)
    ).to_pylist()  # type: ignore[arg-type]


def test_bulk_encoding_of_a_matrix_matches_row_by_row() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 2**32, size=(50, 7), dtype=np.uint64)
    assert encoded(matrix) == [encode_items(row) for row in matrix]


def test_bulk_encoding_of_ragged_lists_matches_one_by_one() -> None:
    lists = [[5, 4, 3], [], np.array([2**32 - 1], dtype=np.int64), [0, 0]]
    assert encoded(lists) == [encode_items(row) for row in lists]
    assert [decode_items(v) for v in encoded(lists)] == [[5, 4, 3], [], [2**32 - 1], [0, 0]]


def test_bulk_encoding_of_a_sliced_column_starts_at_the_slice() -> None:
    column = pa.array([[1, 2], [3], [4, 5, 6]], type=pa.list_(pa.int64())).slice(1)
    assert encode_list_array(column).to_pylist() == [
        encode_items([3]),
        encode_items([4, 5, 6]),
    ]


def test_bulk_encoding_edge_shapes() -> None:
    assert encoded([]) == []
    assert encoded([[], []]) == [b"", b""]
    assert encoded(np.zeros((3, 0), dtype=np.int64)) == [b"", b"", b""]


@pytest.mark.parametrize(
    "bad", [np.array([[1, -2]]), [[1], [2**32]], [[1.5]], np.array([[0.0, 1.0]]), [[2**64 - 1]]]
)
def test_bulk_encoding_validates_every_id(bad: object) -> None:
    with pytest.raises(ValueError, match=r"uint32|integers"):
        encoded(bad)


def test_run_encoding_matches_one_by_one_and_checks_its_starts() -> None:
    flat = np.array([9, 8, 7, 6, 5], dtype=np.int64)
    assert encode_runs(flat, [0, 2, 2]).to_pylist() == [
        encode_items([9, 8]),
        b"",
        encode_items([7, 6, 5]),
    ]
    assert encode_runs(flat, [0, 5]).to_pylist() == [encode_items(flat), b""]  # a last, empty run
    assert encode_runs(flat[:0], []).to_pylist() == []
    # without these checks the runs would silently come out empty or cut
    for starts in ([1, 3], [0, 3, 2], [0, 6], [0, 2, 9]):
        with pytest.raises(ValueError, match="run starts"):
            encode_runs(flat, starts)
    with pytest.raises(ValueError, match="fit in uint32"):
        encode_runs(np.array([-1]), [0])


def test_stored_values_are_taken_as_they_are_when_whole_uint32s() -> None:
    good = pa.record_batch({"user_id": [1], "items_u32le": pa.array([b"\x01\x00\x00\x00"])})
    bad = pa.record_batch({"user_id": [1], "items_u32le": pa.array([b"\x01\x00"])})
    assert batch_values(good).to_pylist() == [b"\x01\x00\x00\x00"]
    with pytest.raises(ValueError, match="multiples of 4 bytes"):
        batch_values(bad)


def test_mset_commands_are_exact_resp() -> None:
    keys = pa.array([b"k1", b"key2", b"k3"], type=pa.binary())
    values = pa.array([b"\x00\x01", b"", b"abc"], type=pa.binary())
    commands = [
        b"".join(bytes(c) for c in cmd) for cmd in mset_commands(mset_arguments(keys, values), 2)
    ]
    assert commands == [
        b"*5\r\n$4\r\nMSET\r\n$2\r\nk1\r\n$2\r\n\x00\x01\r\n$4\r\nkey2\r\n$0\r\n\r\n",
        b"*3\r\n$4\r\nMSET\r\n$2\r\nk3\r\n$3\r\nabc\r\n",
    ]


def test_hset_stream_gives_each_bucket_its_run_of_pairs_as_exact_resp() -> None:
    fields = pa.array([b"7", b"15", b"4"], type=pa.binary())
    values = pa.array([b"\x00\x01", b"ab", b"xyz"], type=pa.binary())
    arguments = mset_arguments(fields, values)
    data, ends = hset_stream(arguments, b"b:", np.array([7, 4]), np.array([0, 2, 3]))
    first = (
        b"*6\r\n$4\r\nHSET\r\n$3\r\nb:7\r\n$1\r\n7\r\n$2\r\n\x00\x01\r\n$2\r\n15\r\n$2\r\nab\r\n"
    )
    second = b"*4\r\n$4\r\nHSET\r\n$3\r\nb:4\r\n$1\r\n4\r\n$3\r\nxyz\r\n"
    assert data.to_pybytes() == first + second
    assert ends.tolist() == [len(first), len(first) + len(second)]


def test_hset_stream_takes_sliced_arguments_and_refuses_empty_runs() -> None:
    fields = pa.array([b"0", b"1", b"2", b"3"], type=pa.binary())
    values = pa.array([b"a", b"bb", b"ccc", b"dddd"], type=pa.binary())
    whole = mset_arguments(fields, values)
    data, ends = hset_stream(whole.slice(1), b"k:", np.array([1, 2]), np.array([0, 1, 3]))
    assert data.to_pybytes() == (
        b"*4\r\n$4\r\nHSET\r\n$3\r\nk:1\r\n$1\r\n1\r\n$2\r\nbb\r\n"
        b"*6\r\n$4\r\nHSET\r\n$3\r\nk:2\r\n$1\r\n2\r\n$3\r\nccc\r\n$1\r\n3\r\n$4\r\ndddd\r\n"
    )
    assert int(ends[-1]) == data.size
    with pytest.raises(ValueError, match="non-empty run"):
        hset_stream(whole, b"k:", np.array([1, 2]), np.array([0, 0, 4]))


def test_mset_arguments_need_pairs() -> None:
    with pytest.raises(ValueError, match="as many keys as values"):
        mset_arguments(pa.array([b"a"]), pa.array([], type=pa.binary()))


def test_version_ids_sort_by_ds_and_are_safe_key_segments() -> None:
    one = new_version_id(date(2024, 1, 9), "scheduled__2024-01-09T00:00:00+00:00")
    two = new_version_id(date(2024, 1, 10))
    assert re.fullmatch(r"20240109-[0-9a-f]{10}", one)
    assert re.fullmatch(r"20240110-[0-9a-f]{10}", two)
    assert sorted([two, one]) == [one, two]
    assert check_name(one, "version") == one


def test_version_ids_are_stable_per_run_and_unique_otherwise() -> None:
    ds = date(2024, 1, 9)
    assert new_version_id(ds, "run-1") == new_version_id(ds, "run-1")
    assert new_version_id(ds, "run-1") != new_version_id(ds, "run-2")
    assert len({new_version_id(ds) for _ in range(100)}) == 100


def test_write_stats_add_up() -> None:
    total = WriteStats(2, 800, 1) + WriteStats(3, 1200, 2)
    assert total == WriteStats(5, 2000, 3)


@pytest.mark.parametrize("name", ["lookup", "begin", "commit", "rollback", "retire"])
def test_lua_scripts_ship_with_the_package(name: str) -> None:
    source = lua_source(name)
    assert "redis.call" in source
    assert source.startswith("#!lua flags=no-writes") == (name == "lookup")


def test_large_arrow_types_frame_like_the_small_ones() -> None:
    keys = pa.array([b"k1", b"k2"], type=pa.binary())
    lists = pa.array([[1, 2], [3]], type=pa.large_list(pa.int64()))
    values = encode_list_array(lists)
    small = mset_arguments(keys, encode_list_array(pa.array([[1, 2], [3]])))

    assert values.type == pa.large_binary()
    assert mset_arguments(keys, values).to_pylist() == small.to_pylist()
    commands = [b"".join(bytes(c) for c in cmd) for cmd in mset_commands(small, 5)]
    large = mset_arguments(keys, values)
    assert [b"".join(bytes(c) for c in cmd) for cmd in mset_commands(large, 5)] == commands

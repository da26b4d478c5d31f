"""User values encoded in bulk equal values encoded one by one, whatever the maps' key order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rankflow.features.on_demand import MAP_COLUMNS
from rankflow.publish.feature_values import codes_within_rows, user_values
from rankflow.store.vectors import Profile, decode_user, encode_user

FEATURES = ["clicks", "price_mean"]

VOCAB = sorted(["XS", "S", "M", "L", "shoes", "dresses", "bags", "acme", "zeta", "boho", "chic"])


def profile_batch(rng: np.random.Generator, rows: int) -> pa.RecordBatch:
    """Users with random affinities, keys in random order, some maps empty or null."""
    columns: dict[str, pa.Array] = {
        "user_id": pa.array(range(rows), pa.int64()),
        "declared_size": pa.array([rng.choice(["S", "M", None]) for _ in range(rows)]),
        "clicks": pa.array([int(rng.integers(0, 50)) for _ in range(rows)], pa.int64()),
        "price_mean": pa.array([None if rng.random() < 0.2 else rng.random() for _ in range(rows)]),
    }
    for name in MAP_COLUMNS:
        maps = []
        for _ in range(rows):
            if rng.random() < 0.1:
                maps.append(None)
                continue
            keys = rng.permutation(VOCAB)[: rng.integers(0, 5)]
            maps.append([(str(k), float(rng.random())) for k in keys])
        columns[name] = pa.array(maps, pa.map_(pa.string(), pa.float64()))
    return pa.RecordBatch.from_pydict(columns)


def test_bulk_user_values_equal_one_by_one_values() -> None:
    batch = profile_batch(np.random.default_rng(5), 200)
    values = user_values(batch, FEATURES, pa.array(VOCAB)).to_pylist()
    code = {value: i for i, value in enumerate(VOCAB)}
    for row, value in zip(batch.to_pylist(), values, strict=True):
        size = row["declared_size"]
        expected = Profile(
            -1 if size is None else code[size],
            {n: np.array([code[k] for k, _ in row[n] or []], np.int64) for n in MAP_COLUMNS},
            {n: np.array([s for _, s in row[n] or []], np.float32) for n in MAP_COLUMNS},
        )
        price = np.nan if row["price_mean"] is None else row["price_mean"]
        vector = np.array([row["clicks"], price], np.float32)
        assert value == encode_user(vector, expected, MAP_COLUMNS)
        got_vector, decoded = decode_user(value, len(FEATURES), MAP_COLUMNS)
        assert np.array_equal(got_vector, vector, equal_nan=True)
        assert all(np.all(np.diff(decoded.codes[n]) > 0) for n in MAP_COLUMNS)


def test_codes_already_in_order_within_rows_need_no_sort() -> None:
    counts = np.array([2, 0, 3])
    assert codes_within_rows(np.array([1, 4, 0, 2, 9]), counts) is None
    order = codes_within_rows(np.array([4, 1, 9, 2, 0]), counts)
    assert order is not None
    assert np.array([4, 1, 9, 2, 0])[order].tolist() == [1, 4, 0, 2, 9]


def test_a_value_missing_from_the_vocabulary_is_refused() -> None:
    batch = profile_batch(np.random.default_rng(1), 20)
    with pytest.raises(ValueError, match="missing from the vocabulary"):
        user_values(batch, FEATURES, pa.array(["S", "M"]))


def test_a_user_value_shorter_than_its_vector_is_refused() -> None:
    with pytest.raises(ValueError, match="starts with 8 bytes of vector"):
        decode_user(b"\x00" * 4, len(FEATURES), MAP_COLUMNS)

"""The serving log's pure parts: the record round trip, the user sample, the day's id slices."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

import numpy as np

from rankflow.serving.log import (
    RECORD_FIELD,
    ServedRecord,
    decode_record,
    floats_bytes,
    ids_bytes,
    vectors_sampled,
)
from rankflow.stream.drain import day_slices, day_start_ms, entries_batch


def record(**changes: object) -> ServedRecord:
    fields: dict[str, object] = {
        "request_id": "r1", "ts_ms": 1, "user_id": 7, "surface": "home", "k": 2,
        "candidates": ids_bytes([3, 1, 2]), "item_ids": ids_bytes([1, 3]),
        "scores": floats_bytes([0.5, 0.25]), "model_version": "4", "feature_version": "f",
        "fallback": False, "reason": None, "scored_ids": ids_bytes([1, 3]),
        "scored_scores": floats_bytes([0.5, 0.25]),
        "inputs": floats_bytes(np.arange(6, dtype=np.float32)),
    }  # fmt: skip
    fields.update(changes)
    return ServedRecord(**fields)  # type: ignore[arg-type]


def test_a_record_survives_the_stream_and_decodes_into_rows() -> None:
    import msgspec

    payload = msgspec.msgpack.encode(record())
    assert decode_record(payload) == record()
    batch = entries_batch([(b"1764892800000-0", {RECORD_FIELD: payload})]).to_pylist()
    (row,) = batch
    assert row["error"] is None
    assert row["candidate_ids"] == [3, 1, 2]
    assert row["item_ids"] == [1, 3]
    assert row["scores"] == [0.5, 0.25]
    assert row["scored_ids"] == [1, 3]
    assert np.frombuffer(row["inputs"], "<f4").tolist() == [0, 1, 2, 3, 4, 5]
    assert row["ts"] == datetime(2025, 12, 5, tzinfo=UTC)


def test_undecodable_entries_are_kept_with_the_reason_not_dropped() -> None:
    import msgspec

    uneven = msgspec.msgpack.encode(record(scored_scores=floats_bytes([0.5])))
    entries = [
        (b"1-0", {RECORD_FIELD: b"\xc1 not msgpack"}),
        (b"2-0", {b"other": b"x"}),
        (b"3-0", {RECORD_FIELD: uneven}),
    ]
    rows = entries_batch(entries).to_pylist()
    assert [r["stream_id"] for r in rows] == ["1-0", "2-0", "3-0"]
    assert all(r["error"] for r in rows)
    assert rows[0]["payload"] == b"\xc1 not msgpack"
    assert "no 'r' field" in rows[1]["error"]
    assert "do not match" in rows[2]["error"]


def test_the_vector_sample_is_stable_and_near_its_share() -> None:
    users = range(200_000)
    picked = [u for u in users if vectors_sampled(u, 5.0, 17)]
    assert 0.045 < len(picked) / len(users) < 0.055
    assert picked == [u for u in users if vectors_sampled(u, 5.0, 17)]
    assert picked != [u for u in users if vectors_sampled(u, 5.0, 18)]
    assert not any(vectors_sampled(u, 0.0, 17) for u in range(1000))
    assert all(vectors_sampled(u, 100.0, 17) for u in range(1000))


def test_a_day_is_cut_into_slices_that_cover_it_exactly() -> None:
    slices = day_slices(date(2026, 12, 5), 96)
    assert len(slices) == 96
    assert slices[0][0] == day_start_ms(date(2026, 12, 5))
    assert slices[-1][1] == day_start_ms(date(2026, 12, 6))
    assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))

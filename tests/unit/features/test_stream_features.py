"""The stream features' one reduction: windows, cutoffs, exact-or-missing day counters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankflow.features.stream import cutoff_ms, session_features, today_features
from rankflow.quality.raw import EVENT_TYPES
from rankflow.store.fresh import (
    SLOTS,
    USER_ENTRY,
    ItemDay,
    day_as_of,
    decode_item_day,
    decode_recent,
    encode_item_day,
)

T = 1_765_000_000_000  # ms, a whole second
WINDOW = 1_800_000
CATEGORY = {11: 1, 12: 1, 13: 2, 14: 3}
BRAND = {11: 7, 12: 8, 13: 7, 14: -1}


def attributes(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([CATEGORY.get(int(i), -1) for i in items], np.int64),
        np.array([BRAND.get(int(i), -1) for i in items], np.int64),
    )


def code(name: str) -> int:
    return EVENT_TYPES.index(name)


def features(events: list[tuple[int, int, str]], cutoff: int) -> dict[str, np.ndarray]:
    ts = np.array([e[0] for e in events], np.int64)
    items = np.array([e[1] for e in events], np.int64)
    kinds = np.array([code(e[2]) for e in events], np.uint8)
    candidates = np.array([11, 13, 14, 99])
    category, brand = attributes(candidates)
    return session_features(ts, items, kinds, cutoff, WINDOW, candidates, category, brand,
                            attributes)  # fmt: skip


def test_the_cutoff_is_whole_seconds_minus_the_lag() -> None:
    assert cutoff_ms(T + 999, 1) == T - 1000
    assert cutoff_ms(T, 0) == T


def test_session_features_count_the_window_before_the_cutoff_only() -> None:
    cutoff = T
    events = [
        (T - 5_000, 12, "click"),  # category 1, brand 8
        (T - 4_000, 13, "save"),  # category 2, brand 7
        (T - 3_000, 11, "impression"),
        (T - 2_000, 11, "impression"),
        (T - 1, 11, "purchase"),  # last positive
        (T, 11, "click"),  # at the cutoff: left out
        (T - WINDOW - 1, 13, "click"),  # before the window: left out
        (T - 100, 55, "like"),  # an item of unknown attributes: counts for nothing but recency
    ]
    got = features(events, cutoff)
    np.testing.assert_array_equal(got["sess_pos_category"], [2, 1, 0, 0])  # 11,12 | 13 | 14 | ?
    np.testing.assert_array_equal(got["sess_pos_brand"], [2, 2, 0, 0])  # brand 7: 11 and 13
    np.testing.assert_array_equal(got["sess_seen"], [2, 0, 0, 0])
    np.testing.assert_allclose(got["sess_secs_since_pos"], [0.001] * 4)
    assert all(v.dtype == np.float32 for v in got.values())


def test_no_positive_in_the_window_is_nan_since_and_zero_counts() -> None:
    got = features([(T - 10, 11, "impression")], T)
    assert np.isnan(got["sess_secs_since_pos"]).all()
    np.testing.assert_array_equal(got["sess_pos_category"], [0, 0, 0, 0])
    np.testing.assert_array_equal(got["sess_seen"], [1, 0, 0, 0])


def test_recent_events_decode_from_their_packed_bytes() -> None:
    rows = np.zeros(2, USER_ENTRY)
    rows["ts_ms"] = [T, T + 5]
    rows["item_id"] = [3, 4]
    rows["event_type"] = [0, 1]
    decoded = decode_recent(rows.tobytes())
    assert decoded["item_id"].tolist() == [3, 4]
    assert decode_recent(None).size == 0


def test_day_counters_round_trip_and_leave_out_the_seconds_at_or_after_the_cutoff() -> None:
    day = ItemDay((5, 2, 1), 100, ((101, 1, 0, 0), (103, 2, 1, 0), (102, 0, 0, 1), (-1, 0, 0, 0)))
    assert decode_item_day(encode_item_day(day)) == day
    assert day.as_of(104) == (8, 3, 2)
    assert day.as_of(103) == (6, 2, 2)
    assert day.as_of(101) == (5, 2, 1)
    assert day.as_of(100) is None  # the base holds second 100: not knowable
    assert decode_item_day(None).as_of(0) == (0, 0, 0)


def test_the_day_read_for_a_cutoff_is_that_of_its_last_counted_millisecond() -> None:
    midnight = 1_765_152_000_000  # 2025-12-08 00:00 UTC
    assert day_as_of(midnight) == ("20251207", 86_400)  # the day that just ended, whole
    assert day_as_of(midnight + 1_000) == ("20251208", 1)
    assert day_as_of(midnight - 59_000) == ("20251207", 86_341)


def test_unknowable_counters_are_missing_not_zero() -> None:
    got = today_features([(1, 2, 3), None])
    np.testing.assert_array_equal(got["today_impressions"][:1], [1])
    assert np.isnan(got["today_clicks"][1])


def fold(seconds: list[tuple[int, int]]) -> ItemDay:
    """The Lua script's slot rule in Python (the integration test checks the two agree)."""
    base = [0, 0, 0]
    base_second = -1
    slots: dict[int, list[int]] = {}
    for second, counter in seconds:
        if second in slots:
            slots[second][counter] += 1
        elif len(slots) < SLOTS:
            slots[second] = [0, 0, 0]
            slots[second][counter] += 1
        elif second > min(slots):
            oldest = min(slots)
            base = [a + b for a, b in zip(base, slots.pop(oldest), strict=True)]
            base_second = max(base_second, oldest)
            slots[second] = [0, 0, 0]
            slots[second][counter] += 1
        else:
            base[counter] += 1
            base_second = max(base_second, second)
    return ItemDay((base[0], base[1], base[2]), base_second,
                   tuple((s, *v) for s, v in sorted(slots.items())))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2)), max_size=60))
def test_counters_are_exact_or_missing_for_every_cutoff(seconds: list[tuple[int, int]]) -> None:
    day = fold(seconds)
    distinct = sorted({s for s, _ in seconds})
    for cutoff in range(0, 43):
        truth = [sum(1 for s, c in seconds if s < cutoff and c == k) for k in range(3)]
        got = day.as_of(cutoff)
        assert got is None or list(got) == truth
        # exact whenever the cutoff is after the SLOTS-th latest distinct second (in order)
        if seconds == sorted(seconds, key=lambda e: e[0]) and (
            len(distinct) < SLOTS or cutoff > distinct[-SLOTS]
        ):
            assert got is not None


@pytest.mark.parametrize("lag", [0, 1])
def test_cutoffs_never_count_the_request_second(lag: int) -> None:
    assert cutoff_ms(T + 500, lag) <= T

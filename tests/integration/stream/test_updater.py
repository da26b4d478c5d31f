"""The stream updater on a real Redis, over Redis Streams and Kafka: state, counted once, a kill.

The fresh state lives in Redis on both backends; the log is a Redis stream per partition or a
Kafka topic of two partitions (``conftest.Backend``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rankflow.quality.live import Listing, LiveEvent
from rankflow.store.fresh import (
    SLOTS,
    ItemDay,
    applied_key,
    day_text,
    decode_item_day,
    decode_recent,
    events_log_key,
    events_quarantine_key,
    item_day_key,
    progress_key,
    sold_key,
    user_recent_key,
)
from rankflow.stream.log import Entry, RedisStreamsLog
from rankflow.stream.updater import Updater, UpdaterConfig, apply_entries

pytestmark = pytest.mark.services

DAY0 = 1_765_065_600_000  # 2025-12-07 00:00 UTC, ms
CONFIG = UpdaterConfig(
    prefix="rft", session_window_seconds=1800, lag_seconds=1, max_recent_events=1024,
    day_ttl_seconds=172_800, id_buckets=64, batch=100, block_ms=20,
)  # fmt: skip


def click(n: int, user: int, item: int, ts: int, kind: int = 1) -> LiveEvent:
    return LiveEvent(f"e{n}", kind, ts, user, item, "home", f"s{user}", 1)


def drain_until(updater: Updater, applied: int, seconds: float = 60.0) -> None:
    """Step until the updater applied ``applied`` entries in all (Kafka may deliver late)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        updater.step()
        done = updater.totals
        if done.applied + done.duplicates + done.listings + done.quarantined >= applied:
            return
    raise AssertionError(f"the updater applied {updater.totals} of {applied} within {seconds} s")


def test_events_become_recent_state_day_counters_and_sales(backend, redis_client) -> None:
    log = backend.log(CONFIG.prefix)
    t = DAY0 + 3_600_000
    log.append([
        click(1, 7, 100, t, kind=0),
        click(2, 7, 100, t + 10, kind=1),
        click(3, 8, 100, t + 1_500, kind=3),  # a like counts as a save
        click(4, 8, 101, t + 2_000, kind=5),  # a purchase: item 101 sold
        Listing(102, 9, t, "dresses", "acme", "good", 20.0),
    ])  # fmt: skip
    updater = Updater(redis_client, backend.reader(CONFIG.prefix), CONFIG)
    drain_until(updater, 5)
    assert updater.totals.applied == 4
    assert updater.totals.listings == 1
    recent = decode_recent(redis_client.get(user_recent_key("rft", 7)))
    assert recent["item_id"].tolist() == [100, 100]
    assert recent["event_type"].tolist() == [0, 1]
    assert recent["ts_ms"].tolist() == [t, t + 10]
    counters = decode_item_day(redis_client.get(item_day_key("rft", day_text(t), 100)))
    second = (t // 1000) % 86_400
    assert counters.as_of(second + 2) == (1, 1, 1)
    assert counters.as_of(second + 1) == (1, 1, 0)  # the like was in the next second
    assert counters.as_of(second) == (0, 0, 0)
    assert redis_client.zrange(sold_key("rft"), 0, -1) == [b"101"]
    assert updater.totals.sold == [101]
    progress = redis_client.hgetall(progress_key("rft"))
    assert {f"{backend.name}:0".encode(), f"{backend.name}:1".encode()} & progress.keys()


def test_a_record_logged_twice_or_read_twice_is_counted_once(redis_client) -> None:
    t = DAY0 + 7_200_000
    events = [click(n, 7, 100, t + n) for n in range(5)]
    log = RedisStreamsLog(redis_client, "rft", partitions=1, max_length=10_000)
    log.append(events)
    log.append(events[:2])  # a producer's retry: the same event ids again
    entries = [
        Entry(0, (int(i.split(b"-")[0]), int(i.split(b"-")[1])), f[b"r"])
        for i, f in redis_client.xrange(events_log_key("rft", 0))
    ]
    first = apply_entries(redis_client, entries, CONFIG, partition="redis:0", caught_up=True)
    assert (first.applied, first.duplicates, first.replayed) == (5, 2, 0)
    # freshness counts each event once, when first applied: not the retried copies
    assert first.event_ms == [e.ts_ms for e in events]
    again = apply_entries(redis_client, entries, CONFIG, partition="redis:0", caught_up=True)
    assert (again.applied, again.duplicates, again.replayed) == (0, 0, 7)  # a crash's re-read
    assert again.event_ms == []  # nor the entries read again after a restart
    counters = decode_item_day(redis_client.get(item_day_key("rft", day_text(t), 100)))
    assert counters.as_of(86_400) == (0, 5, 0)
    assert len(decode_recent(redis_client.get(user_recent_key("rft", 7)))) == 5


def test_an_undecodable_entry_is_quarantined_with_its_reason(backend, redis_client) -> None:
    backend.append_raw("rft", b"not a record")
    updater = Updater(redis_client, backend.reader("rft"), CONFIG)
    drain_until(updater, 1)
    assert updater.totals.quarantined == 1
    ((_, fields),) = redis_client.xrange(events_quarantine_key("rft"))
    assert fields[b"reason"].startswith(b"undecodable record")
    assert fields[b"payload"] == b"not a record"
    assert redis_client.hlen(applied_key("rft")) == 1  # the position moved on


def python_fold(seconds: list[tuple[int, int]]) -> ItemDay:
    """The slot rule of ``fresh_apply.lua``, written again in Python."""
    base, base_second, slots = [0, 0, 0], -1, {}
    for second, counter in seconds:
        if second not in slots and len(slots) >= SLOTS:
            if second > min(slots):
                oldest = min(slots)
                base = [a + b for a, b in zip(base, slots.pop(oldest), strict=True)]
                base_second = max(base_second, oldest)
            else:
                base[counter] += 1
                base_second = max(base_second, second)
                continue
        slots.setdefault(second, [0, 0, 0])[counter] += 1
    return ItemDay((base[0], base[1], base[2]), base_second,
                   tuple((s, *v) for s, v in sorted(slots.items())))  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_the_scripts_day_counters_follow_the_slot_rule(redis_client, seed: int) -> None:
    rng = random.Random(seed)
    seconds = [(rng.randint(0, 12), rng.choice([0, 1, 2])) for _ in range(60)]
    kinds = {0: 0, 1: 1, 2: 2}
    events = [click(n, 7, 100, DAY0 + s * 1000 + n, kinds[c]) for n, (s, c) in enumerate(seconds)]
    entries = [Entry(0, (n + 1, 0), _payload(e)) for n, e in enumerate(events)]
    apply_entries(redis_client, entries, CONFIG, partition="redis:0", caught_up=True)
    stored = decode_item_day(redis_client.get(item_day_key("rft", day_text(DAY0), 100)))
    expected = python_fold(seconds)
    assert stored.base == expected.base
    assert stored.base_second == expected.base_second
    assert sorted(s for s in stored.slots if s[0] >= 0) == sorted(expected.slots)
    for cutoff in range(14):
        truth = tuple(sum(1 for s, c in seconds if s < cutoff and c == k) for k in range(3))
        assert stored.as_of(cutoff) in (None, truth)


def _payload(record: LiveEvent | Listing) -> bytes:
    from rankflow.quality.live import encode_record

    return encode_record(record)


def fresh_state(client: object, prefix: str) -> dict[bytes, bytes]:
    """Every user and item-day value under a prefix, keyed without the prefix."""
    state = {}
    for key in client.scan_iter(match=f"{prefix}:fresh:[ui]:*", count=1000):
        state[key[len(prefix) :]] = client.get(key)
    return state


def applied_ids(client: object, prefix: str) -> int:
    """Event ids applied so far (every applied event's id is in its day's id hash)."""
    return sum(client.hlen(key) for key in client.scan_iter(match=f"{prefix}:fresh:ids:*"))


def test_a_killed_updater_resumes_and_counts_every_event_once(
    backend, redis_client, redis_url: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    n = 30_000
    users = rng.integers(1, 400, n)
    items = rng.integers(1, 300, n)
    kinds = rng.choice([0, 0, 0, 1, 2, 3, 4], n)
    ts = DAY0 + 36_000_000 + np.sort(rng.integers(0, 600_000, n))
    events = [
        LiveEvent(f"k{i}", int(kinds[i]), int(ts[i]), int(users[i]), int(items[i]), "home",
                  "s", 1)
        for i in range(n)
    ]  # fmt: skip
    for prefix in ("rf", "rfb"):
        backend.log(prefix).append(events)
    override = tmp_path / "stream.yaml"
    override.write_text(backend.settings_yaml("rf"))
    env = {**os.environ, "RANKFLOW_CONFIG": str(override), "RANKFLOW_REDIS_URL": redis_url}
    command = [sys.executable, "-m", "rankflow.cli", "stream", "--consumer", "killed"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not redis_client.hlen(applied_key("rf")):
        time.sleep(0.002)  # kill it part of the way through: just after its first batch
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    before = applied_ids(redis_client, "rf")
    assert 0 < before < n, f"the kill must land mid-stream ({before} of {n} applied)"
    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and applied_ids(redis_client, "rf") < n:
            time.sleep(0.1)
        time.sleep(0.5)  # anything applied twice would show now
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=30)
    assert second.returncode == 0, out.decode()
    assert applied_ids(redis_client, "rf") == n
    reference = Updater(redis_client, backend.reader("rfb"), replace(CONFIG, prefix="rfb"))
    drain_until(reference, n)
    assert reference.totals.applied == n
    killed, uninterrupted = fresh_state(redis_client, "rf"), fresh_state(redis_client, "rfb")
    assert killed.keys() == uninterrupted.keys()
    assert len(killed) > 0
    for key, value in killed.items():
        if b":u:" in key:  # a user's events come from one partition, in its order
            assert value == uninterrupted[key]
        else:  # an item's come from both partitions, interleaved differently: same counts
            assert day_total(value) == day_total(uninterrupted[key])


def day_total(value: bytes) -> tuple[int, ...]:
    """An item's counts of the whole day."""
    counts = decode_item_day(value).as_of(86_400)
    assert counts is not None
    return counts


def test_live_sales_keep_the_latest_ones_only(redis_client) -> None:
    small = replace(CONFIG, max_live_sales=500)
    purchases = [click(n, 7, 10_000 + n, DAY0 + n, kind=5) for n in range(2_000)]
    entries = [Entry(0, (n + 1, 0), _payload(e)) for n, e in enumerate(purchases)]
    done = apply_entries(redis_client, entries, small, partition="redis:0", caught_up=True)
    assert len(done.sold) == 2_000
    kept = [int(i) for i in redis_client.zrange(sold_key("rft"), 0, -1)]
    assert kept == list(range(10_000 + 1_500, 10_000 + 2_000))  # the latest 500, in sale order


def test_the_service_sees_a_stale_updater_as_stale(redis_client) -> None:
    from rankflow.serving.live import LiveCatalogue

    live = LiveCatalogue(redis_client, "rft", 0.5, stale_after_ms=5_000, partitions=2)
    live.poll_progress()
    assert live.stale()  # no updater ever reported
    now = int(time.time() * 1000)
    for partition in ("redis:0", "redis:1"):
        apply_entries(redis_client, [], CONFIG, partition=partition, caught_up=True, now_ms=now)
    live.poll_progress()
    assert not live.stale(now + 1_000)
    assert live.stale(now + 6_000)  # not caught up for longer than stale_after


def test_live_listings_are_read_in_pages_and_a_failed_read_is_read_again(
    redis_client, monkeypatch
) -> None:
    """Many listings in pages; a read that fails moves no cursor, so the next poll gets them."""
    from rankflow.features.listings import ListingContext
    from rankflow.features.registry import AFFINITY_DIMENSIONS, ITEM_FEATURES
    from rankflow.quality.live import encode_record
    from rankflow.serving import live as live_module
    from rankflow.serving.snapshot import ItemSnapshot

    monkeypatch.setattr(live_module, "PAGE", 100)
    listings = [Listing(20_000 + n, 1, DAY0, "c", "b", "good", 10.0) for n in range(450)]
    entries = [Entry(0, (n + 1, 0), encode_record(one)) for n, one in enumerate(listings)]
    apply_entries(redis_client, entries, CONFIG, partition="redis:0", caught_up=True)
    context = ListingContext(DAY0, 20.0, {1: 0.1, 7: 0.1, 28: 0.1}, {"c": 10.0})
    snapshot = ItemSnapshot(
        "fv", "h", np.array([20_000]), np.zeros((1, len(ITEM_FEATURES)), np.float32),
        {d: np.zeros(1, np.int64) for d in AFFINITY_DIMENSIONS}, np.zeros(1, bool), ["b", "c"],
        list(ITEM_FEATURES), context,
    )  # fmt: skip
    live = live_module.LiveCatalogue(redis_client, "rft", 0.5)
    live.follow(snapshot)
    held = np.concatenate([t.item_ids for t in live.listed_for(snapshot)])
    assert sorted(held.tolist()) == list(range(20_001, 20_450))  # all but the snapshot's own

    more = [Listing(30_000 + n, 1, DAY0, "c", "b", "good", 10.0) for n in range(3)]
    entries = [Entry(0, (500 + n, 0), encode_record(one)) for n, one in enumerate(more)]
    apply_entries(redis_client, entries, CONFIG, partition="redis:0", caught_up=True)
    real_mget = live.client.mget
    monkeypatch.setattr(live.client, "mget", lambda keys: (_ for _ in ()).throw(OSError("away")))
    live._poll_quietly()  # the record read fails: the listings wait
    assert live.failures == 1
    assert max(t.item_ids.max() for t in live.listed_for(snapshot)) < 30_000
    monkeypatch.setattr(live.client, "mget", real_mget)
    live._poll_quietly()
    held = np.concatenate([t.item_ids for t in live.listed_for(snapshot)])
    assert {30_000, 30_001, 30_002} <= set(held.tolist())
    assert live.failures == 0

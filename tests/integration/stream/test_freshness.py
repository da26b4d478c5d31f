"""The stream's freshness: the updater's lag summaries and progress, and the watch's verdict."""

from __future__ import annotations

import json
import time

import pytest

from rankflow.config import Settings
from rankflow.monitoring.freshness import StreamBehind, check_stream, read_freshness
from rankflow.quality.live import LiveEvent
from rankflow.store.fresh import freshness_key, progress_key
from rankflow.stream.log import RedisStreamsLog, RedisStreamsReader
from rankflow.stream.updater import FreshnessMeter, Updater, UpdaterConfig

pytestmark = pytest.mark.services


def updater_of(settings: Settings, redis_client) -> tuple[RedisStreamsLog, Updater]:
    """A log of the settings' partitions and an updater of all of them, summarising at once."""
    stream = settings.pipeline["stream"]
    prefix, partitions = settings.redis.key_prefix, int(stream["partitions"])
    log = RedisStreamsLog(redis_client, prefix, partitions, max_length=10_000)
    reader = RedisStreamsReader(redis_client, prefix, range(partitions), "rankflow", "t")
    meter = FreshnessMeter(prefix, every_seconds=0.0)
    return log, Updater(redis_client, reader, UpdaterConfig.of(prefix, stream), freshness=meter)


def events(now_ms: int, ages_ms: list[int], user: int) -> list[LiveEvent]:
    return [LiveEvent(f"f{user}-{n}", 1, now_ms - age, user, 100 + n, "home", "s", 1)
            for n, age in enumerate(ages_ms)]  # fmt: skip


def test_the_updater_summarises_event_to_visible_lags_per_partition(
    settings: Settings, redis_client
) -> None:
    log, updater = updater_of(settings, redis_client)
    assert not read_freshness(redis_client, settings).reported  # no updater ever ran
    assert check_stream(redis_client, settings)["problems"]  # ... reported, yet not alerted
    now = time.time_ns() // 1_000_000
    log.append(events(now, [100] * 50 + [2_000] * 50, user=2))  # user 2: partition 0
    log.append(events(now, [50] * 10, user=3))  # partition 1
    for _ in range(20):
        updater.step()
    freshness = read_freshness(redis_client, settings)
    by_name = {p.partition: p for p in freshness.partitions}
    assert set(by_name) == {"redis:0", "redis:1"}
    zero, one = by_name["redis:0"], by_name["redis:1"]
    assert zero.events == 100
    assert one.events == 10
    assert 0.1 <= zero.p50_seconds <= 2.5  # half the events were 0.1 s old, half 2 s
    assert 2.0 <= zero.p99_seconds <= 3.0
    assert zero.max_seconds >= zero.p99_seconds
    assert 0.05 <= one.p99_seconds < 1.0
    assert all(0 <= p.behind_seconds < 5 for p in freshness.partitions)  # both caught up
    record = check_stream(redis_client, settings)
    assert record["problems"] == []
    summary = json.loads(redis_client.hget(freshness_key(settings.redis.key_prefix), "redis:0"))
    assert set(summary) == {"at_ms", "events", "p50_ms", "p99_ms", "max_ms"}


def test_the_watch_names_a_partition_behind_or_too_slow(settings: Settings, redis_client) -> None:
    log, updater = updater_of(settings, redis_client)
    stream = settings.pipeline["stream"]
    now = time.time_ns() // 1_000_000
    slow = 1000 * (int(stream["alert_freshness_seconds"]) + 30)
    log.append(events(now, [slow] * 20, user=2))  # events that reached the log late
    log.append(events(now, [10] * 5, user=3))
    for _ in range(20):
        updater.step()
    with pytest.raises(
        StreamBehind, match=r"redis:0: p99 event-to-visible \d+\.\d s over its last 20"
    ):
        check_stream(redis_client, settings)
    # an updater that stopped long ago: its partition is behind (older than the bound)
    prefix = settings.redis.key_prefix
    long_ago = now - 1000 * (int(stream["alert_behind_seconds"]) + 60)
    redis_client.hset(progress_key(prefix), "redis:1", f"{long_ago},{long_ago}")
    with pytest.raises(StreamBehind) as raised:
        check_stream(redis_client, settings)
    assert "redis:1: last caught up 1" in str(raised.value)  # about 120 s ago
    assert "redis:0" in str(raised.value)

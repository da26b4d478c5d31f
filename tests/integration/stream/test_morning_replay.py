"""A generated morning replayed into the real event log reaches the fresh state whole."""

from __future__ import annotations

import time

import pytest

from rankflow.config import Settings
from rankflow.sim.marketplace import GeneratorConfig, generate_marketplace
from rankflow.sim.replay import morning, replay_morning
from rankflow.stream.log import partition_reader
from rankflow.stream.updater import Updater, UpdaterConfig

pytestmark = pytest.mark.services


def test_a_replayed_morning_is_applied_event_by_event(settings: Settings, redis_client) -> None:
    config = GeneratorConfig.preset("tiny", days=1)
    generate_marketplace(config, settings.paths.raw)
    day = config.last_day
    timed = morning(settings.paths.raw, day, hours=8.0)
    events = sum(t.kind == "events" for t in timed)
    listings = sum(t.kind == "items" for t in timed)
    purchases = sum(t.fields.get("event_type") == "purchase" for t in timed)
    assert events > 500
    assert listings > 0  # the tiny marketplace lists a few items a morning
    assert purchases > 0

    began = time.monotonic()
    done = replay_morning(settings, day, hours=8.0, speed=8 * 3600 / 2.0)  # in about 2 s
    took = time.monotonic() - began
    assert (done.events, done.listings, done.purchases, done.refused) == (
        events, listings, purchases, 0
    )  # fmt: skip
    assert 1.5 < took < 20  # paced, not dumped at once

    stream = settings.pipeline["stream"]
    partitions = range(int(stream["partitions"]))
    updater = Updater(redis_client, partition_reader(settings, partitions, "t"),
                      UpdaterConfig.of(settings.redis.key_prefix, stream))  # fmt: skip
    for _ in range(200):
        if not updater.step():
            break
    totals = updater.totals
    assert totals.applied + totals.duplicates == events
    assert totals.listings == listings
    assert totals.quarantined == 0
    assert len(totals.sold) == purchases  # each sells its item once

"""The sold-item repair: published lists lose sold items in place, nothing else changes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from test_gold_publish_redis import DS, gold_frame, publish

from rankflow.config import Settings
from rankflow.lake.gold import write_gold
from rankflow.publish.repair import (
    RepairError,
    drop_sold,
    read_sales,
    repair_and_record,
    run_repair,
    served_sold_share,
)
from rankflow.quality.raw import sales_quarantine_path
from rankflow.sim.sales import write_sales_hour
from rankflow.store.keys import current_key, meta_key, user_bucket_key
from rankflow.store.reader import RankingReader

pytestmark = [pytest.mark.spark, pytest.mark.services]


def on_test_redis(settings: Settings, redis_url: str) -> Settings:
    """The lake settings with the tests' Redis DB and the default prefix."""
    return replace(settings, redis=replace(settings.redis, url=redis_url, key_prefix="rf"))


MORNING = datetime(DS.year, DS.month, DS.day, tzinfo=UTC) + timedelta(days=1)


def test_drop_sold_keeps_order_and_touches_only_lists_with_a_sold_item() -> None:
    offsets = np.array([0, 3, 5, 6])
    items = np.array([1, 2, 3, 4, 5, 6])
    touched, new_offsets, kept, removed = drop_sold(offsets, items, np.array([2, 6, 99]))
    assert touched.tolist() == [0, 2]
    assert new_offsets.tolist() == [0, 2, 2]
    assert kept.tolist() == [1, 3]
    assert removed == 2
    assert drop_sold(offsets, items, np.array([42]))[0].size == 0


def test_sales_are_read_up_to_the_repair_time_from_complete_drops(tmp_path) -> None:
    write_sales_hour(tmp_path, MORNING, [(10, MORNING + timedelta(minutes=5))])
    write_sales_hour(
        tmp_path, MORNING + timedelta(hours=2), [(11, MORNING + timedelta(hours=2, minutes=50))]
    )
    unfinished = write_sales_hour(
        tmp_path, MORNING + timedelta(hours=1), [(12, MORNING + timedelta(hours=1))]
    )
    (unfinished / "_SUCCESS").unlink()
    assert set(read_sales(tmp_path, DS, MORNING + timedelta(hours=2, minutes=30)).sales) == {10}
    assert set(read_sales(tmp_path, DS, MORNING + timedelta(hours=3)).sales) == {10, 11}


def test_repair_removes_sold_items_in_place_and_is_idempotent(
    spark, tmp_path, redis_client, redis_url, lake_settings
) -> None:
    settings = on_test_redis(lake_settings, redis_url)
    snapshot = write_gold(gold_frame(spark, 200, "home"), str(tmp_path / "gold"), DS, "home")
    version = publish(spark, redis_client, redis_url, snapshot, "home").version
    raw = settings.paths.raw
    with pytest.raises(
        RepairError, match="nothing to repair: no published version for surface 'search'"
    ):
        run_repair(settings, "search", MORNING)
    write_sales_hour(
        raw,
        MORNING + timedelta(hours=1),
        [
            (10, MORNING + timedelta(hours=1, minutes=30)),
            (21, MORNING + timedelta(hours=1, minutes=40)),
            (7, MORNING + timedelta(hours=1, minutes=45)),
        ],
    )
    write_sales_hour(
        raw, MORNING + timedelta(hours=5), [(31, MORNING + timedelta(hours=5, minutes=10))]
    )

    before, served = served_sold_share(settings, "home", MORNING + timedelta(hours=4))
    assert served == 400
    assert before == pytest.approx(2 / 400)

    keys = redis_client.dbsize()
    result = run_repair(settings, "home", MORNING + timedelta(hours=3))
    assert redis_client.dbsize() == keys  # overwritten in place, no key created
    assert (result.sold_items, result.users_repaired, result.entries_removed) == (3, 2, 2)
    assert result.fallback_removed == 1
    assert result.version == version
    reader = RankingReader.from_url(redis_url, "rf")
    assert reader.lookup(1, "home").items == [11]
    assert reader.lookup(2, "home").items == [20]
    assert reader.lookup(3, "home").items == [30, 31]  # sold after the repair time: kept for now
    assert reader.lookup(999, "home").items == [8]  # the fallback lost its sold item too
    assert redis_client.get(current_key("rf", "home")).decode() == version
    buckets = int(redis_client.hget(meta_key("rf", "home", version), "user_buckets"))
    assert redis_client.ttl(user_bucket_key("rf", "home", version, 1, buckets)) == -1

    after, _ = served_sold_share(settings, "home", MORNING + timedelta(hours=4))
    assert after == 0.0
    again = run_repair(settings, "home", MORNING + timedelta(hours=3))
    assert (again.users_repaired, again.entries_removed) == (2, 2)
    assert reader.lookup(1, "home").items == [11]

    later = run_repair(settings, "home", MORNING + timedelta(hours=6))
    assert later.sold_items == 4
    assert reader.lookup(3, "home").items == [30]
    assert served_sold_share(settings, "home", MORNING + timedelta(hours=7))[0] == 0.0


@pytest.fixture
def served(spark, lake_settings, redis_client, redis_url, tmp_path) -> Settings:
    """Settings on the tests' Redis, with 50 users' lists published: user u has [10u, 10u+1]."""
    settings = on_test_redis(lake_settings, redis_url)
    snapshot = write_gold(gold_frame(spark, 50, "home"), str(tmp_path / "gold"), DS, "home")
    publish(spark, redis_client, redis_url, snapshot, "home")
    return settings


def test_a_user_whose_every_item_sold_gets_the_fallback_list(served, redis_url) -> None:
    settings = served
    sold_at = MORNING + timedelta(minutes=30)
    write_sales_hour(settings.paths.raw, MORNING, [(40, sold_at), (41, sold_at), (50, sold_at)])

    result = repair_and_record(settings, "home", MORNING + timedelta(hours=1))
    assert (result.users_repaired, result.lists_emptied) == (2, 1)
    reader = RankingReader.from_url(redis_url, "rf")
    emptied = reader.lookup(4, "home")  # its list was [40, 41]
    assert emptied.fallback
    assert emptied.items == [7, 8]  # the fallback of the publication, which sold nothing
    assert reader.lookup(5, "home").items == [51]
    assert not reader.lookup(5, "home").fallback


def test_a_repair_with_an_earlier_cutoff_never_puts_sold_items_back(served, redis_url) -> None:
    """The hourly repair at 03:00 finishing after the one at 05:00 keeps the 04:00 sale out."""
    settings = served
    raw = settings.paths.raw
    write_sales_hour(raw, MORNING + timedelta(hours=1), [(10, MORNING + timedelta(hours=1))])
    write_sales_hour(raw, MORNING + timedelta(hours=4), [(20, MORNING + timedelta(hours=4))])

    newer = repair_and_record(settings, "home", MORNING + timedelta(hours=5))
    older = repair_and_record(settings, "home", MORNING + timedelta(hours=3))
    assert newer.sold_items == older.sold_items == 2
    assert older.repaired_at == newer.repaired_at  # it repaired up to the later cutoff
    reader = RankingReader.from_url(redis_url, "rf")
    assert reader.lookup(2, "home").items == [21]  # 20, sold at 04:00, stays out


def test_repairs_of_one_surface_wait_for_each_other(served, redis_client, monkeypatch) -> None:
    from rankflow.publish import repair
    from rankflow.store.keys import repair_lock_key

    settings = served
    monkeypatch.setattr(repair, "REPAIR_WAIT_SECONDS", 1)
    other = redis_client.lock(repair_lock_key("rf", "home"), timeout=30)
    assert other.acquire()  # the other repair of the surface is running
    with pytest.raises(RepairError, match="another repair of 'home' held the lock"):
        repair_and_record(settings, "home", MORNING)
    other.release()
    assert repair_and_record(settings, "home", MORNING).users_repaired == 0


def test_hostile_sales_lines_are_quarantined_and_the_rest_of_the_hour_applied(
    spark, tmp_path, redis_client, redis_url, lake_settings
) -> None:
    settings = on_test_redis(lake_settings, redis_url)
    snapshot = write_gold(gold_frame(spark, 50, "home"), str(tmp_path / "gold"), DS, "home")
    publish(spark, redis_client, redis_url, snapshot, "home")
    hour = MORNING + timedelta(hours=1)
    folder = write_sales_hour(settings.paths.raw, hour, [(10, hour + timedelta(minutes=5))])
    at = (hour + timedelta(minutes=10)).isoformat().replace("+00:00", "Z").encode()
    naive = at.rstrip(b"Z")
    hostile = [
        b'{"item_id": 21, "sold_ts": "' + at[:9],  # truncated by a crashed producer
        b'{"item_id": 21, "sold_ts": "' + naive + b'"}',  # no zone
        b'{"item_id": 21, "sold_ts": "' + at + b'", "n": "\xff"}',  # not UTF-8
        b'{"item_id": 21, "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",  # deep nesting
        b'{"item_id": 1.9, "sold_ts": "' + at + b'"}',
        b'{"item_id": true, "sold_ts": "' + at + b'"}',
        b'{"item_id": -3, "sold_ts": "' + at + b'"}',
    ]
    good = b'{"item_id": 7, "sold_ts": "' + at + b'"}'
    (folder / "part-00001.jsonl").write_bytes(b"\n".join([*hostile, good]) + b"\n")

    result = run_repair(settings, "home", MORNING + timedelta(hours=3))
    assert result.sold_items == 2  # 10 from the first file, 7 after the hostile lines
    assert result.sales_quarantined == len(hostile)
    reader = RankingReader.from_url(redis_url, "rf")
    assert reader.lookup(1, "home").items == [11]  # 10 sold
    assert reader.lookup(2, "home").items == [20, 21]  # 21 only ever appeared in bad lines
    quarantine = sales_quarantine_path(settings, hour)
    records = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, len(hostile) + 1))
    assert [r["reason"].split(" (")[0].split(":")[0] for r in records] == [
        "malformed JSON",
        "sold_ts without a time zone",
        "invalid UTF-8 at byte 57",
        "JSON nested too deeply",
        "item_id not an integer in 1..2^32-1",
        "item_id not an integer in 1..2^32-1",
        "item_id not an integer in 1..2^32-1",
    ]
    again = run_repair(settings, "home", MORNING + timedelta(hours=3))
    assert again.sales_quarantined == len(hostile)  # counted again, recorded once
    assert len(quarantine.read_text().splitlines()) == len(hostile)

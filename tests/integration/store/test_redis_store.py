"""The Redis serving store against the real local redis-server (DB 15, flushed per test)."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from rankflow.store.encoding import list_batch
from rankflow.store.errors import NoCurrentVersionError, VersionCheckError, VersionNotWritableError
from rankflow.store.keys import (
    USERS_PER_BUCKET,
    bucket_count,
    current_key,
    fallback_key,
    meta_key,
    new_version_id,
    parts_key,
    previous_key,
    user_bucket_key,
    user_key,
    versions_key,
)
from rankflow.store.reader import Lookup, RankingReader
from rankflow.store.versions import (
    bytes_per_user,
    commit_version,
    count_users,
    expire_old_versions,
    rollback,
    status,
    surface_status,
    user_bucket_encoding,
)
from rankflow.store.writer import (
    WriteStats,
    begin_version,
    write_arrow,
    write_fallback,
    write_lists,
)

pytestmark = pytest.mark.services

PREFIX = "rf"
SURFACE = "home"
UNKNOWN_USER = 999_999_999


def make_lists(seed: int, users: int = 300, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Return user ids and a (users, k) matrix of item ids, different for every seed."""
    rng = np.random.default_rng(seed)
    user_ids = np.arange(1000, 1000 + users, dtype=np.int64)
    items = rng.integers(seed * 10_000_000, seed * 10_000_000 + 5_000_000, size=(users, k))
    return user_ids, items


def publish(
    client: redis.Redis,
    url: str,
    ds: date,
    user_ids: np.ndarray,
    items: Any,
    fallback: list[int],
    *,
    run_id: str | None = None,
    mset_batch: int = 500,
    layout: int = 2,
) -> tuple[str, Any]:
    """Run the whole publication the way the Spark job does; return (version, switch result).

    ``layout`` 2 keeps the lists in hash buckets (what ``publish_redis`` writes), 1 a key per
    user (what releases before it wrote, and readers still read).
    """
    version = new_version_id(ds, run_id)
    buckets = bucket_count(len(user_ids), USERS_PER_BUCKET) if layout == 2 else None
    begin_version(
        client, PREFIX, SURFACE, version, ds=ds, model_version="7", k=10, user_buckets=buckets
    )
    stats = write_lists(url, PREFIX, SURFACE, version, user_ids, items, mset_batch=mset_batch)
    write_fallback(client, PREFIX, SURFACE, version, fallback)
    return version, commit_version(client, PREFIX, SURFACE, version, stats.users)


def list_home(client: redis.Redis, version: str, user: int) -> tuple[str, str | None]:
    """Where a user's list lives, as any reader finds it: (bucket, field), or (key, None)."""
    buckets = client.hget(meta_key(PREFIX, SURFACE, version), "user_buckets")
    if buckets is None:
        return user_key(PREFIX, SURFACE, version, user), None
    return user_bucket_key(PREFIX, SURFACE, version, user, int(buckets)), str(user)


def stored_list(client: redis.Redis, version: str, user: int) -> bytes | None:
    """A user's stored value, read with plain commands."""
    key, field = list_home(client, version, user)
    return client.get(key) if field is None else client.hget(key, field)


def remove_list(client: redis.Redis, version: str, user: int) -> None:
    """Delete a user's list behind the store's back (an eviction, a tampering)."""
    key, field = list_home(client, version, user)
    assert (client.delete(key) if field is None else client.hdel(key, field)) == 1


def pointers(client: redis.Redis) -> tuple[bytes | None, bytes | None]:
    """Return the raw current and previous pointers."""
    return client.get(current_key(PREFIX, SURFACE)), client.get(previous_key(PREFIX, SURFACE))


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the reader threads"
        time.sleep(0.01)


@pytest.fixture
def reader(redis_url: str, redis_client: redis.Redis) -> Iterator[RankingReader]:
    """A reader on the tests' DB with a version cache short enough for tests."""
    r = RankingReader.from_url(redis_url, PREFIX, version_cache_seconds=0.05)
    yield r
    r.close()


def test_publish_then_read_every_user_back(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    users, items = make_lists(1)
    version, result = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1, 2, 3])

    assert result.status == "switched"
    assert (result.current, result.previous) == (version, None)
    for user, row in zip(users.tolist(), items.tolist(), strict=True):
        expected = Lookup(str(user), SURFACE, version, row, False)
        assert reader.lookup(user, SURFACE) == expected
        assert reader.lookup_cached(user, SURFACE) == expected
    meta = redis_client.hgetall(meta_key(PREFIX, SURFACE, version))
    assert meta[b"ds"] == b"2024-01-05"
    assert meta[b"users"] == b"300"
    assert meta[b"k"] == b"10"
    assert meta[b"model_version"] == b"7"
    assert meta[b"encoding"] == b"u32le"
    assert meta[b"schema_version"] == b"2"
    assert meta[b"user_buckets"] == b"11"  # the first prime >= 300 / 32
    assert meta[b"state"] == b"published"
    assert redis_client.ttl(list_home(redis_client, version, 1000)[0]) == -1
    assert user_bucket_encoding(redis_client, PREFIX, SURFACE, version, 1000) == "listpack"


def test_values_are_plain_uint32le_for_any_language(
    redis_client: redis.Redis, redis_url: str
) -> None:
    users, items = make_lists(2, users=3, k=4)
    version, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [7])

    # 3 users: 2 buckets (the smallest prime count); user 1001 is in bucket 1001 mod 2
    assert redis_client.hget(f"rf:home:v:{version}:meta", "user_buckets") == b"2"
    raw = redis_client.hget(f"rf:home:v:{version}:b:1", "1001")
    assert raw == b"".join(int(i).to_bytes(4, "little") for i in items[1])
    assert redis_client.get("rf:home:current") == version.encode()
    assert redis_client.get(f"rf:home:v:{version}:fallback") == b"\x07\x00\x00\x00"


def test_unknown_user_gets_the_fallback_list(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    users, items = make_lists(3)
    version, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [42, 41, 40])

    for unknown in (UNKNOWN_USER, "never-seen"):
        expected = Lookup(str(unknown), SURFACE, version, [42, 41, 40], True)
        assert reader.lookup(unknown, SURFACE) == expected
        assert reader.lookup_cached(unknown, SURFACE) == expected
    assert reader.lookup(1000, SURFACE).fallback is False


def test_a_cached_reader_whose_version_expired_rereads_the_pointer(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """Not the cached version's fallback for a known user: the new version's list."""
    users, old = make_lists(6, users=3)
    first, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, old, [42])
    reader = RankingReader.from_url(redis_url, "rf", version_cache_seconds=3600)
    assert reader.lookup_cached(int(users[0]), SURFACE).version == first
    assert reader.lookup_cached(UNKNOWN_USER, SURFACE).items == [42]  # the fallback, read once
    _, new = make_lists(7, users=3)
    second, _ = publish(redis_client, redis_url, date(2024, 1, 6), users, new, [43])
    for key in redis_client.scan_iter(match=f"rf:home:v:{first}:*"):
        redis_client.delete(key)  # the old version's keys expired (a day later, say)
    answer = reader.lookup_cached(int(users[0]), SURFACE)
    assert (answer.version, answer.fallback) == (second, False)
    assert answer.items == [int(i) for i in new[0]]


def test_reader_refuses_a_text_decoding_client(redis_url: str) -> None:
    with pytest.raises(ValueError, match="decode_responses=False"):
        RankingReader(redis.Redis.from_url(redis_url, decode_responses=True))


def test_no_current_version_is_a_clear_error(
    redis_client: redis.Redis, reader: RankingReader
) -> None:
    with pytest.raises(NoCurrentVersionError, match="no published version for surface 'home'"):
        reader.lookup(1, SURFACE)
    with pytest.raises(NoCurrentVersionError, match="rf:home:current"):
        reader.lookup_cached(1, SURFACE)


def test_readers_see_old_or_new_lists_never_a_mix_during_the_switch(
    redis_client: redis.Redis, redis_url: str
) -> None:
    users, old = make_lists(4, users=400)
    _, new = make_lists(5, users=400)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, old, [1, 1])
    expected = {
        v1: {**{int(u): r for u, r in zip(users, old.tolist(), strict=True)}, UNKNOWN_USER: [1, 1]}
    }
    answers: list[list[Lookup]] = [[], []]
    errors: list[BaseException] = []
    stop = threading.Event()
    choices = [*users.tolist(), UNKNOWN_USER]

    def read(slot: int, cached: bool) -> None:
        # each reader cycles through every user, so one torn list cannot go unnoticed
        r = RankingReader.from_url(redis_url, PREFIX, version_cache_seconds=0.01)
        order = itertools.cycle(random.Random(slot).sample(choices, len(choices)))
        try:
            while not stop.is_set():
                user = next(order)
                found = r.lookup_cached(user, SURFACE) if cached else r.lookup(user, SURFACE)
                answers[slot].append(found)
        except BaseException as error:
            errors.append(error)
            raise
        finally:
            r.close()

    def progressed(since: list[int], count: int) -> bool:
        assert not errors, f"a reader failed: {errors[0]!r}"
        return min(len(a) - n for a, n in zip(answers, since, strict=True)) >= count

    threads = [threading.Thread(target=read, args=(i, i == 1), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: progressed([0, 0], 100))
        v2 = new_version_id(date(2024, 1, 6))
        begin_version(
            redis_client, PREFIX, SURFACE, v2, ds=date(2024, 1, 6), model_version="8", k=10
        )

        def slow_batches() -> Iterator[Any]:
            for start in range(0, len(users), 40):
                time.sleep(0.02)  # let the readers run while the version is half written
                yield list_batch(users[start : start + 40], new[start : start + 40])

        at_begin = [len(a) for a in answers]
        written = write_arrow(redis_url, PREFIX, SURFACE, v2, slow_batches(), mset_batch=16)
        write_fallback(redis_client, PREFIX, SURFACE, v2, [2, 2])
        before_commit = [len(a) for a in answers]
        result = commit_version(redis_client, PREFIX, SURFACE, v2, written.users)
        after_commit = [len(a) for a in answers]
        wait_for(lambda: progressed(after_commit, 2 * len(choices)))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)

    assert result.status == "switched"
    assert all(not t.is_alive() for t in threads)

    expected[v2] = {
        **{int(u): r for u, r in zip(users, new.tolist(), strict=True)},
        UNKNOWN_USER: [2, 2],
    }
    for slot, seen in enumerate(answers):
        for found in seen:
            assert found.version in expected
            assert found.items == expected[found.version][int(found.user)]
            assert found.fallback == (int(found.user) == UNKNOWN_USER)
        versions = [found.version for found in seen]
        assert set(versions[: before_commit[slot]]) == {v1}
        switched_at = versions.index(v2)
        assert set(versions[switched_at:]) == {v2}
        assert before_commit[slot] - at_begin[slot] >= 20  # readers ran while v2 was half written
        assert len(seen) - after_commit[slot] >= 2 * len(choices)


def test_commit_refuses_when_counts_differ_and_nothing_becomes_visible(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    users, old = make_lists(6)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, old, [9])
    _, new = make_lists(7)
    v2 = new_version_id(date(2024, 1, 6))
    begin_version(redis_client, PREFIX, SURFACE, v2, ds=date(2024, 1, 6), model_version="8", k=10)
    stats = write_lists(redis_url, PREFIX, SURFACE, v2, users, new)
    write_fallback(redis_client, PREFIX, SURFACE, v2, [8])

    with pytest.raises(
        VersionCheckError, match="has 300 user keys in Redis but the writers reported 301"
    ):
        commit_version(redis_client, PREFIX, SURFACE, v2, stats.users + 1)
    remove_list(redis_client, v2, 1005)
    with pytest.raises(VersionCheckError, match="has 299 user keys"):
        commit_version(redis_client, PREFIX, SURFACE, v2, stats.users)

    assert pointers(redis_client) == (v1.encode(), None)
    assert redis_client.hget(meta_key(PREFIX, SURFACE, v2), "state") == b"writing"
    assert reader.lookup(1005, SURFACE) == Lookup("1005", SURFACE, v1, old[5].tolist(), False)


def test_commit_refuses_a_version_without_fallback(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    users, old = make_lists(8)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, old, [9])
    v2 = new_version_id(date(2024, 1, 6))
    begin_version(redis_client, PREFIX, SURFACE, v2, ds=date(2024, 1, 6), model_version="8", k=10)
    stats = write_lists(redis_url, PREFIX, SURFACE, v2, users, make_lists(9)[1])

    with pytest.raises(VersionCheckError, match="missing_fallback"):
        commit_version(redis_client, PREFIX, SURFACE, v2, stats.users)
    assert pointers(redis_client) == (v1.encode(), None)
    assert reader.lookup(UNKNOWN_USER, SURFACE).version == v1


def test_commit_refuses_a_version_never_begun(redis_client: redis.Redis) -> None:
    redis_client.set(fallback_key(PREFIX, SURFACE, "20240105-x"), b"")
    with pytest.raises(VersionCheckError, match="missing_meta"):
        commit_version(redis_client, PREFIX, SURFACE, "20240105-x", 0)
    assert pointers(redis_client) == (None, None)


def test_backfill_of_an_older_ds_never_replaces_a_newer_current(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    users, newer = make_lists(10)
    v_new, _ = publish(redis_client, redis_url, date(2024, 1, 10), users, newer, [1])
    _, older = make_lists(11)
    v_old, result = publish(redis_client, redis_url, date(2024, 1, 3), users, older, [2])

    assert result.status == "skipped_older"
    assert not result.changed
    assert (result.current, result.previous) == (v_new, None)
    assert "older" in result.reason
    assert pointers(redis_client) == (v_new.encode(), None)
    assert redis_client.hget(meta_key(PREFIX, SURFACE, v_old), "state") == b"refused"
    assert reader.lookup(1000, SURFACE) == Lookup("1000", SURFACE, v_new, newer[0].tolist(), False)


def test_republishing_the_same_ds_replaces_it(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    users, first = make_lists(12)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, first, [1], run_id="a")
    _, retry = make_lists(13)
    v2, result = publish(redis_client, redis_url, date(2024, 1, 5), users, retry, [2], run_id="b")

    assert v1 != v2
    assert (result.status, result.current, result.previous) == ("switched", v2, v1)
    assert reader.lookup(1001, SURFACE) == Lookup("1001", SURFACE, v2, retry[1].tolist(), False)


def test_committing_the_current_version_again_changes_nothing(
    redis_client: redis.Redis, redis_url: str
) -> None:
    users, items = make_lists(14)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1])
    v2, _ = publish(redis_client, redis_url, date(2024, 1, 6), users, items, [1])

    again = commit_version(redis_client, PREFIX, SURFACE, v2, len(users))
    assert (again.status, again.current, again.previous) == ("unchanged", v2, v1)
    assert pointers(redis_client) == (v2.encode(), v1.encode())
    with pytest.raises(VersionCheckError, match="state_published"):
        commit_version(redis_client, PREFIX, SURFACE, v1, len(users))
    assert pointers(redis_client) == (v2.encode(), v1.encode())


def test_published_versions_cannot_be_written_into(
    redis_client: redis.Redis, redis_url: str
) -> None:
    users, items = make_lists(15)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1])

    with pytest.raises(VersionNotWritableError, match="state=published"):
        write_lists(redis_url, PREFIX, SURFACE, v1, users[:1], items[:1] + 1)
    with pytest.raises(VersionNotWritableError, match="state=published"):
        write_fallback(redis_client, PREFIX, SURFACE, v1, [5])
    with pytest.raises(VersionNotWritableError, match="is published"):
        begin_version(
            redis_client, PREFIX, SURFACE, v1, ds=date(2024, 1, 5), model_version="7", k=10
        )
    with pytest.raises(VersionNotWritableError, match="state=None"):
        write_lists(redis_url, PREFIX, SURFACE, "20240105-never", users, items)
    assert stored_list(redis_client, v1, 1000) == items[0].astype("<u4").tobytes()
    assert redis_client.keys("rf:home:v:20240105-never:*") == []


def test_rollback_restores_the_previous_lists(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    users, old = make_lists(16)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, old, [1])
    _, new = make_lists(17)
    v2, _ = publish(redis_client, redis_url, date(2024, 1, 6), users, new, [2])

    result = rollback(redis_client, PREFIX, SURFACE)
    assert (result.status, result.current, result.previous) == ("rolled_back", v1, v2)
    assert result.changed
    assert reader.lookup(1003, SURFACE) == Lookup("1003", SURFACE, v1, old[3].tolist(), False)
    assert reader.lookup(UNKNOWN_USER, SURFACE).items == [1]

    again = rollback(redis_client, PREFIX, SURFACE)
    assert (again.status, again.current, again.previous) == ("rolled_back", v2, v1)
    assert reader.lookup(1003, SURFACE).items == new[3].tolist()


def test_rollback_without_previous_refuses_and_changes_nothing(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    empty = rollback(redis_client, PREFIX, SURFACE)
    assert (empty.status, empty.current, empty.previous) == ("refused", None, None)
    assert pointers(redis_client) == (None, None)

    users, items = make_lists(18)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1])
    result = rollback(redis_client, PREFIX, SURFACE)
    assert result.status == "refused"
    assert result.reason.startswith("no_previous")
    assert not result.changed
    assert pointers(redis_client) == (v1.encode(), None)
    assert reader.lookup(1000, SURFACE).version == v1


@pytest.mark.parametrize("expiring", ["user", "meta", "fallback"])
def test_rollback_refuses_when_previous_keys_carry_a_ttl(
    redis_client: redis.Redis, redis_url: str, expiring: str
) -> None:
    users, items = make_lists(19)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1])
    v2, _ = publish(redis_client, redis_url, date(2024, 1, 6), users, items, [1])
    key = {
        "user": list_home(redis_client, v1, 1100)[0],
        "meta": meta_key(PREFIX, SURFACE, v1),
        "fallback": fallback_key(PREFIX, SURFACE, v1),
    }[expiring]
    assert redis_client.expire(key, 600)

    # user keys are checked on a sample (meta and fallback always): sample them all here
    result = rollback(redis_client, PREFIX, SURFACE, sample=len(users))
    assert result.status == "refused"
    assert result.reason.startswith("previous_expiring")
    assert pointers(redis_client) == (v2.encode(), v1.encode())


def test_rollback_refuses_when_previous_is_gone(redis_client: redis.Redis, redis_url: str) -> None:
    users, items = make_lists(20)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1])
    v2, _ = publish(redis_client, redis_url, date(2024, 1, 6), users, items, [1])
    redis_client.delete(fallback_key(PREFIX, SURFACE, v1))

    result = rollback(redis_client, PREFIX, SURFACE)
    assert (result.status, result.reason) == ("refused", f"previous_missing: {v1}")
    assert pointers(redis_client) == (v2.encode(), v1.encode())


def version_ttls(client: redis.Redis, version: str) -> set[int]:
    """Return the distinct TTLs (seconds) of every key of a version."""
    keys = client.keys(f"rf:home:v:{version}:*")
    assert keys, f"no keys left for {version}"
    return {int(client.ttl(k)) for k in keys}


def test_versions_older_than_previous_get_a_ttl(redis_client: redis.Redis, redis_url: str) -> None:
    users, items = make_lists(21)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 4), users, items, [1], run_id="1")
    v2, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1], run_id="2")
    v3, _ = publish(redis_client, redis_url, date(2024, 1, 6), users, items, [1], run_id="3")

    stats = expire_old_versions(redis_client, PREFIX, SURFACE, ttl_seconds=3600)

    assert stats.versions == [v1]
    buckets = int(redis_client.hget(meta_key(PREFIX, SURFACE, v1), "user_buckets") or 0)
    assert stats.keys == buckets + 2  # the users' buckets, meta and fallback
    assert all(3590 <= ttl <= 3600 for ttl in version_ttls(redis_client, v1))
    assert version_ttls(redis_client, v2) == {-1}
    assert version_ttls(redis_client, v3) == {-1}
    assert redis_client.hget(meta_key(PREFIX, SURFACE, v1), "state") == b"retired"
    assert rollback(redis_client, PREFIX, SURFACE).current == v2  # previous stays usable


def test_expiry_is_recorded_once_and_never_postponed(
    redis_client: redis.Redis, redis_url: str
) -> None:
    users, items = make_lists(22, users=20)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 4), users, items, [1])
    publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1])
    publish(redis_client, redis_url, date(2024, 1, 6), users, items, [1])
    key = list_home(redis_client, v1, 1000)[0]

    expire_old_versions(redis_client, PREFIX, SURFACE, ttl_seconds=100)
    first = redis_client.expiretime(key)
    time.sleep(1.1)
    redis_client.persist(key)  # as if a key had been missed by an interrupted run
    expire_old_versions(redis_client, PREFIX, SURFACE, ttl_seconds=100)

    assert first > time.time()
    assert redis_client.expiretime(key) == first
    assert redis_client.expiretime(meta_key(PREFIX, SURFACE, v1)) == first


def test_expiry_spares_a_version_still_being_written_but_not_abandoned_ones(
    redis_client: redis.Redis, redis_url: str
) -> None:
    users, items = make_lists(23, users=20)
    abandoned = new_version_id(date(2024, 1, 4))
    begin_version(
        redis_client, PREFIX, SURFACE, abandoned, ds=date(2024, 1, 4), model_version="7", k=10
    )
    write_lists(redis_url, PREFIX, SURFACE, abandoned, users, items)
    time.sleep(0.01)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1])
    time.sleep(0.01)
    in_progress = new_version_id(date(2024, 1, 6))
    begin_version(
        redis_client, PREFIX, SURFACE, in_progress, ds=date(2024, 1, 6), model_version="7", k=10
    )
    write_lists(redis_url, PREFIX, SURFACE, in_progress, users, items)
    orphan = "rf:home:v:20231201-gone:u:5"
    redis_client.set(orphan, b"\x00\x00\x00\x00")

    stats = expire_old_versions(redis_client, PREFIX, SURFACE, ttl_seconds=3600)

    assert stats.versions == [abandoned]
    assert stats.orphan_keys == 1
    assert 0 < redis_client.ttl(orphan) <= 3600
    assert all(ttl > 0 for ttl in version_ttls(redis_client, abandoned))
    assert version_ttls(redis_client, in_progress) == {-1}
    assert version_ttls(redis_client, v1) == {-1}
    write_fallback(redis_client, PREFIX, SURFACE, in_progress, [1])
    assert commit_version(redis_client, PREFIX, SURFACE, in_progress, 20).status == "switched"


def test_expired_versions_leave_the_versions_set(redis_client: redis.Redis, redis_url: str) -> None:
    users, items = make_lists(24, users=5)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 4), users, items, [1])
    v2, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1])
    v3, _ = publish(redis_client, redis_url, date(2024, 1, 6), users, items, [1])
    expire_old_versions(redis_client, PREFIX, SURFACE, ttl_seconds=1)
    time.sleep(2.1)

    assert redis_client.keys(f"rf:home:v:{v1}:*") == []
    expire_old_versions(redis_client, PREFIX, SURFACE, ttl_seconds=1)
    members = redis_client.zrange(versions_key(PREFIX, SURFACE), 0, -1)
    assert members == [v2.encode(), v3.encode()]


def test_writers_take_batches_like_spark_partitions(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    version = new_version_id(date(2024, 1, 5))
    begin_version(
        redis_client, PREFIX, SURFACE, version, ds=date(2024, 1, 5), model_version="7", k=3
    )
    frames = [  # user ids and a column of arrays of any length
        pd.DataFrame({"user_id": [1, 2], "items": [np.array([5, 6, 7]), np.array([8])]}),
        pd.DataFrame({"user_id": pd.Series([], dtype="int64"), "items": []}),
        pd.DataFrame({"user_id": [3], "items": [np.array([], dtype=np.int32)]}),
    ]
    partitions = [
        write_arrow(
            redis_url,
            PREFIX,
            SURFACE,
            version,
            [list_batch(f["user_id"].to_numpy(), f["items"].tolist())],
        )
        for f in frames
    ]
    empty = write_arrow(redis_url, PREFIX, SURFACE, version, [])
    write_fallback(redis_client, PREFIX, SURFACE, version, [100, 101])
    total = sum(partitions, WriteStats())
    result = commit_version(redis_client, PREFIX, SURFACE, version, total.users)

    assert empty == WriteStats(0, 0, 0)
    assert partitions[1] == WriteStats(0, 0, 0)
    assert total == WriteStats(users=3, bytes=16, commands=2)
    assert result.status == "switched"
    assert reader.lookup(1, SURFACE).items == [5, 6, 7]
    assert reader.lookup(2, SURFACE).items == [8]
    assert reader.lookup(3, SURFACE) == Lookup("3", SURFACE, version, [], False)
    assert reader.lookup(4, SURFACE) == Lookup("4", SURFACE, version, [100, 101], True)


def test_a_bad_batch_fails_the_writer(redis_client: redis.Redis, redis_url: str) -> None:
    version = new_version_id(date(2024, 1, 5))
    begin_version(
        redis_client, PREFIX, SURFACE, version, ds=date(2024, 1, 5), model_version="7", k=3
    )

    with pytest.raises(ValueError, match="2 user ids but 1 lists"):
        write_lists(redis_url, PREFIX, SURFACE, version, [1, 2], [[1]])
    with pytest.raises(ValueError, match="fit in uint32"):
        write_lists(redis_url, PREFIX, SURFACE, version, [1], [[2**32]])
    assert redis_client.keys(f"rf:home:v:{version}:u:*") == []


def test_status_reports_versions_meta_and_memory(redis_client: redis.Redis, redis_url: str) -> None:
    users, items = make_lists(25)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1])
    v2, _ = publish(redis_client, redis_url, date(2024, 1, 6), users, items, [1])

    report = surface_status(redis_client, PREFIX, SURFACE)

    assert report.current is not None
    assert report.previous is not None
    assert (report.current.version, report.previous.version) == (v2, v1)
    assert report.current.meta["ds"] == "2024-01-06"
    assert report.previous.meta["ds"] == "2024-01-05"
    assert report.versions == [v1, v2]
    per_user = report.current.bytes_per_user
    assert per_user is not None
    assert 40 < per_user < 200  # K=10: 40 value bytes + key and Redis overhead
    assert report.current.approx_bytes is not None
    assert 300 * per_user < report.current.approx_bytes < 300 * per_user + 2000
    assert json.loads(json.dumps(status(redis_client, PREFIX, SURFACE)))["current"]["version"] == v2
    assert surface_status(redis_client, PREFIX, "other").current is None


def test_count_users_counts_one_version_only(redis_client: redis.Redis, redis_url: str) -> None:
    users, items = make_lists(27, users=1234)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [1])
    v2, _ = publish(redis_client, redis_url, date(2024, 1, 6), users[:1000], items[:1000], [1])

    assert count_users(redis_client, PREFIX, SURFACE, v1) == 1234
    assert count_users(redis_client, PREFIX, SURFACE, v2) == 1000
    assert count_users(redis_client, PREFIX, SURFACE, "20240107-none") == 0


def write_parts(
    url: str, version: str, users: np.ndarray, items: np.ndarray, parts: int
) -> dict[str, int]:
    """Write the lists in ``parts`` acknowledged pieces, as the Spark tasks do per gold file."""
    expected = {}
    for index, chunk in enumerate(np.array_split(np.arange(len(users)), parts)):
        name = f"part-{index}"
        stats = write_lists(url, PREFIX, SURFACE, version, users[chunk], items[chunk], part=name)
        expected[name] = stats.users
    return expected


def begun_version(client: redis.Redis, ds: date, users: int) -> str:
    """Begin a bucketed version of ``ds`` for ``users`` lists of 10; return its id."""
    version = new_version_id(ds)
    buckets = bucket_count(users, USERS_PER_BUCKET)
    begin_version(
        client, PREFIX, SURFACE, version, ds=ds, model_version="7", k=10, user_buckets=buckets
    )
    return version


def written_in_parts(
    client: redis.Redis, url: str, users: np.ndarray, items: np.ndarray, parts: int
) -> tuple[str, dict[str, int]]:
    """Begin a 2024-01-05 version, write it in acknowledged parts, add the fallback."""
    version = begun_version(client, date(2024, 1, 5), len(users))
    expected = write_parts(url, version, users, items, parts)
    write_fallback(client, PREFIX, SURFACE, version, [1])
    return version, expected


def test_acknowledged_parts_let_the_commit_skip_the_key_scan(
    redis_client: redis.Redis, redis_url: str
) -> None:
    users, items = make_lists(40, users=900)
    version, parts = written_in_parts(redis_client, redis_url, users, items, 3)
    policy = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]

    result = commit_version(redis_client, PREFIX, SURFACE, version, 900, expected_parts=parts)

    assert policy == "noeviction"
    assert result.status == "switched"
    assert redis_client.hgetall(parts_key(PREFIX, SURFACE, version)) == {
        b"part-0": b"300",
        b"part-1": b"300",
        b"part-2": b"300",
    }


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("missing", r"missing \['part-2'\]"),
        ("short", r"other counts \['part-1'\]"),
        ("extra", "1 unexpected"),
        ("total", "add up to 900 users, not 901"),
    ],
)
def test_a_missing_or_wrong_acknowledgement_refuses_the_switch(
    redis_client: redis.Redis, redis_url: str, tamper: str, message: str
) -> None:
    users, items = make_lists(41, users=900)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 4), users, items, [1])
    version, parts = written_in_parts(redis_client, redis_url, users, items, 3)
    acks = parts_key(PREFIX, SURFACE, version)
    expected_users = 900
    if tamper == "missing":  # a writer died before acknowledging its part
        redis_client.hdel(acks, "part-2")
    elif tamper == "short":  # a part acknowledged fewer users than its file holds
        redis_client.hset(acks, "part-1", 299)
    elif tamper == "extra":  # a writer of another snapshot wrote into this version
        redis_client.hset(acks, "part-9", 5)
    else:
        expected_users = 901

    with pytest.raises(VersionCheckError, match=message):
        commit_version(redis_client, PREFIX, SURFACE, version, expected_users, expected_parts=parts)
    assert redis_client.get(current_key(PREFIX, SURFACE)) == v1.encode()


def test_the_writer_user_trusts_the_acknowledgements_of_a_noeviction_server(
    redis_client: redis.Redis, redis_url: str
) -> None:
    # the writer may not run CONFIG (dangerous), but INFO memory names the policy: no key scan
    users, items = make_lists(43, users=600)
    version, parts = written_in_parts(redis_client, redis_url, users, items, 2)
    remove_list(redis_client, version, int(users[0]))  # a scan would see it
    writer = redis.Redis.from_url(redis_url)
    try:
        with pytest.raises(redis.ResponseError):
            writer.config_get("maxmemory-policy")
        result = commit_version(writer, PREFIX, SURFACE, version, 600, expected_parts=parts)
    finally:
        writer.close()
    assert result.status == "switched"


def test_an_evicting_server_is_checked_by_scanning_keys(
    redis_client: redis.Redis, redis_url: str
) -> None:
    users, items = make_lists(42, users=600)
    version, parts = written_in_parts(redis_client, redis_url, users, items, 2)
    remove_list(redis_client, version, int(users[0]))  # "evicted"
    policy = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(VersionCheckError, match="has 599 user keys in Redis"):
            commit_version(redis_client, PREFIX, SURFACE, version, 600, expected_parts=parts)
    finally:
        redis_client.config_set("maxmemory-policy", policy)
    assert redis_client.get(current_key(PREFIX, SURFACE)) is None


def test_a_version_with_a_key_per_user_is_still_read_and_rolled_back_to(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    # a version an older release wrote (layout 1) stays readable beside bucketed ones, so a
    # rollback right after an upgrade serves it
    users, old = make_lists(50, users=40)
    _, new = make_lists(51, users=40)
    v1, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, old, [1], layout=1)
    assert redis_client.hget(meta_key(PREFIX, SURFACE, v1), "user_buckets") is None
    assert stored_list(redis_client, v1, 1003) == redis_client.get(f"rf:home:v:{v1}:u:1003")
    v2, _ = publish(redis_client, redis_url, date(2024, 1, 6), users, new, [2])
    assert reader.lookup(1003, SURFACE) == Lookup("1003", SURFACE, v2, new[3].tolist(), False)

    assert user_bucket_encoding(redis_client, PREFIX, SURFACE, v1, 1003) == ""  # no buckets
    assert rollback(redis_client, PREFIX, SURFACE).status == "rolled_back"
    time.sleep(0.06)  # past the reader's version cache
    for user, row in ((1003, old[3]), (1039, old[39])):
        expected = Lookup(str(user), SURFACE, v1, row.tolist(), False)
        assert reader.lookup(user, SURFACE) == expected
        assert reader.lookup_cached(user, SURFACE) == expected
    assert count_users(redis_client, PREFIX, SURFACE, v1) == 40
    assert count_users(redis_client, PREFIX, SURFACE, v2) == 40


def test_a_bucketed_version_gives_other_ids_the_fallback_and_refuses_to_store_them(
    redis_client: redis.Redis, redis_url: str, reader: RankingReader
) -> None:
    users, items = make_lists(52, users=10)
    version, _ = publish(redis_client, redis_url, date(2024, 1, 5), users, items, [9])
    fallback = Lookup("u-7", SURFACE, version, [9], True)
    assert reader.lookup("u-7", SURFACE) == fallback
    assert reader.lookup_cached("u-7", SURFACE) == fallback
    assert reader.lookup(10**9, SURFACE).fallback  # an integer id that has no list

    other = new_version_id(date(2024, 1, 6))
    begin_version(redis_client, PREFIX, SURFACE, other, ds=date(2024, 1, 6), k=10, user_buckets=3)
    with pytest.raises(ValueError, match="bucketed ids must be non-null integers"):
        write_lists(redis_url, PREFIX, SURFACE, other, ["u-7"], [[1]])
    with pytest.raises(ValueError, match=r"0 \.\. 2\*\*53 - 1"):
        write_lists(redis_url, PREFIX, SURFACE, other, [-5], [[1]])


def test_bytes_per_user_at_k100_is_within_15_percent_of_the_payload(
    redis_client: redis.Redis, redis_url: str
) -> None:
    # the lists' memory as Redis counts it (used_memory), not only MEMORY USAGE, which leaves
    # out the key table: 536 B by MEMORY USAGE but 586 B by used_memory with a key per user
    users = np.arange(20_000_000, 20_020_000, dtype=np.int64)
    items = np.random.default_rng(53).integers(0, 2**32, size=(len(users), 100), dtype=np.uint64)
    version = new_version_id(date(2024, 1, 5))
    begin_version(
        redis_client, PREFIX, SURFACE, version, ds=date(2024, 1, 5), k=100,
        user_buckets=bucket_count(len(users), USERS_PER_BUCKET),
    )  # fmt: skip
    before = int(redis_client.info("memory")["used_memory"])
    write_lists(redis_url, PREFIX, SURFACE, version, users, items)
    grown = (int(redis_client.info("memory")["used_memory"]) - before) / len(users)
    sampled = bytes_per_user(redis_client, PREFIX, SURFACE, version, sample=200)

    assert 400 < grown <= 1.15 * 400
    assert sampled is not None
    assert abs(sampled - grown) < 0.02 * grown


def test_an_error_reply_mid_run_raises_it_and_the_part_is_not_acknowledged(
    redis_client: redis.Redis, redis_url: str
) -> None:
    # thousands of bucket HSETs go out in a few large writes and their replies are read in bulk:
    # one refused in the middle (a bucket key of the wrong type) must still fail the part
    users, items = make_lists(44, users=60_000)  # 1,877 buckets: more than a window of replies
    version = begun_version(redis_client, date(2024, 1, 6), len(users))
    buckets = bucket_count(len(users), USERS_PER_BUCKET)
    middle = user_bucket_key(PREFIX, SURFACE, version, int(users[len(users) // 2]), buckets)
    redis_client.set(middle, b"not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        write_lists(redis_url, PREFIX, SURFACE, version, users, items, part="part-0")
    assert not redis_client.hexists(parts_key(PREFIX, SURFACE, version), "part-0")

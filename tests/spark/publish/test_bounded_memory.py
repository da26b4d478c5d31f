"""A Redis at its ``maxmemory`` (``noeviction``) recovers by itself: real server, real publish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_gold_publish_redis import DS, gold_frame
from test_gold_publish_redis import publish as publish_on

from rankflow.lake.gold import write_gold
from rankflow.store.client import redis_client
from rankflow.store.keys import new_version_id, versions_key
from rankflow.store.memory import VersionWontFitError, memory_room
from rankflow.store.versions import version_pointers
from rankflow.store.writer import begin_version, write_lists
from redis_servers import RedisServer

pytestmark = [pytest.mark.spark, pytest.mark.services]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    """A Redis of the test's own that never evicts."""
    redis = RedisServer(tmp_path / "redis", "--maxmemory-policy", "noeviction").start()
    yield redis
    redis.stop()


def publish(spark: Any, url: str, snapshot: Any, **options: Any) -> Any:
    """Publish a snapshot as a new version of ``home`` on the test's own server."""
    with redis_client(url) as client:
        return publish_on(spark, client, url, snapshot, "home", **options)


def limit_memory(url: str, extra_bytes: int) -> None:
    """Set ``maxmemory`` to what is used now plus ``extra_bytes``."""
    with redis_client(url) as client:
        client.config_set("maxmemory", memory_room(client).used + extra_bytes)


def test_a_version_that_cannot_fit_is_refused_before_its_first_write(
    spark, server, tmp_path
) -> None:
    table = str(tmp_path / "gold")
    first = publish(
        spark, server.url, write_gold(gold_frame(spark, 2000, "home"), table, DS, "home")
    )
    with redis_client(server.url) as client:
        keys = client.dbsize()
    limit_memory(server.url, 150_000)  # about a third of what 20,000 more lists take
    again = write_gold(gold_frame(spark, 20_000, "home", offset=1), table, DS, "home")
    with pytest.raises(VersionWontFitError, match=r"needs about [\d,]+ bytes .* raise maxmemory"):
        publish(spark, server.url, again)
    with redis_client(server.url) as client:
        assert client.dbsize() == keys  # not one key written
        assert version_pointers(client, "rf", "home") == (first.version, None)
    limit_memory(server.url, 10_000_000)
    assert publish(spark, server.url, again).result.status == "switched"


def test_a_publication_that_runs_out_of_memory_gives_it_back_and_the_next_night_fits(
    spark, server, tmp_path
) -> None:
    table = str(tmp_path / "gold")
    # two-item lists in buckets of 32: about 19 B a user, 1.9 MB for these 100,000
    big = write_gold(gold_frame(spark, 100_000, "home"), table, DS, "home")
    limit_memory(server.url, 1_000_000)  # no current version to estimate from: the writes hit OOM
    with pytest.raises(Exception, match="maxmemory") as failure:
        publish(spark, server.url, big)
    assert "user_script" not in str(failure.value)  # the lists' writes failed, not begin
    with redis_client(server.url) as client:
        assert client.dbsize() == 0  # the partial version is gone
        assert version_pointers(client, "rf", "home") == (None, None)
    # the next night, with the same limit and no one touching Redis, publishes
    night = write_gold(gold_frame(spark, 6000, "home", offset=2), table, DS, "home")
    assert publish(spark, server.url, night).result.status == "switched"


def test_a_version_abandoned_by_a_crashed_writer_is_reclaimed_by_the_next_one(
    spark, server, tmp_path
) -> None:
    with redis_client(server.url) as client:
        abandoned = new_version_id(DS)
        begin_version(client, "rf", "home", abandoned, ds=DS, model_version="1", k=2)
        users = list(range(500))
        write_lists(server.url, "rf", "home", abandoned, users, [[u, u + 1] for u in users])
        assert client.dbsize() > 500
    table = str(tmp_path / "gold")
    snapshot = write_gold(gold_frame(spark, 100, "home"), table, DS, "home")
    young = publish(spark, server.url, snapshot, abandoned_after_seconds=3600)
    with redis_client(server.url) as client:  # a young one may be a retry's to resume: kept
        assert client.zscore(versions_key("rf", "home"), abandoned) is not None
    again = write_gold(gold_frame(spark, 100, "home", offset=1), table, DS, "home")
    later = publish(spark, server.url, again, abandoned_after_seconds=0)
    with redis_client(server.url) as client:
        assert client.zscore(versions_key("rf", "home"), abandoned) is None
        assert not list(client.scan_iter(match=f"rf:home:v:{abandoned}:*"))
        assert version_pointers(client, "rf", "home") == (later.version, young.version)

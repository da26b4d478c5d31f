"""A publication step retried after a crash at any point finishes the night, exactly once.

The real ``publish_redis`` step on real Spark, Redis and Delta: an attempt dies (an exception
injected at a named point stands for the worker's death there), Airflow retries the task, and the
retry must succeed, leave readers on the new version and put the publication in the ledger once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from test_gold_publish_redis import DS, gold_frame

from rankflow.config import Settings
from rankflow.lake.gold import write_gold
from rankflow.lake.ledger import read_ledger
from rankflow.runs import run_record_path, write_run_record
from rankflow.steps import publish_redis
from rankflow.store.reader import RankingReader
from rankflow.store.versions import version_meta, version_pointers

pytestmark = [pytest.mark.spark, pytest.mark.services]

RUN = "scheduled__2024-01-05T02:00:00+00:00"


@pytest.fixture(autouse=True)
def empty_redis(redis_client: Any) -> None:
    """Every test starts from an empty Redis DB (version ids repeat across tests)."""


class Crash(RuntimeError):
    """The attempt's process dies here."""


def scored_day(spark, settings: Settings, ds, users: int = 120, model: str = "3") -> dict:
    """Gold lists of ``ds`` and the score step's record of them, as the score step leaves them."""
    table = settings.paths.table("gold/rankings")
    snapshot = write_gold(gold_frame(spark, users, "home", ds=ds), table, ds, "home")
    record = {
        "ds": ds.isoformat(),
        "surface": "home",
        "model_version": model,
        "top_k": 2,
        "users": snapshot.users,
        "fallback": [7, 8],
        "gold": snapshot.as_record(),
    }
    write_run_record(settings, ds, "score-home", record)
    return record


def crash_once(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
    """Make ``module.name`` raise on its first call only: the attempt that dies there."""
    real = getattr(module, name)
    calls = {"n": 0}

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Crash(f"the worker died in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)


def ledger_publications(spark, settings: Settings) -> list[str]:
    """The Redis versions the ledger records as published."""
    ledger = read_ledger(spark, settings)
    return list(ledger[ledger["event"] == "publish_redis"]["redis_version"])


def test_a_crash_after_the_switch_is_finished_by_the_retry(spark, settings, monkeypatch) -> None:
    scored_day(spark, settings, DS)
    crash_once(monkeypatch, publish_redis, "version_meta")  # the first call after the switch
    with pytest.raises(Crash):
        publish_redis.run_publish_redis(spark, settings, DS, "home", RUN)
    assert not run_record_path(settings, DS, "publish-redis-home").exists()

    record = publish_redis.run_publish_redis(spark, settings, DS, "home", RUN)
    assert (record["status"], record["resumed"]) == ("switched", True)
    assert record["users"] == 120
    assert record["value_bytes"] == 120 * 8  # two items of 4 bytes per list, from the meta
    assert ledger_publications(spark, settings) == [record["version"]]
    reader = RankingReader.from_url(settings.redis.url, prefix=settings.redis.key_prefix)
    assert reader.lookup(5, "home").items == [50, 51]


def test_a_ledger_write_that_fails_after_the_switch_is_recorded_by_the_retry(
    spark, settings, monkeypatch
) -> None:
    scored_day(spark, settings, DS)
    crash_once(monkeypatch, publish_redis, "record_event")
    with pytest.raises(Crash):
        publish_redis.run_publish_redis(spark, settings, DS, "home", RUN)
    assert ledger_publications(spark, settings) == []

    record = publish_redis.run_publish_redis(spark, settings, DS, "home", RUN)
    again = publish_redis.run_publish_redis(spark, settings, DS, "home", RUN)
    assert record["status"] == again["status"] == "switched"
    assert ledger_publications(spark, settings) == [record["version"]]  # once, however often


def test_a_crash_mid_write_is_resumed_into_the_same_version(spark, settings, monkeypatch) -> None:
    from rankflow.store import writer

    scored_day(spark, settings, DS)
    crash_once(monkeypatch, writer, "write_fallback")  # every list written, not yet switched
    with pytest.raises(Crash):
        publish_redis.run_publish_redis(spark, settings, DS, "home", RUN)
    client = publish_redis.checked_client(settings.redis.url, "")
    assert version_pointers(client, settings.redis.key_prefix, "home") == (None, None)

    record = publish_redis.run_publish_redis(spark, settings, DS, "home", RUN)
    assert (record["status"], record["resumed"]) == ("switched", False)
    assert version_pointers(client, settings.redis.key_prefix, "home")[0] == record["version"]


def test_rerunning_a_backfill_that_was_skipped_as_older_succeeds(spark, settings) -> None:
    newer = DS + timedelta(days=1)
    scored_day(spark, settings, newer, users=30)
    latest = publish_redis.run_publish_redis(spark, settings, newer, "home", "manual__newer")
    scored_day(spark, settings, DS, users=20)
    backfill = publish_redis.run_publish_redis(spark, settings, DS, "home", "backfill__older")
    assert backfill["status"] == "skipped_older"
    # a later night retires the refused version; the backfill's task is then cleared and re-run
    scored_day(spark, settings, newer, users=31, model="4")
    publish_redis.run_publish_redis(spark, settings, newer, "home", "manual__newer_again")
    client = publish_redis.checked_client(settings.redis.url, "")
    prefix = settings.redis.key_prefix
    assert version_meta(client, prefix, "home", backfill["version"])["state"] == "retired"

    rerun = publish_redis.run_publish_redis(spark, settings, DS, "home", "backfill__older")
    assert (rerun["status"], rerun["resumed"]) == ("skipped_older", True)
    published = ledger_publications(spark, settings)
    assert len(published) == 2
    assert latest["version"] in published
    assert backfill["version"] not in published

"""Redis access control against real servers: what the writer, the reader and nobody may do."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import redis

from rankflow.config import load_settings
from rankflow.ops.services import ServiceError, redis_acl_file
from rankflow.store.commands import lua_sha, lua_source
from rankflow.store.keys import new_version_id
from rankflow.store.memory import discard_version, memory_room
from rankflow.store.reader import RankingReader
from rankflow.store.versions import (
    commit_version,
    expire_old_versions,
    rollback,
    surface_status,
)
from rankflow.store.writer import begin_version, write_fallback, write_lists
from redis_servers import RedisServer

pytestmark = pytest.mark.services
PREFIX, SURFACE = "rf", "home"
USERS = np.arange(1, 51, dtype=np.int64)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server with rankflow's ACL users and a foreign key outside ``rf:*``."""
    server = RedisServer(tmp_path_factory.mktemp("acl") / "data", acl=True).start()
    with redis.Redis.from_url(server.admin_url) as admin:
        admin.set("other-app:secret", b"not rankflow's")
    yield server
    server.stop()


def publish_as(url: str, client: redis.Redis, day: date, seed: int) -> str:
    """One whole publication (begin, lists, fallback, switch) with the given user's client."""
    version = new_version_id(day, f"run-{seed}")
    begin_version(client, PREFIX, SURFACE, version, ds=day, model_version="1", k=5)
    items = np.random.default_rng(seed).integers(1, 10_000, size=(len(USERS), 5))
    stats = write_lists(url, PREFIX, SURFACE, version, USERS, items)
    write_fallback(client, PREFIX, SURFACE, version, [9, 8, 7])
    result = commit_version(client, PREFIX, SURFACE, version, stats.users)
    assert result.status == "switched", result
    return version


def refused(call: object, *args: object) -> bool:
    """Tell whether Redis refuses the call for lack of permission (NOPERM)."""
    assert callable(call)
    try:
        call(*args)
    except redis.exceptions.NoPermissionError:
        return True
    except redis.exceptions.ResponseError as error:
        return "NOPERM" in str(error) or "no permissions" in str(error)
    return False


def permitted(server: RedisServer, user: str, *command: str) -> bool:
    """Ask the server (ACL DRYRUN, as admin) whether ``user`` may run ``command`` (no effect)."""
    with redis.Redis.from_url(server.admin_url) as admin:
        return admin.execute_command("ACL", "DRYRUN", user, *command) == b"OK"


WRITER_DENIED = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "SET", "maxmemory", "0"), ("CONFIG", "GET", "*"),
    ("DEBUG", "SLEEP", "0"), ("SCRIPT", "FLUSH"), ("SCRIPT", "KILL"), ("FUNCTION", "FLUSH"),
    ("ACL", "SETUSER", "x"), ("KEYS", "*"), ("SHUTDOWN",), ("MONITOR",), ("SWAPDB", "0", "1"),
    ("REPLICAOF", "127.0.0.1", "1"), ("MODULE", "LOAD", "x"), ("CLIENT", "KILL", "TYPE", "normal"),
    ("SAVE",), ("BGSAVE",), ("SET", "other-app:x", "1"), ("GET", "other-app:secret"),
    ("PUBLISH", "rf:events", "x"),
]  # fmt: skip
WRITER_ALLOWED = [
    ("SET", "rf:home:current", "v"), ("MSET", "rf:a", "1", "rf:b", "2"), ("UNLINK", "rf:a"),
    ("EVALSHA", "0" * 40, "1", "rf:home:current"), ("SCRIPT", "LOAD", "return 1"),
    ("HSET", "rf:m", "f", "v"), ("EXPIREAT", "rf:a", "1"), ("SCAN", "0"), ("INFO", "memory"),
    ("ZADD", "rf:z", "1", "m"), ("DBSIZE",), ("SET", "rf:home:repair-lock", "x", "NX", "EX", "9"),
]  # fmt: skip
READER_DENIED = [
    ("SET", "rf:home:current", "v"), ("DEL", "rf:a"), ("UNLINK", "rf:a"), ("EXPIRE", "rf:a", "1"),
    ("HSET", "rf:m", "f", "v"), ("EVALSHA", "0" * 40, "1", "rf:home:current"),
    ("EVAL", "return 1", "0"), ("SCRIPT", "LOAD", "return 1"), ("SCRIPT", "FLUSH"),
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("INFO",), ("KEYS", "*"),
    ("GET", "other-app:secret"), ("CLIENT", "KILL", "TYPE", "normal"), ("SHUTDOWN",),
]  # fmt: skip
READER_ALLOWED = [
    ("GET", "rf:home:current"), ("MGET", "rf:a", "rf:b"), ("HGETALL", "rf:m"),
    ("ZRANGE", "rf:z", "0", "-1"), ("EVALSHA_RO", "0" * 40, "1", "rf:home:current"),
    ("EVAL_RO", "return 1", "1", "rf:home:current"), ("SCAN", "0"), ("PING",),
]  # fmt: skip

# the ranking service's serving log: append to the log streams, nothing else (not even read them)
LOGGER_DENIED = [
    ("XRANGE", "rf:log:served", "-", "+"), ("XREAD", "STREAMS", "rf:log:served", "0"),
    ("XTRIM", "rf:log:served", "MAXLEN", "0"), ("DEL", "rf:log:served"), ("GET", "rf:a"),
    ("SET", "rf:a", "1"), ("XADD", "rf:home:current", "*", "r", "x"),
    ("XADD", "other-app:log", "*", "r", "x"), ("SCAN", "0"), ("KEYS", "*"), ("FLUSHDB",),
]  # fmt: skip
LOGGER_ALLOWED = [
    ("XADD", "rf:log:served", "*", "r", "x"),
    ("XADD", "rf:log:served", "MAXLEN", "~", "1000", "*", "r", "x"), ("PING",),
]  # fmt: skip


@pytest.mark.parametrize(
    ("user", "command", "allowed"),
    [("writer", c, False) for c in WRITER_DENIED]
    + [("writer", c, True) for c in WRITER_ALLOWED]
    + [("reader", c, False) for c in READER_DENIED]
    + [("reader", c, True) for c in READER_ALLOWED]
    + [("logger", c, False) for c in LOGGER_DENIED]
    + [("logger", c, True) for c in LOGGER_ALLOWED],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else str(value),
)
def test_the_acl_matrix(server, user: str, command: tuple[str, ...], allowed: bool) -> None:
    assert permitted(server, user, *command) is allowed


def test_the_writer_runs_the_whole_lifecycle_but_cannot_wipe_or_reconfigure(server) -> None:
    with redis.Redis.from_url(server.url) as writer:
        first = publish_as(server.url, writer, date(2026, 11, 1), 1)
        second = publish_as(server.url, writer, date(2026, 11, 2), 2)
        assert rollback(writer, PREFIX, SURFACE).status == "rolled_back"
        assert rollback(writer, PREFIX, SURFACE).status == "rolled_back"  # back to the second
        expire_old_versions(writer, PREFIX, SURFACE, ttl_seconds=3600)
        assert memory_room(writer).used > 0  # INFO memory, the one @dangerous read it keeps
        spare = new_version_id(date(2026, 11, 3), "run-3")
        begin_version(writer, PREFIX, SURFACE, spare, ds=date(2026, 11, 3), model_version="1", k=5)
        assert discard_version(writer, PREFIX, SURFACE, spare) >= 1
        assert surface_status(writer, PREFIX, SURFACE).current.version == second  # type: ignore[union-attr]
        assert first != second

        assert refused(writer.flushall)
        assert refused(writer.flushdb)
        assert refused(writer.config_set, "maxmemory", "0")
        assert refused(writer.script_flush)
        assert refused(writer.acl_list)
        assert refused(writer.set, "other-app:secret", b"overwritten")
        assert refused(writer.get, "other-app:secret")
        assert refused(writer.publish, "rf:events", b"x")
    with redis.Redis.from_url(server.admin_url) as admin:
        assert admin.get("other-app:secret") == b"not rankflow's"
        assert admin.ping()


def test_the_reader_looks_up_but_cannot_write_flush_or_read_elsewhere(server) -> None:
    with redis.Redis.from_url(server.url) as writer:
        version = publish_as(server.url, writer, date(2026, 11, 5), 5)
    reader = RankingReader.from_url(server.reader_url, PREFIX)
    with redis.Redis.from_url(server.reader_url) as client:
        # the script cache is empty on a fresh server, the first lookup loads it by EVAL_RO
        with redis.Redis.from_url(server.admin_url) as admin:
            admin.script_flush()
        for user in (1, 50, 4_000_000):
            answer = reader.lookup(user, SURFACE)
            assert answer.version == version
            assert answer.fallback == (user == 4_000_000)
            assert reader.lookup_cached(user, SURFACE).items == answer.items
        assert surface_status(client, PREFIX, SURFACE).current.version == version  # type: ignore[union-attr]

        user_key = f"{PREFIX}:{SURFACE}:v:{version}:u:1"
        assert client.get(user_key) is not None
        assert refused(client.set, user_key, b"")
        assert refused(client.delete, user_key)
        assert refused(client.unlink, user_key)
        assert refused(client.expire, user_key, 1)
        assert refused(client.set, f"{PREFIX}:{SURFACE}:current", b"forged")
        assert refused(client.flushall)
        assert refused(client.flushdb)
        assert refused(client.script_flush)
        assert refused(client.get, "other-app:secret")
        # EVALSHA declares its keys written: refused to the reader, hence EVALSHA_RO
        assert refused(
            client.evalsha, lua_sha("lookup"), 1, f"{PREFIX}:{SURFACE}:current", "x", "1"
        )
        assert refused(client.eval, "return redis.call('SET', KEYS[1], 'x')", 1, user_key)
        with pytest.raises(redis.exceptions.ResponseError, match=r"can't run this command"):
            client.eval_ro("return redis.call('DEL', KEYS[1])", 1, user_key)
        assert client.eval_ro(
            lua_source("lookup"), 1, f"{PREFIX}:{SURFACE}:current", f"{PREFIX}:{SURFACE}", "1"
        )
    reader.close()
    with redis.Redis.from_url(server.admin_url) as admin:
        assert admin.exists(user_key) == 1


def test_a_client_without_credentials_can_do_nothing(server) -> None:
    anonymous = f"redis://127.0.0.1:{server.port}/0"
    with (
        redis.Redis.from_url(anonymous) as client,
        pytest.raises(redis.exceptions.AuthenticationError),
    ):
        client.get(f"{PREFIX}:{SURFACE}:current")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(f"redis://default:@127.0.0.1:{server.port}/0").ping()
    wrong = server.reader_url.replace("@", "x@", 1)
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(wrong).ping()


def test_the_embedded_server_of_make_up_runs_with_the_acl_users() -> None:
    """The server the rest of the suite uses: default user off, reader read-only."""
    settings = load_settings()
    if not settings.redis.admin_url:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI runs `make up`, whose Redis has ACL users: RANKFLOW_REDIS_* unset")
        pytest.skip("the Redis of this run has no ACL users (RANKFLOW_REDIS_ADMIN_URL unset)")
    host = settings.redis.url.rsplit("@", 1)[1]
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(f"redis://{host}").ping()
    with redis.Redis.from_url(settings.redis.lookup_url) as reader:
        assert refused(reader.set, f"{PREFIX}:acl-probe", b"x")
        assert refused(reader.flushdb)
    with redis.Redis.from_url(settings.redis.url) as writer:
        assert refused(writer.flushdb)
        assert refused(writer.config_get, "maxmemory")
    assert settings.redis.logger_url, "make writes the serving log's user to the local secrets"
    with redis.Redis.from_url(settings.redis.log_url) as logger:
        assert refused(logger.xrange, f"{PREFIX}:log:served")
        assert refused(logger.get, f"{PREFIX}:home:current")


def test_the_embedded_acl_file_needs_all_three_users_or_none(tmp_path: Path) -> None:
    base = {"RANKFLOW_HOME": str(tmp_path)}
    plain = load_settings({**base, "RANKFLOW_REDIS_URL": "redis://127.0.0.1:6390/0"})
    assert redis_acl_file(plain) is None
    writer_only = "redis://w:" + "pw@127.0.0.1:6390/0"
    half = load_settings({**base, "RANKFLOW_REDIS_URL": writer_only})
    with pytest.raises(ServiceError, match="RANKFLOW_REDIS_READER_URL, RANKFLOW_REDIS_ADMIN_URL"):
        redis_acl_file(half)
    users = {"": ("w", "pw-w"), "_READER": ("r", "pw-r"), "_ADMIN": ("a", "pw%40a")}
    full = load_settings(
        {
            **base,
            **{
                f"RANKFLOW_REDIS{role}_URL": f"redis://{name}:{word}@127.0.0.1:6390/0"
                for role, (name, word) in users.items()
            },
        }
    )
    text = redis_acl_file(full)
    assert text is not None
    assert "pw-w" not in text  # hashed, never in clear
    assert "pw@a" not in text
    assert text.startswith("user default off")

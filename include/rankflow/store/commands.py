"""Small helpers over a Redis client: the Lua scripts, reply decoding, key scans."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import redis

from rankflow.store.client import redis_client
from rankflow.store.keys import meta_key

# --------------------------------------------------------------------------- helpers


@cache
def lua_source(name: str) -> str:
    """Return the text of a Lua script shipped next to this module (``lookup``, ``commit``...)."""
    return resources.files("rankflow.store").joinpath(f"{name}.lua").read_text()


@cache
def lua_sha(name: str) -> str:
    """Return the SHA1 digest Redis caches a shipped script under."""
    return hashlib.sha1(lua_source(name).encode()).hexdigest()


def run_read_only(client: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    """Run a shipped ``no-writes`` script by EVALSHA_RO (EVAL_RO when the server lacks it).

    The read-only forms declare the call a read, so the ``reader`` ACL user may make it and a
    replica serves it; plain EVALSHA counts its keys as written and is refused to both.
    """
    try:
        return client.evalsha_ro(lua_sha(name), len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return client.eval_ro(lua_source(name), len(keys), *keys, *args)


def _run(client: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    """Run a shipped Lua script by EVALSHA (loading it on first use)."""
    return client.register_script(lua_source(name))(keys=keys, args=args, client=client)


def _bytes(value: Any) -> bytes | None:
    """Return a Redis reply as ``bytes`` (or ``None``)."""
    if value is None:
        return None
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str | None:
    """Return a Redis reply as ``str`` (or ``None``), whatever the client's decoding."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _client(url: str) -> redis.Redis:
    """Open a binary-safe client of its own (one per writer call; never shared)."""
    return redis_client(url)


def user_buckets_of(client: redis.Redis, prefix: str, surface: str, version: str) -> int | None:
    """The number of user buckets a list version was begun with (``None``: a key per user)."""
    value = _text(client.hget(meta_key(prefix, surface, version), "user_buckets"))
    return int(value) if value else None


def _utc_now() -> str:
    """Return the current UTC time in ISO 8601, as stored in meta hashes."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def scan_keys(
    client: redis.Redis, pattern: str, *, count: int = 1000, limit: int | None = None
) -> Iterable[bytes]:
    """Yield keys matching ``pattern`` with SCAN (may repeat a key; stops after ``limit``)."""
    for seen, key in enumerate(client.scan_iter(match=pattern, count=count), start=1):
        yield key if isinstance(key, bytes) else str(key).encode()
        if limit is not None and seen >= limit:
            return

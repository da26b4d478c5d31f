"""The list reader: one round trip per lookup, fallback for unknown users, version named."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from rankflow.store.commands import _bytes, _client, _text, run_read_only, user_buckets_of
from rankflow.store.encoding import decode_items
from rankflow.store.errors import NoCurrentVersionError, RedisStoreError
from rankflow.store.keys import (
    check_name,
    current_key,
    fallback_key,
    namespace,
    user_bucket_key,
    user_id_text,
    user_key,
)


@dataclass(frozen=True)
class Lookup:
    """One reader answer: the list a user gets on a surface and the version it came from."""

    user: str
    surface: str
    version: str
    items: list[int]
    fallback: bool

    def as_dict(self) -> dict[str, Any]:
        """Return the answer as a JSON-ready dict (for the CLI and services)."""
        return asdict(self)


# --------------------------------------------------------------------------- read path


class RankingReader:
    """Reads users' lists for the recommendation service.

    ``lookup`` is one EVALSHA_RO round trip that reads the current pointer and the user's list (or
    the fallback) atomically. ``lookup_cached`` caches the version id and its layout for a few
    seconds and then reads the user's bucket field (or key) and the fallback in one pipelined
    round trip — also the path for Redis Cluster, where the script cannot reach keys in other
    slots.
    """

    def __init__(
        self,
        connection: str | redis.Redis,
        prefix: str = "rf",
        *,
        version_cache_seconds: float = 5.0,
    ) -> None:
        self._owned = isinstance(connection, str)
        self._client: redis.Redis = (
            _client(connection) if isinstance(connection, str) else connection
        )
        if self._client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RankingReader needs a client with decode_responses=False (binary)")
        self._prefix = check_name(prefix, "prefix")
        self._cache_seconds = version_cache_seconds
        # surface -> (version, its user bucket count or None for a key per user, read at)
        self._versions: dict[str, tuple[str, int | None, float]] = {}

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "rf", *, version_cache_seconds: float = 5.0
    ) -> RankingReader:
        """Return a reader with its own client on ``url``."""
        return cls(url, prefix, version_cache_seconds=version_cache_seconds)

    def close(self) -> None:
        """Close the client if the reader opened it."""
        if self._owned:
            self._client.close()

    def lookup(self, user_id: int | str, surface: str) -> Lookup:
        """Return a user's list from the current version in one atomic round trip.

        Raises:
            NoCurrentVersionError: the surface has never been published.
        """
        user = user_id_text(user_id)
        reply = run_read_only(
            self._client,
            "lookup",
            keys=[current_key(self._prefix, surface)],
            args=[namespace(self._prefix, surface), user],
        )
        if reply is None:
            raise self._no_version(surface)
        version, fallback, value = reply
        if value is None:
            raise RedisStoreError(f"version {_text(version)!r} of {surface!r} has no fallback")
        return Lookup(user, surface, _text(version) or "", decode_items(value), bool(fallback))

    def current_version(self, surface: str) -> str:
        """Return the current version id of a surface, read now (no cache)."""
        return self._read_version(surface)[0]

    def _read_version(self, surface: str) -> tuple[str, int | None]:
        """Read and cache the current version and its layout (the user bucket count, if any)."""
        version = _text(self._client.get(current_key(self._prefix, surface)))
        if version is None:
            raise self._no_version(surface)
        layout = user_buckets_of(self._client, self._prefix, surface, version)
        self._versions[surface] = (version, layout, time.monotonic())
        return version, layout

    def lookup_cached(self, user_id: int | str, surface: str) -> Lookup:
        """Return a user's list with a cached version id: one round trip per lookup.

        The user's bucket field (or key) and the version's fallback are read together (a pipeline,
        which a cluster client splits by slot); the fallback is never cached, so a version whose
        keys have expired is noticed at once and the pointer re-read, instead of known users
        being served a stale fallback. After a switch, answers come from the old (still
        complete) version for at most ``version_cache_seconds``.
        """
        user = user_id_text(user_id)
        cached = self._versions.get(surface)
        if cached is None or time.monotonic() - cached[2] > self._cache_seconds:
            version, buckets = self._read_version(surface)
        else:
            version, buckets = cached[0], cached[1]
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            if buckets is None:
                pipe.get(user_key(self._prefix, surface, version, user))
            elif user.isdigit():  # a bucketed version holds integer ids only
                bucket = user_bucket_key(self._prefix, surface, version, int(user), buckets)
                pipe.hget(bucket, user)
            pipe.get(fallback_key(self._prefix, surface, version))
            replies = [_bytes(v) for v in pipe.execute()]
            value, fallback = (None, replies[0]) if len(replies) == 1 else replies
            if value is not None:
                return Lookup(user, surface, version, decode_items(value), False)
            if fallback is not None:
                return Lookup(user, surface, version, decode_items(fallback), True)
            if attempt == 0:
                version, buckets = self._read_version(surface)  # the cached version is gone
        raise RedisStoreError(f"version {version!r} of {surface!r} has no fallback")

    def _no_version(self, surface: str) -> NoCurrentVersionError:
        """Build the error for a surface without a current version."""
        return NoCurrentVersionError(
            f"no published version for surface {surface!r} under prefix {self._prefix!r} "
            f"(key {current_key(self._prefix, surface)!r} is missing)"
        )


def stored_lists(
    client: redis.Redis,
    prefix: str,
    surface: str,
    version: str,
    user_ids: list[int],
    *,
    chunk: int = 1000,
) -> list[bytes | None]:
    """Many users' stored lists of one version, in order (``None``: no list), either layout.

    One round trip per ``chunk`` users: ``HGET`` of each user's bucket field in a pipeline, or
    ``MGET`` of their keys (layout 1). For checks that read what is served, not for serving.
    """
    buckets = user_buckets_of(client, prefix, surface, version)
    found: list[bytes | None] = []
    for start in range(0, len(user_ids), chunk):
        part = user_ids[start : start + chunk]
        if buckets is None:
            keys = [user_key(prefix, surface, version, user) for user in part]
            found += [_bytes(v) for v in client.mget(keys)]
            continue
        pipe = client.pipeline(transaction=False)
        for user in part:
            pipe.hget(user_bucket_key(prefix, surface, version, user, buckets), str(user))
        found += [_bytes(v) for v in pipe.execute()]
    return found

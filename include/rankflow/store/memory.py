"""Bounded Redis memory: whether the next version fits, and reclaiming versions that failed.

The serving Redis runs with ``maxmemory`` and ``noeviction`` (an evicted list would be a lost
user). A version that cannot fit is refused before its first write, with the bytes it needs; a
version whose publication failed is deleted at once (``UNLINK``), and one abandoned by a crashed
writer is reclaimed by the next publication of its surface, so a full Redis recovers by itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from rankflow.store.commands import _text, scan_keys
from rankflow.store.errors import RedisStoreError
from rankflow.store.keys import version_base, versions_key
from rankflow.store.versions import bytes_per_user, version_meta, version_pointers

HEADROOM = 1.10  # the estimate of a new version's size, plus 10%
UNLINK_BATCH = 1000


class VersionWontFitError(RedisStoreError):
    """A new version would not fit under the server's ``maxmemory``; nothing was written."""


@dataclass(frozen=True)
class MemoryRoom:
    """The server's memory limit and use, in bytes (``limit`` 0 means unbounded)."""

    used: int
    limit: int

    @property
    def free(self) -> int:
        """Bytes left under the limit (unbounded: a very large number)."""
        return self.limit - self.used if self.limit else 2**63 - 1


def memory_room(client: redis.Redis) -> MemoryRoom:
    """Read ``used_memory`` and ``maxmemory`` from ``INFO memory``."""
    info: dict[str, Any] = client.info("memory")
    return MemoryRoom(int(info["used_memory"]), int(info.get("maxmemory", 0)))


def estimate_bytes(client: redis.Redis, prefix: str, surface: str, users: int) -> int | None:
    """The memory a version of ``users`` lists will take, from the current version's keys.

    None when nothing is published yet (the first night has nothing to measure).
    """
    current, _ = version_pointers(client, prefix, surface)
    if current is None:
        return None
    per_user = bytes_per_user(client, prefix, surface, current)
    return None if per_user is None else int(per_user * users * HEADROOM)


def check_room(client: redis.Redis, prefix: str, surface: str, users: int) -> int | None:
    """Refuse a version of ``users`` lists that would not fit; return its estimated bytes.

    Raises:
        VersionWontFitError: the estimate exceeds what is free under ``maxmemory``.
    """
    needed = estimate_bytes(client, prefix, surface, users)
    room = memory_room(client)
    if needed is not None and needed > room.free:
        raise VersionWontFitError(
            f"a new version of {surface!r} with {users:,} lists needs about {needed:,} bytes "
            f"(as much per user as the current version, +{HEADROOM - 1:.0%}), but Redis has "
            f"{max(room.free, 0):,} of its maxmemory {room.limit:,} free (used {room.used:,}); "
            f"raise maxmemory by at least {needed - room.free:,} bytes or shorten "
            "old_version_ttl_seconds. Nothing was written; readers keep the current version."
        )
    return needed


def discard_version(client: redis.Redis, prefix: str, surface: str, version: str) -> int:
    """Delete every key of an unpublished version (``UNLINK``); return how many went.

    Refuses the current and the previous version: only a version no reader can reach is deleted.
    """
    if version in version_pointers(client, prefix, surface):
        raise RedisStoreError(f"version {version!r} of {surface!r} is served; not deleting it")
    removed = 0
    batch: list[bytes] = []
    for key in scan_keys(client, f"{version_base(prefix, surface, version)}:*"):
        batch.append(key)
        if len(batch) >= UNLINK_BATCH:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    client.zrem(versions_key(prefix, surface), version)
    return removed


def reclaim_abandoned(
    client: redis.Redis, prefix: str, surface: str, *, keep: str, older_than_seconds: float
) -> list[str]:
    """Delete versions left ``writing`` by a crashed writer more than ``older_than_seconds`` ago.

    ``keep`` (the version about to be written, which a retry resumes) is never touched, nor are
    the current and previous versions. Returns the versions deleted.
    """
    cutoff_ms = (time.time() - older_than_seconds) * 1000
    pairs = cast(
        "list[tuple[Any, float]]",
        client.zrangebyscore(versions_key(prefix, surface), "-inf", cutoff_ms, withscores=True),
    )
    served = set(version_pointers(client, prefix, surface))
    reclaimed = []
    for member, _ in pairs:
        version = _text(member) or ""
        if version == keep or version in served:
            continue
        if version_meta(client, prefix, surface, version).get("state") in ("writing", None):
            discard_version(client, prefix, surface, version)
            reclaimed.append(version)
    return reclaimed

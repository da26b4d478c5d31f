"""The version switch of the list store: check a written version, commit it, roll back, expire.

A version becomes visible to readers in one atomic Lua step (``commit.lua``) after its users and
parts were checked; the previous version stays for a one-command rollback until its TTL runs out.
The lifecycle as a whole is in the package docstring (:mod:`rankflow.store`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias, cast

import numpy as np
import redis

from rankflow.store.commands import _bytes, _run, _text, _utc_now, scan_keys, user_buckets_of
from rankflow.store.errors import NoCurrentVersionError, VersionCheckError
from rankflow.store.keys import (
    FEATURES,
    champion_key,
    current_key,
    fallback_key,
    meta_key,
    namespace,
    parts_key,
    previous_key,
    user_bucket_key,
    user_bucket_pattern,
    user_entries_pattern,
    user_key_pattern,
    versions_key,
)

SwitchStatus: TypeAlias = Literal[
    "switched", "unchanged", "skipped_older", "rolled_back", "refused"
]


@dataclass(frozen=True)
class SwitchResult:
    """Outcome of a commit or rollback: its status, the pointers after the call, and why."""

    status: SwitchStatus
    current: str | None
    previous: str | None
    reason: str = ""

    @property
    def changed(self) -> bool:
        """Whether readers now see a different version than before the call."""
        return self.status in ("switched", "rolled_back")

    def as_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict (for logs and the CLI)."""
        return asdict(self)


@dataclass(frozen=True)
class VersionInfo:
    """A version's meta hash and its approximate memory footprint."""

    version: str
    meta: dict[str, str]
    bytes_per_user: float | None
    approx_bytes: int | None


@dataclass(frozen=True)
class SurfaceStatus:
    """Current and previous versions of a surface and every registered version id."""

    surface: str
    current: VersionInfo | None
    previous: VersionInfo | None
    versions: list[str]

    def as_dict(self) -> dict[str, Any]:
        """Return the status as a JSON-ready dict (for the CLI)."""
        return asdict(self)


@dataclass(frozen=True)
class ExpireStats:
    """Versions given a TTL, how many keys were touched, and orphan keys found."""

    versions: list[str]
    keys: int
    orphan_keys: int


def count_users(
    client: redis.Redis,
    prefix: str,
    surface: str,
    version: str,
    *,
    scan_count: int = 1000,
    pattern: str | None = None,
) -> int:
    """Count a version's users (or the keys matching ``pattern``) with SCAN.

    A list version's users are its user keys (layout 1) plus its buckets' fields (layout 2).
    SCAN may return a key twice.

    Keys are de-duplicated by their 64-bit hash in a numpy array (8 bytes per key, so 10 M users
    need ~80 MB); a hash collision (odds ~n^2/2^65) can only undercount, i.e. refuse a commit.
    """
    wanted = pattern or user_key_pattern(prefix, surface, version)
    keys = scan_keys(client, wanted, count=scan_count)
    hashes = np.fromiter((hash(key) for key in keys), dtype=np.int64)
    found = int(np.unique(hashes).size)
    if pattern is None:
        found += count_fields(client, user_bucket_pattern(prefix, surface, version))
    return found


def _evicts(client: redis.Redis) -> bool:
    """Tell whether the server may evict keys (any ``maxmemory-policy`` but ``noeviction``).

    Read from ``INFO memory``, which the writer user may run (``CONFIG`` is denied to it as
    dangerous). A server that hides the policy is assumed to evict.
    """
    try:
        policy = client.info("memory").get("maxmemory_policy")
    except redis.ResponseError:
        return True
    return _text(policy) != "noeviction"


def count_fields(client: redis.Redis, pattern: str, *, chunk: int = 1000) -> int:
    """Count the fields of the distinct hashes matching ``pattern`` (e.g. item buckets)."""
    keys = sorted(set(scan_keys(client, pattern, count=chunk)))
    total = 0
    for start in range(0, len(keys), chunk):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + chunk]:
            pipe.hlen(key)
        total += sum(int(n) for n in pipe.execute())
    return total


def check_written(
    client: redis.Redis,
    prefix: str,
    surface: str,
    version: str,
    expected_users: int,
    expected_parts: Mapping[str, int] | None = None,
    key_pattern: str | None = None,
    bucket_pattern: str | None = None,
) -> None:
    """Check that every user key (or key matching ``key_pattern``) of a version is in Redis.

    Entities kept as fields of hash buckets (keys matching ``bucket_pattern``) count one each.

    With ``expected_parts`` (part -> users) on a server that never evicts, the writers'
    acknowledgements must match them exactly: a writer acknowledges only after every MSET of
    its part succeeded, and keys of a version never expire or get evicted there (O(parts)).
    Otherwise, or if the server may evict, the version's user keys are counted with SCAN.

    Raises:
        VersionCheckError: a part is missing or reports other counts, or the key count differs.
    """
    if expected_parts is not None:
        if sum(expected_parts.values()) != expected_users:
            raise VersionCheckError(
                f"the parts of {version!r} add up to {sum(expected_parts.values())} users, "
                f"not {expected_users}"
            )
        if not _evicts(client):
            raw = client.hgetall(parts_key(prefix, surface, version))
            acked = {_text(k) or "": int(v) for k, v in raw.items()}
            wanted = {str(k): int(v) for k, v in expected_parts.items()}
            if acked != wanted:
                missing = sorted(set(wanted) - set(acked))[:3]
                wrong = sorted(p for p in set(wanted) & set(acked) if acked[p] != wanted[p])[:3]
                raise VersionCheckError(
                    f"version {version!r} of {surface!r}: writer acknowledgements differ from "
                    f"the expected parts (missing {missing}, other counts {wrong}, "
                    f"{len(set(acked) - set(wanted))} unexpected); not switching"
                )
            return
    found = count_users(client, prefix, surface, version, pattern=key_pattern)
    if bucket_pattern is not None:
        found += count_fields(client, bucket_pattern)
    if found != expected_users:
        raise VersionCheckError(
            f"version {version!r} of {surface!r} has {found} user keys in Redis but the "
            f"writers reported {expected_users}; not switching"
        )


def commit_version(
    client: redis.Redis,
    prefix: str,
    surface: str,
    version: str,
    expected_users: int,
    *,
    expected_parts: Mapping[str, int] | None = None,
    required_key: str | None = None,
    key_pattern: str | None = None,
    bucket_pattern: str | None = None,
) -> SwitchResult:
    """Check a fully written version (:func:`check_written`) and make it current atomically.

    The old current becomes previous. A version whose ds is older than the current one's is
    not switched (status ``skipped_older``; the caller logs it); the same ds (a retry) replaces.

    Args:
        client: a client on the serving Redis.
        prefix: key prefix.
        surface: the surface.
        version: the version written by the writers.
        expected_users: the number of users the version must hold.
        expected_parts: the parts the writers acknowledge and their users, if they do.
        required_key: a key the version must have to be committed (default: its fallback list;
            a feature version: its schema).
        key_pattern: the keys counted instead of the user keys when acknowledgements are not
            enough (see :func:`check_written`).
        bucket_pattern: hash buckets whose fields are counted as entities too.

    Raises:
        VersionCheckError: counts differ, the fallback or meta is missing, or the version is
            not committable; nothing became visible.
    """
    check_written(
        client,
        prefix,
        surface,
        version,
        expected_users,
        expected_parts,
        key_pattern,
        bucket_pattern,
    )
    keys = [
        current_key(prefix, surface),
        previous_key(prefix, surface),
        meta_key(prefix, surface, version),
        required_key or fallback_key(prefix, surface, version),
    ]
    reply = _run(
        client, "commit", keys, [version, namespace(prefix, surface), expected_users, _utc_now()]
    )
    status, current, previous = (_text(x) for x in reply)
    if status == "switched":
        return SwitchResult("switched", current, previous)
    if status == "unchanged":
        return SwitchResult("unchanged", current, previous, f"{version} already is current")
    if status == "skipped_older":
        reason = f"ds of {version} is older than the ds of the current version {current}"
        return SwitchResult("skipped_older", current, previous, reason)
    raise VersionCheckError(f"version {version!r} of {surface!r} not committed: {status}")


# --------------------------------------------------------------------------- operations


def _has_ttl_sample(client: redis.Redis, prefix: str, surface: str, version: str, n: int) -> bool:
    """Return whether any of a sample of the version's user keys or buckets carries a TTL."""
    keys = list(scan_keys(client, user_entries_pattern(prefix, surface, version), limit=n))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
    return any(ttl != -1 for ttl in pipe.execute())


def rollback(client: redis.Redis, prefix: str, surface: str, *, sample: int = 100) -> SwitchResult:
    """Swap current and previous atomically, restoring the previous lists.

    Refuses (status ``refused``, ``reason`` says why, nothing changed) when there is no previous
    version or its keys are gone or carry a TTL (checked on meta, fallback and ``sample`` user
    keys).
    """
    current = _text(client.get(current_key(prefix, surface)))
    previous = _text(client.get(previous_key(prefix, surface)))
    if previous is None:
        return SwitchResult("refused", current, None, "no_previous: nothing to roll back to")
    if _has_ttl_sample(client, prefix, surface, previous, sample):
        reason = f"previous_expiring: user keys of {previous} carry a TTL"
        return SwitchResult("refused", current, previous, reason)
    keys = [current_key(prefix, surface), previous_key(prefix, surface)]
    reply = _run(client, "rollback", keys, [namespace(prefix, surface), previous])
    status, now_current, now_previous = (_text(x) for x in reply)
    if status != "rolled_back":
        return SwitchResult("refused", now_current, now_previous, f"{status}: {previous}")
    return SwitchResult("rolled_back", now_current, now_previous)


def _old_versions(client: redis.Redis, prefix: str, surface: str) -> tuple[list[str], list[str]]:
    """Return (versions to retire, versions whose meta is gone) of a surface.

    Old means neither current nor previous and either no longer writing (displaced, refused,
    retired) or created before the newer of current/previous (an abandoned attempt). Versions
    still being written after the last publication are left alone.
    """
    current = _text(client.get(current_key(prefix, surface)))
    previous = _text(client.get(previous_key(prefix, surface)))
    pairs = cast(
        "list[tuple[Any, float]]",
        client.zrange(versions_key(prefix, surface), 0, -1, withscores=True),
    )
    scored = {_text(member) or "": float(score) for member, score in pairs}
    protected = {v for v in (current, previous) if v is not None}
    threshold = max((scored.get(v, 0.0) for v in protected), default=0.0)
    others = [v for v in scored if v not in protected]
    pipe = client.pipeline(transaction=False)
    for v in others:
        pipe.hget(meta_key(prefix, surface, v), "state")
    old, gone = [], []
    for v, raw in zip(others, pipe.execute(), strict=True):
        state = _text(raw)
        if state is None:
            gone.append(v)
        elif state != "writing" or scored[v] < threshold:
            old.append(v)
    return old, gone


def _is_registered(client: redis.Redis, prefix: str, surface: str, version: bytes) -> bool:
    """Return whether a version id is registered, current or previous (read now, not earlier).

    Read when the version is first met during the scan, so a version begun after the scan
    started is never mistaken for an orphan.
    """
    if client.zscore(versions_key(prefix, surface), version) is not None:
        return True
    pointers = client.mget(current_key(prefix, surface), previous_key(prefix, surface))
    return version in {_bytes(p) for p in pointers}


def expire_old_versions(
    client: redis.Redis,
    prefix: str,
    surface: str,
    *,
    ttl_seconds: int,
    scan_count: int = 1000,
    batch: int = 1000,
) -> ExpireStats:
    """Give every version older than previous a TTL so it expires; never touches current/previous.

    Each old version gets one expiry time, recorded in its meta hash the first time, and all its
    keys are EXPIREAT'd to it in one SCAN pass over ``{prefix}:{surface}:v:*`` with pipelines of
    ``batch`` commands. Re-running is safe and never postpones an expiry. Keys of unregistered
    versions (orphans of an interrupted writer) get ``EXPIRE ttl NX``.
    """
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    old, gone = _old_versions(client, prefix, surface)
    if gone:
        client.zrem(versions_key(prefix, surface), *gone)
    expire_at: dict[bytes, int] = {}
    for version in old:
        keys = [
            current_key(prefix, surface),
            previous_key(prefix, surface),
            meta_key(prefix, surface, version),
            fallback_key(prefix, surface, version),
        ]
        at = _text(_run(client, "retire", keys, [version, int(time.time()) + ttl_seconds]))
        if at is not None and at.isdigit():
            expire_at[version.encode()] = int(at)
    start = len(namespace(prefix, surface)) + 3
    registered: dict[bytes, bool] = {}
    pipe = client.pipeline(transaction=False)
    touched = orphans = 0
    for key in scan_keys(client, f"{namespace(prefix, surface)}:v:*", count=scan_count):
        owner = key[start:].split(b":", 1)[0]
        if owner in expire_at:
            pipe.expireat(key, expire_at[owner])
            touched += 1
        else:
            if owner not in registered:
                registered[owner] = _is_registered(client, prefix, surface, owner)
            if not registered[owner]:
                pipe.expire(key, ttl_seconds, nx=True)
                orphans += 1
        if len(pipe) >= batch:
            pipe.execute()
    pipe.execute()
    return ExpireStats(sorted(old), touched, orphans)


def bytes_per_user(
    client: redis.Redis, prefix: str, surface: str, version: str, *, sample: int = 1000
) -> float | None:
    """Return the mean ``MEMORY USAGE`` per user of a sample of the version's lists.

    A bucket's memory is shared by its users: the sample's bytes over the users it holds.
    """
    keys = list(scan_keys(client, user_entries_pattern(prefix, surface, version), limit=sample))
    if not keys:
        return None
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)  # every field of a bucket, not a sample of five
        if _is_bucket(key):
            pipe.hlen(key)
        else:
            pipe.exists(key)
    replies = pipe.execute()
    sizes = [int(s or 0) for s in replies[0::2]]
    users = [int(n or 0) for n in replies[1::2]]
    return sum(sizes) / sum(users) if sum(users) else None


def user_bucket_encoding(
    client: redis.Redis, prefix: str, surface: str, version: str, user_id: int | None
) -> str:
    """Redis's encoding of the bucket holding ``user_id``'s list ('' for a key per user).

    ``listpack`` unless a list outgrew the server's ``hash-max-listpack-value`` (4 x K bytes
    are needed), which makes every bucket a hash table of about twice the memory.
    """
    buckets = user_buckets_of(client, prefix, surface, version)
    if buckets is None or user_id is None:
        return ""
    key = user_bucket_key(prefix, surface, version, user_id, buckets)
    return _text(client.object("encoding", key)) or ""


def _is_bucket(key: bytes) -> bool:
    """Whether a key of a list version is a user bucket (``...:b:<n>``) or a user's key."""
    return key.rsplit(b":", 2)[-2] == b"b"


def version_meta(client: redis.Redis, prefix: str, surface: str, version: str) -> dict[str, str]:
    """Return a version's meta hash as text (empty for an unknown version)."""
    raw: Any = client.hgetall(meta_key(prefix, surface, version))
    return {_text(k) or "": _text(v) or "" for k, v in raw.items()}


def version_pointers(
    client: redis.Redis, prefix: str, surface: str
) -> tuple[str | None, str | None]:
    """The version readers get now and the one a rollback returns to (None where unset)."""
    current, previous = cast(
        list[Any], client.mget(current_key(prefix, surface), previous_key(prefix, surface))
    )
    return _text(current), _text(previous)


def announce_champion(client: redis.Redis, prefix: str, version: str) -> None:
    """Announce that the champion alias now names ``version``, with when, so services follow."""
    client.set(champion_key(prefix), json.dumps({"version": version, "at": time.time()}))


def serving_pointers(client: redis.Redis, prefix: str) -> tuple[str | None, str | None]:
    """The current feature version and the champion announcement, in one round trip."""
    features, champion = cast(
        list[Any], client.mget(current_key(prefix, FEATURES), champion_key(prefix))
    )
    return _text(features), _text(champion)


def earlier_outcome(
    client: redis.Redis, prefix: str, surface: str, version: str
) -> SwitchResult | None:
    """What an earlier attempt at publishing ``version`` decided, read from Redis alone.

    ``switched`` when the version is (or was) published: it is current or previous, or its meta
    records a publication time (a later night may have retired it since); ``skipped_older`` when
    its commit was refused because a newer day is current. None when no attempt committed: the
    version is new or still ``writing`` (an abandoned attempt, which ``begin_version`` resumes),
    or was abandoned and retired since (``begin_version`` then refuses it with a clear error).
    """
    meta = version_meta(client, prefix, surface, version)
    current, previous = version_pointers(client, prefix, surface)
    if version in (current, previous) or meta.get("published_at"):
        reason = f"{version} was published by an earlier attempt"
        return SwitchResult("switched", current, previous, reason)
    if meta.get("refused") == "skipped_older":  # kept when the refused version is retired
        reason = f"ds of {version} is older than the ds of the current version {current}"
        return SwitchResult("skipped_older", current, previous, reason)
    return None


def current_version(client: redis.Redis, prefix: str, surface: str) -> str:
    """Return the id of the version readers of ``surface`` use now.

    Raises:
        NoCurrentVersionError: nothing is published for the surface.
    """
    version = _text(client.get(current_key(prefix, surface)))
    if version is None:
        raise NoCurrentVersionError(
            f"no published version for surface {surface!r} under prefix {prefix!r} "
            f"(key {current_key(prefix, surface)!r} is missing)"
        )
    return version


def version_info(
    client: redis.Redis, prefix: str, surface: str, version: str, *, sample: int = 200
) -> VersionInfo:
    """Return a version's meta and approximate memory (sampled bytes/user x users + fixed keys)."""
    meta = version_meta(client, prefix, surface, version)
    per_user = bytes_per_user(client, prefix, surface, version, sample=sample)
    approx = None
    if per_user is not None and meta.get("users", "").isdigit():
        fixed = sum(
            int(client.memory_usage(key) or 0)
            for key in (meta_key(prefix, surface, version), fallback_key(prefix, surface, version))
        )
        approx = round(per_user * int(meta["users"])) + fixed
    return VersionInfo(version, meta, per_user, approx)


def status(client: redis.Redis, prefix: str, surface: str, *, sample: int = 200) -> dict[str, Any]:
    """Return :func:`surface_status` as a JSON-ready dict (what ``rankflow status`` prints)."""
    return surface_status(client, prefix, surface, sample=sample).as_dict()


def surface_status(
    client: redis.Redis, prefix: str, surface: str, *, sample: int = 200
) -> SurfaceStatus:
    """Return the current and previous versions of a surface with their meta and memory."""
    current = _text(client.get(current_key(prefix, surface)))
    previous = _text(client.get(previous_key(prefix, surface)))
    versions = [_text(m) or "" for m in client.zrange(versions_key(prefix, surface), 0, -1)]
    return SurfaceStatus(
        surface=surface,
        current=version_info(client, prefix, surface, current, sample=sample) if current else None,
        previous=version_info(client, prefix, surface, previous, sample=sample)
        if previous
        else None,
        versions=versions,
    )

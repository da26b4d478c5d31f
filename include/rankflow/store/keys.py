"""Redis key layout of the ranked lists (pure): one namespace per prefix and surface."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import date
from typing import Any

import numpy as np

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


# --------------------------------------------------------------------------- keys (pure)


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a safe key segment (letters, digits, ``_.-``), else raise."""
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} must match [A-Za-z0-9_.-]+ (no ':' or glob characters): {value!r}"
        )
    return value


def namespace(prefix: str, surface: str) -> str:
    """Return ``{prefix}:{surface}``, the root of every key of one surface."""
    return f"{check_name(prefix, 'prefix')}:{check_name(surface, 'surface')}"


def current_key(prefix: str, surface: str) -> str:
    """Return the key of the pointer to the version readers use (a string holding its id)."""
    return f"{namespace(prefix, surface)}:current"


def previous_key(prefix: str, surface: str) -> str:
    """Return the key of the pointer to the version ``rollback`` restores."""
    return f"{namespace(prefix, surface)}:previous"


def versions_key(prefix: str, surface: str) -> str:
    """Return the key of the sorted set of known versions (score: creation time in ms)."""
    return f"{namespace(prefix, surface)}:versions"


def repair_lock_key(prefix: str, surface: str) -> str:
    """Return the key of the lock that keeps a surface's repairs from interleaving."""
    return f"{namespace(prefix, surface)}:repair-lock"


def version_base(prefix: str, surface: str, version: str) -> str:
    """Return ``{prefix}:{surface}:v:{version}``, the root of one version's keys."""
    return f"{namespace(prefix, surface)}:v:{check_name(version, 'version')}"


def meta_key(prefix: str, surface: str, version: str) -> str:
    """Return the key of a version's meta hash (ds, model_version, k, users, ...)."""
    return f"{version_base(prefix, surface, version)}:meta"


def fallback_key(prefix: str, surface: str, version: str) -> str:
    """Return the key of a version's fallback list, served to users without their own list."""
    return f"{version_base(prefix, surface, version)}:fallback"


def user_id_text(user_id: int | str | np.integer[Any]) -> str:
    """Return the canonical text of a user id in keys: integers in decimal, strings as given."""
    if isinstance(user_id, bool):
        raise TypeError("a user id must be an int or a str, not a bool")
    if isinstance(user_id, int | np.integer):
        return str(int(user_id))
    if isinstance(user_id, str) and user_id:
        return user_id
    raise TypeError(f"a user id must be an int or a non-empty str: {user_id!r}")


def user_key(prefix: str, surface: str, version: str, user_id: int | str) -> str:
    """Return the key holding one user's list in one version."""
    return f"{version_base(prefix, surface, version)}:u:{user_id_text(user_id)}"


def user_key_pattern(prefix: str, surface: str, version: str) -> str:
    """Return the SCAN pattern matching every user key of one version (layout 1)."""
    return f"{version_base(prefix, surface, version)}:u:*"


# lists of layout 2 live in hash buckets: ``{version}:b:{user id mod buckets}``, field = user id
USERS_PER_BUCKET = 32
MAX_BUCKETED_USER_ID = 2**53 - 1  # ids a Lua script (double precision) takes modulo exactly


def bucket_count(entities: int, per_bucket: int) -> int:
    """How many hash buckets ``entities`` values go into: the first prime >= entities / per_bucket.

    A prime spreads ids that share a stride (all multiples of 10 or 1,000, say) evenly over
    ``id mod buckets``, where a round count would put them all in a few buckets.
    """
    wanted = max(2, -(-entities // per_bucket))
    while any(wanted % d == 0 for d in range(2, int(wanted**0.5) + 1)):
        wanted += 1
    return wanted


def bucket_key_prefix(prefix: str, surface: str, version: str, group: str) -> str:
    """Return what every bucket key of a version's ``group`` starts with (the number follows)."""
    return f"{version_base(prefix, surface, version)}:{check_name(group, 'group')}:"


def bucket_key(prefix: str, surface: str, version: str, group: str, bucket: int) -> str:
    """Return the key of one hash bucket of a version (``b``: users' lists; ``i``: items)."""
    return f"{bucket_key_prefix(prefix, surface, version, group)}{int(bucket)}"


def bucketed_user_id(user_id: int | str | np.integer[Any]) -> int:
    """Return a user id of a bucketed list version: an integer in ``0 .. 2**53 - 1``."""
    if isinstance(user_id, bool) or not isinstance(user_id, int | np.integer):
        raise TypeError(f"list versions keep integer user ids only: {user_id!r}")
    if not 0 <= int(user_id) <= MAX_BUCKETED_USER_ID:
        raise ValueError(f"user ids must be within 0 .. 2**53 - 1: {user_id}")
    return int(user_id)


def user_bucket_key(prefix: str, surface: str, version: str, user_id: int, buckets: int) -> str:
    """Return the hash holding a user's list in a bucketed version (field: the id in decimal)."""
    return bucket_key(prefix, surface, version, "b", bucketed_user_id(user_id) % buckets)


def user_bucket_pattern(prefix: str, surface: str, version: str) -> str:
    """Return the SCAN pattern of a version's user buckets."""
    return f"{version_base(prefix, surface, version)}:b:*"


def user_entries_pattern(prefix: str, surface: str, version: str) -> str:
    """Return the SCAN pattern of the keys holding a version's lists, in either layout."""
    return f"{version_base(prefix, surface, version)}:[ub]:*"


def new_version_id(ds: date, run_id: str | None = None) -> str:
    """Return a version id ``YYYYMMDD-<10 hex>``: sorts by ds, unique per run.

    Args:
        ds: the logical date the lists were computed for.
        run_id: the orchestrator's run id (plus try number for a fresh version per attempt);
            hashed so the id stays a safe key segment. ``None`` draws a random token.
    """
    token = (
        hashlib.blake2b(run_id.encode(), digest_size=5).hexdigest()
        if run_id is not None
        else uuid.uuid4().hex[:10]
    )
    return f"{ds:%Y%m%d}-{token}"


def parts_key(prefix: str, surface: str, version: str) -> str:
    """Return the key of a version's hash of writer acknowledgements (part -> users written)."""
    return f"{version_base(prefix, surface, version)}:parts"


def publication_version(scored: dict[str, Any], run_id: str) -> str:
    """Return the id shared by the S3 export and the Redis version of one run (same on retry).

    It names the run, the model and the gold commit, so re-scoring within a run publishes a
    fresh version instead of writing over the keys of the earlier attempt.
    """
    ds = date.fromisoformat(str(scored["ds"]))
    gold = scored.get("gold", {}).get("commit")
    return new_version_id(ds, f"{run_id}|model={scored['model_version']}|gold={gold}")


# --------------------------------------------------------------------------- online features

FEATURES = "features"  # the namespace segment of the feature versions (never a list surface)


def feature_key(prefix: str, version: str, group: str, entity_id: int | str) -> str:
    """Return the key of one entity's value of a feature group (``u``, ``p``, ``h``, ``i``)."""
    base = version_base(prefix, FEATURES, version)
    return f"{base}:{check_name(group, 'group')}:{user_id_text(entity_id)}"


def item_bucket_key(prefix: str, version: str, item_id: int, buckets: int) -> str:
    """Return the hash holding an item's vector (field: the item id in decimal)."""
    return bucket_key(prefix, FEATURES, version, "i", int(item_id) % buckets)


def schema_key(prefix: str, version: str) -> str:
    """Return the key of a feature version's schema (JSON: groups, features, vocabulary)."""
    return f"{version_base(prefix, FEATURES, version)}:schema"


def feature_key_pattern(prefix: str, version: str) -> str:
    """Return the SCAN pattern of the per-entity keys of a feature version (users)."""
    return f"{version_base(prefix, FEATURES, version)}:[uph]:*"


def item_bucket_pattern(prefix: str, version: str) -> str:
    """Return the SCAN pattern of a feature version's item buckets."""
    return f"{version_base(prefix, FEATURES, version)}:i:*"


# --------------------------------------------------------------------------- serving log


def champion_key(prefix: str) -> str:
    """Return the key announcing the champion alias moved (ranking services re-read MLflow)."""
    return f"{prefix}:model:champion"


def served_log_key(prefix: str) -> str:
    """Return the Redis stream the ranking service logs every answer to (drained nightly)."""
    return f"{prefix}:log:served"


def refusals_log_key(prefix: str) -> str:
    """Return the Redis stream of the models ranking services refused (schema mismatch)."""
    return f"{prefix}:log:refusals"

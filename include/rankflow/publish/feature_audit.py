"""The audit of a feature version: a hash sample of Redis and of the snapshot against Delta.

Before a feature version is switched to, a seeded hash sample of users and items is read back
as readers read it (``store.vectors``, ``serving.snapshot``) and compared with the rows of the
recorded Delta commit at float32, NaN-aware; any difference refuses the switch.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from rankflow.features.on_demand import ITEM_ATTRIBUTES, MAP_COLUMNS
from rankflow.features.registry import AFFINITY_DIMENSIONS, ITEM_FEATURES, USER_FEATURES
from rankflow.store.vectors import GROUPS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from rankflow.config import Settings
    from rankflow.features.batch import FeatureFrames


class FeatureAuditError(RuntimeError):
    """The audit found a value in Redis or the snapshot that differs from its Delta row."""


def hash_sample(frame: DataFrame, column: str, total: int, size: int, seed: int) -> DataFrame:
    """About ``max(size, 1.25 x size)`` rows chosen by a seeded hash of ``column`` (all if fewer).

    A hash, not a random draw: the same seed picks the same entities on every run and retry.
    """
    from pyspark.sql import functions as F

    share = min(1.0, 1.25 * size / max(total, 1))
    bucket = F.pmod(F.xxhash64(F.lit(seed), F.col(column)), F.lit(1_000_000))
    return frame.where(bucket < F.lit(round(share * 1_000_000)))


def _same(stored: np.ndarray, delta: list[Any]) -> bool:
    """Float32 equality, NaN-aware (a null in Delta is NaN online)."""
    expected = np.array([np.nan if v is None else v for v in delta], dtype=np.float64)
    return bool(np.array_equal(stored, expected.astype(np.float32), equal_nan=True))


def _fetch(client: Any, keys: list[str], chunk: int = 1000) -> list[bytes | None]:
    """MGET many keys in chunks."""
    values: list[bytes | None] = []
    for start in range(0, len(keys), chunk):
        values += client.mget(keys[start : start + chunk])
    return values


def fetch_items(
    client: Any, prefix: str, version: str, item_ids: list[int], chunk: int = 1000
) -> list[bytes | None]:
    """Item vectors as readers get them: HGET from the buckets the version's schema names."""
    from rankflow.store.keys import item_bucket_key, schema_key

    buckets = int(json.loads(client.get(schema_key(prefix, version)) or b"{}")["item_buckets"])
    values: list[bytes | None] = []
    for start in range(0, len(item_ids), chunk):
        pipe = client.pipeline(transaction=False)
        for item in item_ids[start : start + chunk]:
            pipe.hget(item_bucket_key(prefix, version, item, buckets), str(item))
        values += pipe.execute()
    return values


def audit(
    spark: SparkSession,
    settings: Settings,
    frames: FeatureFrames,
    expected: dict[str, int],
    version: str,
    snapshot: str,
    sample: int,
    seed: int,
) -> dict[str, int]:
    """Compare a hash sample of Redis values and of the snapshot file with the Delta rows.

    Decodes what readers will read (``store.vectors``, ``serving.snapshot``) and compares it with
    the rows of the recorded commit at float32, NaN-aware: vectors, profiles (through the
    vocabulary), histories, and the snapshot's vectors, attribute codes and sold flags.

    Raises:
        FeatureAuditError: any sampled value differs (the first few are named).
    """
    from rankflow.serving.snapshot import load_snapshot
    from rankflow.store.client import checked_client
    from rankflow.store.keys import feature_key, schema_key
    from rankflow.store.vectors import decode_history, decode_user, decode_vector

    prefix = settings.redis.key_prefix
    client = checked_client(settings.redis.url, "The audit could not read Redis.")
    wrong: list[str] = []
    users = hash_sample(frames.users, "user_id", expected[GROUPS["user"]], sample, seed).select(
        "user_id", *USER_FEATURES, "declared_size", *MAP_COLUMNS
    )
    user_rows = users.toArrow().to_pylist()
    seen = frames.seen.join(users.select("user_id"), "user_id", "left_semi")
    shown = shown_pairs(seen.select("user_id", "item_id", "seen_before", "clicked_before"))
    schema = json.loads(client.get(schema_key(prefix, version)) or b"{}")
    vocab = schema.get("vocabulary", [])
    ids = [int(r["user_id"]) for r in user_rows]
    fetched = _fetch(
        client,
        [feature_key(prefix, version, g, i) for i in ids for g in ("u", "h")],
    )
    for n, row in enumerate(user_rows):
        value, history = fetched[2 * n : 2 * n + 2]
        uid = row["user_id"]
        if value is None:
            wrong.append(f"user value {uid}")
        else:
            vector, profile = decode_user(value, len(USER_FEATURES), AFFINITY_DIMENSIONS)
            if not _same(vector, [row[f] for f in USER_FEATURES]):
                wrong.append(f"user vector {uid}")
            if not same_profile(profile, row, vocab):
                wrong.append(f"user profile {uid}")
        pairs = sorted(shown.get(uid, []))
        if (history is None) != (not pairs):
            wrong.append(f"user history {uid}")
        elif history is not None:
            got = decode_history(history)
            if got.item_ids.tolist() != [e[0] for e in pairs] or not (
                _same(got.seen, [e[1] for e in pairs]) and _same(got.clicked, [e[2] for e in pairs])
            ):
                wrong.append(f"user history {uid}")
    items = hash_sample(frames.items, "item_id", expected[GROUPS["item"]], sample, seed).select(
        "item_id", *ITEM_FEATURES, *ITEM_ATTRIBUTES, "is_sold"
    )
    item_rows = items.toArrow().to_pylist()
    stored = fetch_items(client, prefix, version, [int(r["item_id"]) for r in item_rows])
    local = load_snapshot(snapshot)
    item_ids = np.array([r["item_id"] for r in item_rows], dtype=np.int64)
    at, known = local.positions(item_ids)
    for n, row in enumerate(item_rows):
        values = [row[f] for f in ITEM_FEATURES]
        value = stored[n]
        if value is None or not _same(decode_vector(value, len(ITEM_FEATURES)), values):
            wrong.append(f"item vector {row['item_id']}")
        if not known[n] or not _same(local.vectors[at[n]], values):
            wrong.append(f"snapshot item {row['item_id']}")
            continue
        coded = [local.codes[a][at[n]] for a in ITEM_ATTRIBUTES]
        names = [vocab[c] if c >= 0 else None for c in coded]
        if names != [row[a] for a in ITEM_ATTRIBUTES] or bool(local.is_sold[at[n]]) != bool(
            row["is_sold"]
        ):
            wrong.append(f"snapshot item {row['item_id']}")
    if len(local.item_ids) != expected[GROUPS["item"]]:
        wrong.append(f"snapshot holds {len(local.item_ids)} items")
    if wrong:
        raise FeatureAuditError(
            f"feature version {version}: {len(wrong)} sampled values differ from the Delta "
            f"commit (first: {wrong[:5]}); not switching"
        )
    return {"users": len(user_rows), "items": len(item_rows)}


def shown_pairs(seen: DataFrame) -> dict[int, list[tuple[int, Any, Any]]]:
    """Each user's ``(item, seen, clicked)`` rows, read through Arrow (not row by row)."""
    rows = seen.toArrow()
    shown: dict[int, list[tuple[int, Any, Any]]] = {}
    columns = [rows.column(n).to_pylist() for n in ("user_id", "item_id")]
    counts = [rows.column(n).to_pylist() for n in ("seen_before", "clicked_before")]
    for user, item, times, clicks in zip(*columns, *counts, strict=True):
        shown.setdefault(int(user), []).append((int(item), times, clicks))
    return shown


def same_profile(profile: Any, row: dict[str, Any], vocab: list[str]) -> bool:
    """Whether a decoded profile holds the row's declared size and affinities at float32."""
    size = vocab[profile.declared_size] if profile.declared_size >= 0 else None
    if size != row["declared_size"]:
        return False
    for dim, column in zip(AFFINITY_DIMENSIONS, MAP_COLUMNS, strict=True):
        entries = sorted((k, v) for k, v in (row[column] or []))
        got = sorted(
            (vocab[c], s) for c, s in zip(profile.codes[dim], profile.shares[dim], strict=True)
        )
        if [k for k, _ in entries] != [k for k, _ in got]:
            return False
        if not _same(np.array([s for _, s in got], np.float32), [v for _, v in entries]):
            return False
    return True

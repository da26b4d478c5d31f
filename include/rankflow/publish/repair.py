"""Between nightly runs, sold items leave the published lists (no re-ranking, no new version).

Items on a second-hand marketplace are unique: once sold, a list that shows them wastes a slot.
The repair reads the published version's lists from the gold files it was built from (named in
the version's meta hash), removes every item sold up to the repair time, and overwrites the
affected users' keys of that same version in place. Each key is replaced whole with ``SET XX
KEEPTTL``, so a reader still gets one complete list of one version; the repair is idempotent
(lists are always recomputed from gold minus all sales so far) and never creates a key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rankflow.config import Settings
from rankflow.quality.raw import sales_hour_dir, sales_quarantine_dir, sales_quarantine_path
from rankflow.quality.sales import DEFAULT_MAX_LINE_BYTES, RejectedLine, read_sales_file
from rankflow.runs import repairs_log
from rankflow.store.client import redis_client

if TYPE_CHECKING:
    import redis


LOG = logging.getLogger(__name__)


class RepairError(RuntimeError):
    """The published version cannot be repaired (no current version, or its source is unknown)."""


@dataclass(frozen=True)
class RepairResult:
    """What one repair of a surface's current version did."""

    surface: str
    version: str
    list_ds: str
    repaired_at: str
    sold_items: int
    users_repaired: int
    entries_removed: int
    fallback_removed: int
    seconds: float
    lists_emptied: int = 0  # users whose every item sold: they now get the fallback list
    sales_quarantined: int = 0  # lines of the hourly drops that are not sales (with reasons)

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON-ready record."""
        return asdict(self)


@dataclass
class SalesRead:
    """The sales of the complete hours read, and per hour the lines that were not sales."""

    sales: dict[int, datetime] = field(default_factory=dict)
    rejected: dict[datetime, list[RejectedLine]] = field(default_factory=dict)

    @property
    def quarantined(self) -> int:
        """How many lines were rejected."""
        return sum(len(lines) for lines in self.rejected.values())


def read_sales(
    raw: Path, since: date, until: datetime, max_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> SalesRead:
    """Read item id -> sale time of the sales after day ``since`` up to ``until`` (UTC).

    Only complete hourly drops (with ``_SUCCESS``) are read; a sale later than ``until`` in the
    last hour's drop is not counted yet. A line that is not a sale (:mod:`rankflow.quality.sales`)
    is kept with its reason under its hour, and the rest of the hour is applied.
    """
    read = SalesRead()
    hour = datetime(since.year, since.month, since.day, tzinfo=UTC) + timedelta(days=1)
    while hour <= until:
        folder = sales_hour_dir(raw, hour)
        if (folder / "_SUCCESS").exists():
            for path in sorted(folder.glob("*.jsonl")):
                for parsed in read_sales_file(path, max_bytes):
                    if isinstance(parsed, RejectedLine):
                        read.rejected.setdefault(hour, []).append(parsed)
                    elif parsed.sold_ts <= until:
                        read.sales.setdefault(parsed.item_id, parsed.sold_ts)
        hour += timedelta(hours=1)
    return read


def quarantine_sales(settings: Settings, read: SalesRead) -> list[Path]:
    """Write each hour's rejected sales lines, with their reasons, beside the lake (idempotent)."""
    written = []
    for hour, lines in sorted(read.rejected.items()):
        path = sales_quarantine_path(settings, hour)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(".tmp")
        staged.write_text("".join(json.dumps(line.as_dict()) + "\n" for line in lines))
        staged.replace(path)  # whole or not at all: a re-read hour rewrites the same file
        written.append(path)
    return written


def drop_sold(
    offsets: np.ndarray, items: np.ndarray, sold: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Remove sold items from lists given as Arrow-style offsets and flat items.

    Returns (rows touched, their new offsets, their new flat items, entries removed): only the
    lists that held a sold item, in their original order minus the sold items.
    """
    hit = np.isin(items, sold)
    if not hit.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, np.zeros(1, dtype=np.int64), items[:0], 0
    row_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    touched = np.unique(row_of[hit])
    keep_entry = np.isin(row_of, touched) & ~hit
    lengths = np.bincount(row_of[keep_entry], minlength=len(offsets) - 1)[touched]
    new_offsets = np.concatenate([[0], np.cumsum(lengths)])
    return touched, new_offsets, items[keep_entry], int(hit.sum())


def gold_batches(meta: dict[str, str], surface: str) -> Iterator[Any]:
    """Yield (user_id, item_ids) Arrow batches of the gold files a version was published from."""
    from rankflow.lake.delta_log import read_commit
    from rankflow.lake.gold import snapshot_of
    from rankflow.publish.redis import read_list_file

    if not meta.get("gold_table") or not meta.get("gold_commit"):
        raise RepairError(
            "the current version's meta names no gold source (published before the repair "
            "existed?); the next nightly publication will carry it"
        )
    table, commit = meta["gold_table"], int(meta["gold_commit"])
    snapshot = snapshot_of(
        table, read_commit(table, commit), date.fromisoformat(meta["ds"]), surface
    )
    for location, _ in snapshot.locations():
        yield from read_list_file(location)


def list_arrays(batch: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (user ids, offsets, flat items) of a batch holding lists or u32le values."""
    import pyarrow as pa

    users = batch.column(0).to_numpy(zero_copy_only=False)
    values = batch.column(1)
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        # read the Arrow buffers directly: value offsets (bytes) and the concatenated values
        wide = pa.types.is_large_binary(values.type)
        _, offsets_buffer, data_buffer = values.buffers()
        byte_offsets = np.frombuffer(offsets_buffer, dtype=np.int64 if wide else np.int32)
        byte_offsets = byte_offsets[values.offset : values.offset + len(values) + 1].astype(
            np.int64
        )
        data = np.frombuffer(data_buffer, dtype=np.uint8)[byte_offsets[0] : byte_offsets[-1]]
        lengths = np.diff(byte_offsets) // 4
        flat = data.view("<u4").astype(np.int64)
    else:
        lengths = values.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return users, offsets, flat


def repair_version(
    client: redis.Redis,
    prefix: str,
    surface: str,
    version: str,
    meta: dict[str, str],
    sold: np.ndarray,
    batch_size: int,
) -> tuple[int, int, int, int]:
    """Rewrite the lists of ``version`` that hold a sold item.

    A list whose every item sold is deleted, so that user is served the fallback list rather
    than an empty one. Returns (users repaired, entries removed, fallback entries removed,
    lists emptied).
    """
    from rankflow.store.commands import lua_source
    from rankflow.store.encoding import decode_items, encode_items
    from rankflow.store.keys import fallback_key, user_bucket_key, user_key

    buckets = int(meta["user_buckets"]) if meta.get("user_buckets") else None
    relist = client.register_script(lua_source("relist"))
    users_repaired = entries_removed = emptied = 0
    for batch in gold_batches(meta, surface):
        users, offsets, flat = list_arrays(batch)
        touched, new_offsets, kept, removed = drop_sold(offsets, flat, sold)
        pipe = client.pipeline(transaction=False)
        for n, row in enumerate(touched):
            user = int(users[row])
            left = kept[new_offsets[n] : new_offsets[n + 1]]
            value = encode_items(left) if len(left) else b""  # nothing left: the fallback
            emptied += not len(left)
            if buckets is not None:
                bucket = user_bucket_key(prefix, surface, version, user, buckets)
                relist(keys=[bucket], args=[str(user), value], client=pipe)
            elif value:
                pipe.set(user_key(prefix, surface, version, user), value, xx=True, keepttl=True)
            else:
                pipe.delete(user_key(prefix, surface, version, user))
            if len(pipe) >= batch_size:
                pipe.execute()
        pipe.execute()
        users_repaired += len(touched)
        entries_removed += removed
    key = fallback_key(prefix, surface, version)
    fallback: Any = client.get(key)
    fallback_removed = 0
    if fallback:
        items = np.array(decode_items(bytes(fallback)), dtype=np.int64)
        keep = ~np.isin(items, sold)
        fallback_removed = int((~keep).sum())
        if fallback_removed:
            client.set(key, encode_items(items[keep]), xx=True, keepttl=True)
    return users_repaired, entries_removed, fallback_removed, emptied


def current_meta(client: redis.Redis, prefix: str, surface: str) -> tuple[str, dict[str, str]]:
    """Return the current version id of a surface and its meta hash."""
    from rankflow.store.errors import NoCurrentVersionError
    from rankflow.store.versions import current_version, version_meta

    try:
        version = current_version(client, prefix, surface)
    except NoCurrentVersionError as error:
        raise RepairError(f"nothing to repair: {error}") from error
    return version, version_meta(client, prefix, surface, version)


def max_line_bytes(settings: Settings) -> int:
    """The longest raw line accepted, in bytes (``ingest.max_line_bytes``)."""
    return int(settings.pipeline["ingest"]["max_line_bytes"])


REPAIR_LOCK_SECONDS = 900  # a repair holding the lock longer is presumed dead and loses it
REPAIR_WAIT_SECONDS = 1800  # how long a repair waits for the surface's other repair


def run_repair(settings: Settings, surface: str, at: datetime | None = None) -> RepairResult:
    """Remove the items sold up to ``at`` (default now) from the lists readers currently get.

    The repairs of one surface never interleave (a Redis lock per surface), and each rewrites
    the lists from gold minus every sale up to the latest cutoff any repair of this version has
    used, so a repair that was started earlier but runs later never puts sold items back.
    """
    from redis.exceptions import LockError

    from rankflow.store.keys import meta_key, repair_lock_key

    began = time.monotonic()
    at = at or datetime.now(UTC)
    client = redis_client(settings.redis.url)
    prefix = settings.redis.key_prefix
    lock = client.lock(
        repair_lock_key(prefix, surface),
        timeout=REPAIR_LOCK_SECONDS,
        blocking_timeout=REPAIR_WAIT_SECONDS,
    )
    if not lock.acquire():
        raise RepairError(
            f"another repair of {surface!r} held the lock for {REPAIR_WAIT_SECONDS} s; not repaired"
        )
    try:
        version, meta = current_meta(client, prefix, surface)
        if meta.get("repaired_up_to"):
            at = max(at, datetime.fromisoformat(meta["repaired_up_to"]))
        list_ds = date.fromisoformat(meta["ds"])
        read = read_sales(settings.paths.raw, list_ds, at, max_line_bytes(settings))
        quarantine_sales(settings, read)
        sales = read.sales
        sold = np.fromiter(sales, dtype=np.int64, count=len(sales))
        users, entries, fallback, emptied = repair_version(
            client, prefix, surface, version, meta, sold, settings.redis.mset_batch
        )
        client.hset(meta_key(prefix, surface, version), "repaired_up_to", at.isoformat())
    finally:
        with contextlib.suppress(LockError):  # it expired under a very slow repair
            lock.release()
    return RepairResult(
        surface=surface,
        version=version,
        list_ds=list_ds.isoformat(),
        repaired_at=at.isoformat(),
        sold_items=len(sales),
        users_repaired=users,
        entries_removed=entries,
        fallback_removed=fallback,
        seconds=round(time.monotonic() - began, 3),
        lists_emptied=emptied,
        sales_quarantined=read.quarantined,
    )


def served_sold_share(
    settings: Settings,
    surface: str,
    at: datetime | None = None,
    grace: timedelta = timedelta(hours=1),
) -> tuple[float, int]:
    """Return the share of served list entries whose item sold more than ``grace`` before ``at``.

    Reads the lists readers get now from Redis (every user of the published gold files), so it
    measures what is served, not what the repair believes it wrote. Returns (share, entries).
    """
    from rankflow.store.encoding import decode_item_array
    from rankflow.store.reader import stored_lists

    at = at or datetime.now(UTC)
    client = redis_client(settings.redis.url)
    prefix = settings.redis.key_prefix
    version, meta = current_meta(client, prefix, surface)
    sales = read_sales(
        settings.paths.raw, date.fromisoformat(meta["ds"]), at - grace, max_line_bytes(settings)
    ).sales
    sold = np.fromiter(sales, dtype=np.int64, count=len(sales))
    served = stale = 0
    for batch in gold_batches(meta, surface):
        users = [int(user) for user in batch.column(0).to_pylist()]
        values = stored_lists(client, prefix, surface, version, users)
        flat = decode_item_array(b"".join(v for v in values if v))
        served += len(flat)
        stale += int(np.isin(flat, sold).sum())
    return (stale / served if served else 0.0), served


def record_repair(settings: Settings, result: RepairResult) -> Path:
    """Append a repair's figures to the surface's history."""
    path = repairs_log(settings, result.surface)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log:
        log.write(json.dumps(result.as_dict()) + "\n")
    return path


def repair_and_record(settings: Settings, surface: str, at: datetime | None = None) -> RepairResult:
    """Repair a surface's live lists and append the figures to its history (every caller)."""
    result = run_repair(settings, surface, at)
    record_repair(settings, result)
    if result.sales_quarantined:
        LOG.warning(
            "%d lines of the sales drops are not sales and were skipped; reasons in %s",
            result.sales_quarantined,
            sales_quarantine_dir(settings),
        )
    return result


def last_repair(settings: Settings, surface: str) -> dict[str, Any] | None:
    """Return the latest repair of a surface, or None before the first one."""
    path = repairs_log(settings, surface)
    if not path.exists():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return dict(json.loads(lines[-1])) if lines else None

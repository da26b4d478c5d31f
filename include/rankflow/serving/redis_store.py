"""Redis serving store: versioned top-K lists, atomic switch, rollback and one-round-trip reads.

A nightly publication writes every user's list into a NEW version beside the current one, checks
it, then makes it visible with one atomic Lua step; readers never see a half-written version. The
key layout and the value encoding are a contract for readers in any language and are documented
in ``docs/redis-layout.md``: keep that page, the pure key/encoding functions below and the Lua
scripts next to this module in step.

Lifecycle (driver = Spark driver or Airflow task, executors = Spark tasks)::

    version = new_version_id(ds, run_id)                          # driver
    begin_version(client, prefix, surface, version, ds=ds, model_version=mv, k=k)
    stats = write_arrow(url, prefix, surface, version, batches, part=name)  # executors
    write_fallback(client, prefix, surface, version, popular_items)
    result = commit_version(client, prefix, surface, version, users, expected_parts=parts)
    expire_old_versions(client, prefix, surface, ttl_seconds=settings.old_version_ttl_seconds)
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from functools import cache
from importlib import resources
from itertools import pairwise
from typing import Any, Literal, TypeAlias, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import redis

SCHEMA_VERSION = "1"
ENCODING = "u32le"
MAX_ITEM_ID = 2**32 - 1
_ITEM_DTYPE = np.dtype("<u4")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
VALUE_COLUMN = "items_u32le"  # optional column holding each list already encoded
_WINDOW = 16  # MSET commands in flight per connection: keeps the server busy while we pack

UserIds: TypeAlias = "npt.ArrayLike"
ItemLists: TypeAlias = "npt.NDArray[Any] | Sequence[npt.ArrayLike]"
SwitchStatus: TypeAlias = Literal[
    "switched", "unchanged", "skipped_older", "rolled_back", "refused"
]


class RedisStoreError(RuntimeError):
    """Base class of the serving store's errors."""


class NoCurrentVersionError(RedisStoreError):
    """Raised when a surface has no published version to read."""


class VersionNotWritableError(RedisStoreError):
    """Raised when writing into a version that is published, retired or never begun."""


class VersionCheckError(RedisStoreError):
    """Raised when a version fails the checks before the switch; nothing became visible."""


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
    """Return the SCAN pattern matching every user key of one version."""
    return f"{version_base(prefix, surface, version)}:u:*"


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


# --------------------------------------------------------------------------- encoding (pure)


def _as_item_array(item_ids: npt.ArrayLike) -> npt.NDArray[np.uint32]:
    """Return item ids as a little-endian uint32 array, raising if any id does not fit."""
    arr = np.asarray(item_ids)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=_ITEM_DTYPE)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"item ids must be integers, got dtype {arr.dtype}")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high > MAX_ITEM_ID:
        raise ValueError(
            f"item ids must fit in uint32 [0, {MAX_ITEM_ID}]; got range [{low}, {high}]"
        )
    return np.ascontiguousarray(arr, dtype=_ITEM_DTYPE)


def encode_items(item_ids: npt.ArrayLike) -> bytes:
    """Encode one ranked list: item ids as little-endian uint32 in rank order (4 bytes each)."""
    arr = _as_item_array(item_ids)
    if arr.ndim != 1:
        raise ValueError(f"one list must be one-dimensional, got shape {arr.shape}")
    return arr.tobytes()


def encode_runs(item_ids: npt.ArrayLike, starts: npt.ArrayLike) -> list[bytes]:
    """Encode consecutive runs of one flat id array (run ``i`` begins at ``starts[i]``) in bulk.

    The scorer's lists come out as one flat array per batch; this validates and converts it
    once, so the cost per user is one bytes slice.
    """
    data = _as_item_array(item_ids)
    if data.ndim != 1:
        raise ValueError(f"item ids must be one flat array, got shape {data.shape}")
    first = np.asarray(starts, dtype=np.int64)
    if first.size and (first[0] != 0 or np.any(np.diff(first) < 0) or first[-1] > data.size):
        raise ValueError("run starts must begin at 0, be sorted and lie inside the array")
    raw = data.tobytes()
    bounds = (np.r_[first, data.size] * _ITEM_DTYPE.itemsize).tolist()
    return [raw[a:b] for a, b in pairwise(bounds)]


def decode_items(value: bytes) -> list[int]:
    """Decode a stored list back into item ids in rank order."""
    if len(value) % _ITEM_DTYPE.itemsize:
        raise ValueError(f"a list value must be a multiple of 4 bytes, got {len(value)}")
    return [int(i) for i in np.frombuffer(value, dtype=_ITEM_DTYPE).tolist()]


def list_batch(user_ids: UserIds, item_lists: ItemLists) -> pa.RecordBatch:
    """Return ``user_id, item_ids`` as the Arrow batch the writers take, from numpy or lists.

    ``item_lists`` is a 2-D array (one row per user) or a sequence of 1-D lists.
    """
    ids = pa.array(np.asarray(user_ids)) if not isinstance(user_ids, pa.Array) else user_ids
    if isinstance(item_lists, np.ndarray) and item_lists.ndim == 2:
        rows = list(item_lists)
    else:
        rows = [np.asarray(r) for r in item_lists]
    if any(r.ndim != 1 for r in rows):
        raise ValueError("each list must be one-dimensional")
    if len(rows) != len(ids):
        raise ValueError(f"{len(ids)} user ids but {len(rows)} lists")
    kinds = {r.dtype.kind for r in rows if r.size}
    if not kinds <= {"i", "u"}:
        raise ValueError(f"item ids must be integers, got dtype kinds {sorted(kinds)}")
    lengths = np.fromiter((r.size for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    filled = [r for r in rows if r.size]
    # int64 for all rows: mixing int64 and uint64 rows would otherwise promote to float64
    flat: npt.ArrayLike = np.concatenate(filled, dtype=np.int64, casting="unsafe") if filled else []
    if filled and any(r.dtype.kind == "u" and r.max() > np.iinfo(np.int64).max for r in filled):
        raise ValueError(f"item ids must fit in uint32 [0, {MAX_ITEM_ID}]")
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.int64()))
    return pa.RecordBatch.from_arrays([ids, lists], names=["user_id", "item_ids"])


def encode_list_array(lists: pa.Array) -> pa.BinaryArray:
    """Encode every list of an Arrow list column as a ``u32le`` value, in bulk.

    The flattened ids are cast once to uint32 (which rejects ids out of range) and the list
    offsets, times four, become the binary offsets: no per-user Python work.
    """
    if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
        raise ValueError(f"item lists must be an Arrow list column, got {lists.type}")
    if not pa.types.is_integer(lists.type.value_type):
        raise ValueError(f"item ids must be integers, got {lists.type.value_type}")
    flat = lists.flatten()
    if lists.null_count or flat.null_count:
        raise ValueError("item lists must not be null or contain null ids")
    if len(flat):
        low, high = pc.min_max(flat).values()
        if low.as_py() < 0 or high.as_py() > MAX_ITEM_ID:
            raise ValueError(
                f"item ids must fit in uint32 [0, {MAX_ITEM_ID}]; "
                f"got range [{low.as_py()}, {high.as_py()}]"
            )
    if sys.byteorder != "little":
        raise RuntimeError("the u32le encoder relies on a little-endian machine")
    ids = pc.cast(flat, pa.uint32())
    data = ids.buffers()[1].slice(ids.offset * 4, len(ids) * 4) if len(ids) else pa.py_buffer(b"")
    starts = lists.offsets
    offsets = pc.multiply_checked(pc.subtract(starts, starts[0]), pa.scalar(4, starts.type))
    binary = pa.large_binary() if pa.types.is_large_list(lists.type) else pa.binary()
    return pa.Array.from_buffers(binary, len(lists), [None, offsets.buffers()[1], data])


def batch_values(batch: pa.RecordBatch) -> pa.Array:
    """Return a batch's values: its ``items_u32le`` column if present, else ``item_ids`` encoded."""
    if VALUE_COLUMN not in batch.schema.names:
        return encode_list_array(batch.column("item_ids"))
    values = batch.column(VALUE_COLUMN)
    if not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
        raise ValueError(f"{VALUE_COLUMN} must be binary, got {values.type}")
    lengths = pc.binary_length(values)
    if values.null_count or pc.any(pc.not_equal(pc.bit_wise_and(lengths, 3), 0)).as_py():
        raise ValueError(f"{VALUE_COLUMN} values must be non-null multiples of 4 bytes")
    return values


def user_key_array(prefix: str, surface: str, version: str, user_ids: pa.Array) -> pa.Array:
    """Return the ``user_key`` of every id of an Arrow column, in bulk (ints in decimal)."""
    if user_ids.null_count:
        raise ValueError("user ids must not be null")
    if pa.types.is_integer(user_ids.type):
        text = pc.cast(user_ids, pa.string())
    elif pa.types.is_string(user_ids.type) or pa.types.is_large_string(user_ids.type):
        if len(user_ids) and pc.min(pc.utf8_length(user_ids)).as_py() == 0:
            raise ValueError("string user ids must not be empty")
        text = user_ids
    else:
        raise ValueError(f"user ids must be integers or strings, got {user_ids.type}")
    base = pa.scalar(f"{version_base(prefix, surface, version)}:u:".encode(), pa.binary())
    return pc.binary_join_element_wise(
        base, pc.cast(text, pa.binary()), pa.scalar(b"", pa.binary())
    )


def mset_arguments(keys: pa.Array, values: pa.Array) -> pa.Array:
    """Return ``$<len> CRLF key CRLF $<len> CRLF value CRLF`` per pair: MSET's RESP arguments.

    Consecutive pairs are contiguous in the result's data buffer, so one MSET command is a
    header plus one slice of that buffer.
    """
    if len(keys) != len(values):
        raise ValueError(f"need as many keys as values: {len(keys)}/{len(values)}")

    kind = (
        pa.large_binary()
        if pa.types.is_large_binary(keys.type) or pa.types.is_large_binary(values.type)
        else pa.binary()
    )
    keys, values = pc.cast(keys, kind), pc.cast(values, kind)

    def length_text(column: pa.Array) -> pa.Array:
        return pc.cast(pc.cast(pc.binary_length(column), pa.string()), kind)

    parts = [b"$", length_text(keys), b"\r\n", keys, b"\r\n$", length_text(values)]
    parts += [b"\r\n", values, b"\r\n"]
    scalars = [pa.scalar(p, kind) if isinstance(p, bytes) else p for p in parts]
    return pc.binary_join_element_wise(*scalars, pa.scalar(b"", kind))


def mset_commands(arguments: pa.Array, pairs_per_command: int) -> Iterator[list[Any]]:
    """Yield MSET commands of ``pairs_per_command`` pairs as ``[header, buffer slice]`` chunks."""
    if pairs_per_command < 1:
        raise ValueError("pairs_per_command must be at least 1")
    width = np.int64 if pa.types.is_large_binary(arguments.type) else np.int32
    offsets = np.frombuffer(arguments.buffers()[1], dtype=width)[
        arguments.offset : arguments.offset + len(arguments) + 1
    ]
    data = memoryview(arguments.buffers()[2])
    for start in range(0, len(arguments), pairs_per_command):
        end = min(start + pairs_per_command, len(arguments))
        header = b"*%d\r\n$4\r\nMSET\r\n" % (2 * (end - start) + 1)
        yield [header, data[int(offsets[start]) : int(offsets[end])]]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class WriteStats:
    """What one writer call stored: users, value bytes and MSET commands."""

    users: int = 0
    bytes: int = 0
    commands: int = 0

    def __add__(self, other: WriteStats) -> WriteStats:
        """Sum the reports of several writers (e.g. one per Spark partition)."""
        return WriteStats(
            self.users + other.users, self.bytes + other.bytes, self.commands + other.commands
        )


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


# --------------------------------------------------------------------------- helpers


@cache
def lua_source(name: str) -> str:
    """Return the text of a Lua script shipped next to this module (``lookup``, ``commit``...)."""
    return resources.files("rankflow.serving").joinpath(f"{name}.lua").read_text()


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
    return redis.Redis.from_url(url, decode_responses=False)


def _utc_now() -> str:
    """Return the current UTC time in ISO 8601, as stored in meta hashes."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _state(client: redis.Redis, prefix: str, surface: str, version: str) -> str | None:
    """Return a version's lifecycle state (writing, published, refused, retired) or ``None``."""
    return _text(client.hget(meta_key(prefix, surface, version), "state"))


def _require_writable(client: redis.Redis, prefix: str, surface: str, version: str) -> None:
    """Raise unless the version was begun and is not yet published or retired."""
    state = _state(client, prefix, surface, version)
    if state != "writing":
        raise VersionNotWritableError(
            f"version {version!r} of {surface!r} is not open for writing (state={state}); "
            "call begin_version first and never write into a published version"
        )


def scan_keys(
    client: redis.Redis, pattern: str, *, count: int = 1000, limit: int | None = None
) -> Iterable[bytes]:
    """Yield keys matching ``pattern`` with SCAN (may repeat a key; stops after ``limit``)."""
    for seen, key in enumerate(client.scan_iter(match=pattern, count=count), start=1):
        yield key if isinstance(key, bytes) else str(key).encode()
        if limit is not None and seen >= limit:
            return


# --------------------------------------------------------------------------- write path


def begin_version(
    client: redis.Redis,
    prefix: str,
    surface: str,
    version: str,
    *,
    ds: date,
    model_version: str,
    k: int,
    source: Mapping[str, str] | None = None,
) -> None:
    """Register a new version for writing: its meta hash and its entry in the versions set.

    Idempotent for a retried run writing the same version id; refuses a version that is
    already published or retired, so a visible version is never modified. ``source`` names
    where the lists come from (gold table and commit): the sold-item repair reads them there.
    """
    fields = {
        **(source or {}),
        "ds": ds.isoformat(),
        "model_version": model_version,
        "k": str(int(k)),
        "created_at": _utc_now(),
        "encoding": ENCODING,
        "schema_version": SCHEMA_VERSION,
        "state": "writing",
    }
    keys = [
        meta_key(prefix, surface, version),
        current_key(prefix, surface),
        previous_key(prefix, surface),
        versions_key(prefix, surface),
    ]
    args: list[Any] = [version, int(time.time() * 1000)]
    for name, value in fields.items():
        args += [name, value]
    state = _text(_run(client, "begin", keys, args))
    if state != "writing":
        raise VersionNotWritableError(f"version {version!r} of {surface!r} is {state}")


def write_fallback(
    client: redis.Redis, prefix: str, surface: str, version: str, item_ids: npt.ArrayLike
) -> int:
    """Store the version's fallback list (for unknown users); returns its size in bytes."""
    _require_writable(client, prefix, surface, version)
    value = encode_items(item_ids)
    client.set(fallback_key(prefix, surface, version), value)
    return len(value)


class _CommandStream:
    """Sends packed commands on one connection with a bounded window of pending replies."""

    def __init__(self, client: redis.Redis, window: int) -> None:
        self._pool = client.connection_pool
        self._conn = self._pool.get_connection()
        self._window = window
        self._pending = 0

    def send(self, chunks: list[Any]) -> None:
        """Send one command, first reading replies so at most ``window`` stay in flight."""
        while self._pending >= self._window:
            self._read_one()
        self._conn.send_packed_command(chunks, check_health=False)
        self._pending += 1

    def _read_one(self) -> None:
        """Read one reply (redis-py raises on an error reply, e.g. OOM)."""
        self._conn.read_response()
        self._pending -= 1

    def drain(self) -> None:
        """Read every pending reply (raising on the first error reply)."""
        while self._pending:
            self._read_one()

    def pack(self, *args: Any) -> list[Any]:
        """Return the RESP chunks of one command."""
        return cast("list[Any]", self._conn.pack_command(*args))

    def close(self, *, ok: bool) -> None:
        """Drain the replies, or drop the connection if the stream failed midway."""
        try:
            if ok:
                self.drain()
        finally:
            if self._pending:
                self._conn.disconnect()
            self._pool.release(self._conn)


def parts_key(prefix: str, surface: str, version: str) -> str:
    """Return the key of a version's hash of writer acknowledgements (part -> users written)."""
    return f"{version_base(prefix, surface, version)}:parts"


def write_arrow(
    redis_url: str,
    prefix: str,
    surface: str,
    version: str,
    batches: Iterable[pa.RecordBatch],
    *,
    mset_batch: int = 500,
    part: str | None = None,
) -> WriteStats:
    """Write users' lists from Arrow batches into a version (one connection per call).

    Keys, ``u32le`` values and the RESP arguments of MSET are built in bulk by Arrow compute
    kernels; each MSET of ``mset_batch`` pairs is a header plus a slice of one buffer, with
    ``_WINDOW`` commands in flight. Writes are idempotent, so a retried Spark task may simply
    write its part again. With ``part``, once every MSET reply has been read and was OK, an
    acknowledgement ``HSET {version}:parts part users`` is sent on the same connection:
    :func:`commit_version` checks these acknowledgements instead of scanning every key.

    Args:
        redis_url: where to connect (the writer opens and closes its own client).
        prefix: key prefix (``RedisSettings.key_prefix``).
        surface: the surface the lists are for.
        version: a version opened with :func:`begin_version`.
        batches: Arrow batches with ``user_id`` (integer or string) and either
            ``items_u32le`` (the encoded values, as the gold table stores them) or ``item_ids``
            (lists of integers, e.g. from :func:`list_batch`).
        mset_batch: key/value pairs per MSET command.
        part: the name of the unit of work (e.g. a gold file) to acknowledge.

    Returns:
        What was written (users, value bytes, MSET commands).
    """
    if mset_batch < 1:
        raise ValueError("mset_batch must be at least 1")
    client = _client(redis_url)
    stream: _CommandStream | None = None
    stats = WriteStats()
    ok = False
    try:
        _require_writable(client, prefix, surface, version)
        stream = _CommandStream(client, _WINDOW)
        for batch in batches:
            if not batch.num_rows:
                continue
            keys = user_key_array(prefix, surface, version, batch.column("user_id"))
            values = batch_values(batch)
            for command in mset_commands(mset_arguments(keys, values), mset_batch):
                stream.send(command)
            value_bytes = int(pc.sum(pc.binary_length(values)).as_py() or 0)
            stats += WriteStats(len(keys), value_bytes, -(-len(keys) // mset_batch))
        if part is not None:  # only once every MSET reply was read and was OK
            stream.drain()
            stream.send(stream.pack("HSET", parts_key(prefix, surface, version), part, stats.users))
        ok = True
    finally:
        if stream is not None:
            stream.close(ok=ok)
        client.close()
    return stats


def write_lists(
    redis_url: str,
    prefix: str,
    surface: str,
    version: str,
    user_ids: UserIds,
    item_lists: ItemLists,
    *,
    mset_batch: int = 500,
    part: str | None = None,
) -> WriteStats:
    """Write one batch of users' lists given as numpy arrays or lists (see :func:`write_arrow`)."""
    batch = list_batch(user_ids, item_lists)
    return write_arrow(
        redis_url, prefix, surface, version, [batch], mset_batch=mset_batch, part=part
    )


def count_users(
    client: redis.Redis, prefix: str, surface: str, version: str, *, scan_count: int = 1000
) -> int:
    """Count a version's distinct user keys with SCAN (which may return a key twice).

    Keys are de-duplicated by their 64-bit hash in a numpy array (8 bytes per key, so 10 M users
    need ~80 MB); a hash collision (odds ~n^2/2^65) can only undercount, i.e. refuse a commit.
    """
    keys = scan_keys(client, user_key_pattern(prefix, surface, version), count=scan_count)
    hashes = np.fromiter((hash(key) for key in keys), dtype=np.int64)
    return int(np.unique(hashes).size)


def _evicts(client: redis.Redis) -> bool:
    """Tell whether the server may evict keys (any ``maxmemory-policy`` but ``noeviction``).

    A server that hides its configuration (``CONFIG`` renamed or denied) is assumed to evict.
    """
    try:
        policy = cast("dict[Any, Any]", client.config_get("maxmemory-policy"))
    except redis.ResponseError:
        return True
    return _text(policy.get("maxmemory-policy", policy.get(b"maxmemory-policy"))) != "noeviction"


def check_written(
    client: redis.Redis,
    prefix: str,
    surface: str,
    version: str,
    expected_users: int,
    expected_parts: Mapping[str, int] | None = None,
) -> None:
    """Check that every user key of a version is in Redis, else raise.

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
    found = count_users(client, prefix, surface, version)
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

    Raises:
        VersionCheckError: counts differ, the fallback or meta is missing, or the version is
            not committable; nothing became visible.
    """
    check_written(client, prefix, surface, version, expected_users, expected_parts)
    keys = [
        current_key(prefix, surface),
        previous_key(prefix, surface),
        meta_key(prefix, surface, version),
        fallback_key(prefix, surface, version),
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
    """Return whether any of a sample of the version's user keys carries a TTL."""
    keys = list(scan_keys(client, user_key_pattern(prefix, surface, version), limit=n))
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
    """Return the mean ``MEMORY USAGE`` of a sample of the version's user keys (key + value)."""
    keys = list(scan_keys(client, user_key_pattern(prefix, surface, version), limit=sample))
    if not keys:
        return None
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key)
    sizes = [int(s) for s in pipe.execute() if s is not None]
    return sum(sizes) / len(sizes) if sizes else None


def version_meta(client: redis.Redis, prefix: str, surface: str, version: str) -> dict[str, str]:
    """Return a version's meta hash as text (empty for an unknown version)."""
    raw: Any = client.hgetall(meta_key(prefix, surface, version))
    return {_text(k) or "": _text(v) or "" for k, v in raw.items()}


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


# --------------------------------------------------------------------------- read path


class RankingReader:
    """Reads users' lists for the recommendation service.

    ``lookup`` is one EVALSHA round trip that reads the current pointer and the user's list (or
    the fallback) atomically. ``lookup_cached`` caches the version id for a few seconds and then
    needs one GET per user (plus one GET per version for the fallback) — also the path for
    Redis Cluster, where the script cannot reach keys in other slots.
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
        self._script = self._client.register_script(lua_source("lookup"))
        self._cache_seconds = version_cache_seconds
        self._versions: dict[str, tuple[str, float]] = {}
        self._fallbacks: dict[tuple[str, str], bytes] = {}

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
        reply = self._script(
            keys=[current_key(self._prefix, surface)],
            args=[namespace(self._prefix, surface), user],
            client=self._client,
        )
        if reply is None:
            raise self._no_version(surface)
        version, fallback, value = reply
        if value is None:
            raise RedisStoreError(f"version {_text(version)!r} of {surface!r} has no fallback")
        return Lookup(user, surface, _text(version) or "", decode_items(value), bool(fallback))

    def current_version(self, surface: str) -> str:
        """Return the current version id of a surface, read now (no cache)."""
        version = _text(self._client.get(current_key(self._prefix, surface)))
        if version is None:
            raise self._no_version(surface)
        self._versions[surface] = (version, time.monotonic())
        return version

    def lookup_cached(self, user_id: int | str, surface: str) -> Lookup:
        """Return a user's list with a cached version id: one GET per lookup in steady state.

        After a switch, answers come from the old (still complete) version for at most
        ``version_cache_seconds``; a version gone from Redis forces a fresh pointer read.
        """
        user = user_id_text(user_id)
        cached = self._versions.get(surface)
        if cached is None or time.monotonic() - cached[1] > self._cache_seconds:
            version = self.current_version(surface)
        else:
            version = cached[0]
        for attempt in range(2):
            value = _bytes(self._client.get(user_key(self._prefix, surface, version, user)))
            if value is not None:
                return Lookup(user, surface, version, decode_items(value), False)
            fallback = self._fallback(surface, version)
            if fallback is not None:
                return Lookup(user, surface, version, decode_items(fallback), True)
            if attempt == 0:
                version = self.current_version(surface)
        raise RedisStoreError(f"version {version!r} of {surface!r} has no fallback")

    def _fallback(self, surface: str, version: str) -> bytes | None:
        """Return a version's fallback list, fetched once per version."""
        key = (surface, version)
        if key not in self._fallbacks:
            value = _bytes(self._client.get(fallback_key(self._prefix, surface, version)))
            if value is None:
                return None
            self._fallbacks = {k: v for k, v in self._fallbacks.items() if k[0] != surface}
            self._fallbacks[key] = value
        return self._fallbacks[key]

    def _no_version(self, surface: str) -> NoCurrentVersionError:
        """Build the error for a surface without a current version."""
        return NoCurrentVersionError(
            f"no published version for surface {surface!r} under prefix {self._prefix!r} "
            f"(key {current_key(self._prefix, surface)!r} is missing)"
        )

"""The write path of a list version: begin, write lists and fallback, as pipelined MSETs."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis._parsers import BaseParser

from rankflow.store.commands import _client, _run, _text, _utc_now, user_buckets_of
from rankflow.store.encoding import (
    ENCODING,
    SCHEMA_VERSION,
    ItemLists,
    UserIds,
    batch_values,
    encode_items,
    hset_stream,
    list_batch,
    mset_arguments,
    mset_commands,
    user_key_array,
)
from rankflow.store.errors import VersionNotWritableError
from rankflow.store.keys import (
    current_key,
    fallback_key,
    meta_key,
    parts_key,
    previous_key,
    versions_key,
)

_WINDOW = 1024  # commands in flight per connection: keeps the server busy while we pack
_FLUSH_BYTES = 256 * 1024  # commands gathered into one socket write
_READ_BYTES = 64 * 1024  # reply bytes read from the socket at once


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


# --------------------------------------------------------------------------- write path


def begin_version(
    client: redis.Redis,
    prefix: str,
    surface: str,
    version: str,
    *,
    ds: date,
    model_version: str | None = None,
    k: int | None = None,
    source: Mapping[str, str] | None = None,
    encoding: str = ENCODING,
    user_buckets: int | None = None,
) -> None:
    """Register a new version for writing: its meta hash and its entry in the versions set.

    Idempotent for a retried run writing the same version id; refuses a version that is
    already published or retired, so a visible version is never modified. ``source`` names
    where the values come from (gold table and commit, or the feature tables' commits): the
    sold-item repair and the feature audit read them there. A list version names its model and
    ``k`` and, for lists kept in hash buckets (layout 2), ``user_buckets``; a feature version
    its ``encoding``.
    """
    listed = {
        "model_version": model_version,
        "k": None if k is None else str(int(k)),
        "user_buckets": None if user_buckets is None else str(int(user_buckets)),
    }
    fields = {
        **(source or {}),
        "ds": ds.isoformat(),
        **{name: value for name, value in listed.items() if value is not None},
        "created_at": _utc_now(),
        "encoding": encoding,
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


def record_written(
    client: redis.Redis, prefix: str, surface: str, version: str, *, value_bytes: int, files: int
) -> None:
    """Note in the version's meta what its writers wrote, so a resumed step can report it."""
    _require_writable(client, prefix, surface, version)
    client.hset(
        meta_key(prefix, surface, version),
        mapping={"value_bytes": str(int(value_bytes)), "gold_files": str(int(files))},
    )


class _CommandStream:
    """Sends packed commands on one connection, coalesced, with a bounded window of replies.

    Commands are gathered into one ``sendall`` of about ``_FLUSH_BYTES`` (a bucket's HSET is a
    few kB: one system call each would cost more than Redis spends on it), and at most
    ``window`` commands are sent before their replies are read. Replies are read in bulk: the
    socket's bytes go through one hiredis reader, so a reply costs no Python call of its own.
    """

    def __init__(self, client: redis.Redis, window: int) -> None:
        import hiredis

        self._pool = client.connection_pool
        self._conn = self._pool.get_connection()
        self._conn.connect()  # authenticated, with every handshake reply read
        self._replies = hiredis.Reader()
        self._window = window
        self._pending = 0
        self._buffer: list[Any] = []
        self._buffered = 0
        self._buffered_bytes = 0

    def send(self, chunks: list[Any]) -> None:
        """Queue one command; send the queue once it holds enough bytes or commands."""
        self._buffer += chunks
        self._buffered += 1
        self._buffered_bytes += sum(len(chunk) for chunk in chunks)
        if self._buffered_bytes >= _FLUSH_BYTES or self._buffered >= self._window // 2:
            self._flush()

    def send_run(self, data: pa.Buffer, ends: npt.NDArray[np.int64]) -> None:
        """Send contiguous packed commands (command ``n`` ends at ``ends[n]`` in ``data``).

        Each write holds whole commands, about ``_FLUSH_BYTES`` of them (at least one).
        """
        self._flush()
        view = memoryview(data)
        sent = done = 0
        while done < len(ends):
            last = max(int(np.searchsorted(ends, sent + _FLUSH_BYTES, side="right")), done + 1)
            self._make_room(last - done)
            end = int(ends[last - 1])
            self._conn.send_packed_command([view[sent:end]], check_health=False)
            self._pending += last - done
            sent, done = end, last

    def _flush(self) -> None:
        """Send the queued commands in one write, first reading replies to stay in the window."""
        if not self._buffered:
            return
        self._make_room(self._buffered)
        self._conn.send_packed_command([b"".join(self._buffer)], check_health=False)
        self._pending += self._buffered
        self._buffer, self._buffered, self._buffered_bytes = [], 0, 0

    def _make_room(self, commands: int) -> None:
        """Read replies until ``commands`` more fit in the window."""
        while self._pending and self._pending + commands > self._window:
            self._read_replies()

    def _read_replies(self) -> None:
        """Read what the socket holds (at least one reply); raise on the first error reply.

        The error is redis-py's exception for it (``OutOfMemoryError`` for OOM, and so on).
        """
        sock = self._conn._sock  # redis-py connects and authenticates; the replies are ours
        if sock is None:
            raise redis.ConnectionError("the write connection closed")
        chunk = sock.recv(_READ_BYTES)
        if not chunk:
            raise redis.ConnectionError("Redis closed the connection while replies were pending")
        self._replies.feed(chunk)
        while (reply := self._replies.gets()) is not False:
            self._pending -= 1
            if isinstance(reply, Exception):
                raise BaseParser.parse_error(str(reply))

    def drain(self) -> None:
        """Send what is queued and read every pending reply (raising on the first error)."""
        self._flush()
        while self._pending:
            self._read_replies()

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


@contextmanager
def _version_stream(
    redis_url: str, prefix: str, surface: str, version: str
) -> Iterator[_CommandStream]:
    """A pipelined command stream into a writable version, closed (or dropped) on the way out."""
    client = _client(redis_url)
    stream: _CommandStream | None = None
    ok = False
    try:
        _require_writable(client, prefix, surface, version)
        stream = _CommandStream(client, _WINDOW)
        yield stream
        ok = True
    finally:
        if stream is not None:
            stream.close(ok=ok)
        client.close()


def _acknowledge(
    stream: _CommandStream, prefix: str, surface: str, version: str, part: str, users: int
) -> None:
    """Acknowledge ``part`` once every reply before it was read and was OK."""
    stream.drain()
    stream.send(stream.pack("HSET", parts_key(prefix, surface, version), part, users))


def write_arrow(
    redis_url: str,
    prefix: str,
    surface: str,
    version: str,
    batches: Iterable[pa.RecordBatch],
    *,
    mset_batch: int = 500,
    part: str | None = None,
    group: str = "u",
) -> WriteStats:
    """Write users' lists (or feature values) from Arrow batches into a version.

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
        batches: Arrow batches with ``user_id`` (integer or string; an item id for items) and
            either ``items_u32le`` (the encoded values, as the gold table stores them),
            ``value`` (encoded feature values) or ``item_ids`` (lists of integers, e.g. from
            :func:`list_batch`).
        mset_batch: key/value pairs per MSET command.
        part: the name of the unit of work (e.g. a gold file) to acknowledge.
        group: the keys' entity segment (``u``: users; feature groups: ``store.vectors``).

    Returns:
        What was written (users, value bytes, MSET commands).
    """
    if mset_batch < 1:
        raise ValueError("mset_batch must be at least 1")
    stats = WriteStats()
    with _version_stream(redis_url, prefix, surface, version) as stream:
        for batch in batches:
            if not batch.num_rows:
                continue
            keys = user_key_array(prefix, surface, version, batch.column("user_id"), group)
            values = batch_values(batch)
            for command in mset_commands(mset_arguments(keys, values), mset_batch):
                stream.send(command)
            value_bytes = int(pc.sum(pc.binary_length(values)).as_py() or 0)
            stats += WriteStats(len(keys), value_bytes, -(-len(keys) // mset_batch))
        if part is not None:
            _acknowledge(stream, prefix, surface, version, part, stats.users)
    return stats


def write_buckets(
    redis_url: str,
    prefix: str,
    surface: str,
    version: str,
    batches: Iterable[pa.RecordBatch],
    buckets: int,
    *,
    part: str | None,
    group: str,
) -> WriteStats:
    """Write entities' values into hash buckets (``HSET {group}:{id mod buckets} id value``).

    Users' lists (group ``b``) and a feature version's item vectors (``i``): a bucket of a few
    dozen values is one compact listpack, where a key per value costs about 130 bytes more.
    The fields, values and whole commands are built in bulk (:func:`hset_stream`: one HSET per
    bucket, all of them one buffer sent in large writes); writes are idempotent and
    acknowledged per ``part`` as in :func:`write_arrow`. Ids must be integers (``user_id``:
    the user, or the item for items).
    """
    from rankflow.store.keys import MAX_BUCKETED_USER_ID, bucket_key_prefix

    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    rows = [b for b in batches if b.num_rows]
    table = pa.Table.from_batches(rows) if rows else None
    stats = WriteStats()
    with _version_stream(redis_url, prefix, surface, version) as stream:
        if table is not None:
            column = table.column("user_id")
            if not pa.types.is_integer(column.type) or column.null_count:
                raise ValueError(f"bucketed ids must be non-null integers, got {column.type}")
            ids = np.asarray(column.to_numpy(), dtype=np.int64)
            if len(ids) and (ids.min() < 0 or ids.max() > MAX_BUCKETED_USER_ID):
                raise ValueError("bucketed ids must be within 0 .. 2**53 - 1")
            bucket = ids % buckets
            order = np.argsort(bucket, kind="stable")
            fields = pc.cast(pa.array(ids[order]), pa.string()).cast(pa.binary())
            values = batch_values(table.take(pa.array(order)).combine_chunks().to_batches()[0])
            arguments = mset_arguments(fields, values)
            used, starts = np.unique(bucket[order], return_index=True)
            key_base = bucket_key_prefix(prefix, surface, version, group).encode()
            data, ends = hset_stream(arguments, key_base, used, np.append(starts, len(ids)))
            stream.send_run(data, ends)
            value_bytes = int(pc.sum(pc.binary_length(values)).as_py() or 0)
            stats = WriteStats(len(ids), value_bytes, len(used))
        if part is not None:
            _acknowledge(stream, prefix, surface, version, part, stats.users)
    return stats


def write_user_lists(
    redis_url: str,
    prefix: str,
    surface: str,
    version: str,
    batches: Iterable[pa.RecordBatch],
    *,
    part: str | None = None,
    mset_batch: int = 500,
) -> WriteStats:
    """Write users' lists into a version in its layout: hash buckets (2), or a key each (1).

    The bucket count is the one :func:`begin_version` recorded in the version's meta hash, so
    every writer of a version puts a user in the same bucket.
    """
    client = _client(redis_url)
    try:
        buckets = user_buckets_of(client, prefix, surface, version)
    finally:
        client.close()
    if buckets is None:
        return write_arrow(
            redis_url, prefix, surface, version, batches, mset_batch=mset_batch, part=part
        )
    return write_buckets(
        redis_url, prefix, surface, version, batches, buckets, part=part, group="b"
    )


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
    """Write one batch of users' lists given as numpy arrays or lists, in the version's layout."""
    batch = list_batch(user_ids, item_lists)
    return write_user_lists(
        redis_url, prefix, surface, version, [batch], part=part, mset_batch=mset_batch
    )

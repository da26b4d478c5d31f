"""Read a Delta table's commit log directly: which files one write added, and what changed since.

The Redis publisher reads the gold files a scoring run wrote with pyarrow on the executors, so
it needs their exact list and row counts without a Spark query. Delta records both in the JSON
commit of the write (``add`` actions with ``numRecords`` statistics); a commit is found by the
``userMetadata`` token its writer set, and later commits tell whether anything replaced or
deleted those rows since. Paths are local (``/path``, ``file:``) or S3 (``s3://``, ``s3a://``),
opened through ``pyarrow.fs`` so the driver and the executors resolve them the same way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    import pyarrow.fs as pafs

_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


class DeltaLogError(RuntimeError):
    """Raised when the commit log does not hold what a reader relies on."""


@dataclass(frozen=True)
class AddedFile:
    """One ``add`` action: a data file (path relative to the table), its partition and rows."""

    path: str
    partition: dict[str, str | None]
    rows: int | None
    size: int  # bytes of the file (0 when the action does not say)
    has_deletion_vector: bool
    data_change: bool


@dataclass(frozen=True)
class Commit:
    """One commit of the log: its version, its writer's ``userMetadata`` and its file actions."""

    version: int
    user_metadata: str | None
    added: list[AddedFile] = field(default_factory=list)
    removed: list[AddedFile] = field(default_factory=list)

    def touches(self, partition: Mapping[str, str]) -> bool:
        """Tell whether the commit added or removed data (``dataChange``) in ``partition``.

        A file action without partition values (optional on ``remove``) counts as touching.
        """
        return any(
            f.data_change
            and (not f.partition or all(f.partition.get(k) == v for k, v in partition.items()))
            for f in (*self.added, *self.removed)
        )


def _file_action(action: Mapping[str, Any]) -> AddedFile:
    """Build an :class:`AddedFile` from an ``add`` or ``remove`` action's JSON object."""
    text = action.get("stats")
    stats = json.loads(text) if isinstance(text, str) and text else {}
    rows = stats.get("numRecords")
    return AddedFile(
        path=unquote(str(action["path"])),
        partition=dict(action.get("partitionValues") or {}),
        rows=int(rows) if rows is not None else None,
        size=int(action.get("size") or 0),
        has_deletion_vector=action.get("deletionVector") is not None,
        data_change=bool(action.get("dataChange", True)),
    )


def parse_commit(version: int, lines: Iterable[str]) -> Commit:
    """Parse the newline-delimited JSON actions of one commit file."""
    user_metadata: str | None = None
    added: list[AddedFile] = []
    removed: list[AddedFile] = []
    for line in lines:
        if not line.strip():
            continue
        action = json.loads(line)
        if "commitInfo" in action:
            user_metadata = action["commitInfo"].get("userMetadata")
        elif "add" in action:
            added.append(_file_action(action["add"]))
        elif "remove" in action:
            removed.append(_file_action(action["remove"]))
    return Commit(version, user_metadata, added, removed)


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return the pyarrow filesystem and path of a local path or a ``file:``/``s3:``/``s3a:`` URI.

    ``s3a://`` (Hadoop's scheme, as Spark writes it) is read as ``s3://``. The endpoint is
    rankflow's (``RANKFLOW_S3_ENDPOINT``, as :func:`rankflow.config.s3_endpoint` reads it: the
    driver's and, through ``spark.executorEnv``, the executors'); credentials come from the
    standard AWS chain (environment, profile, instance role).
    """
    import pyarrow.fs as pafs

    scheme = urlparse(uri).scheme
    if scheme in ("", "file"):
        return pafs.LocalFileSystem(), os.path.abspath(
            unquote(urlparse(uri).path) if scheme else uri
        )
    if scheme in ("s3", "s3a"):
        return s3_filesystem(), uri.split("://", 1)[1]
    raise DeltaLogError(f"unsupported table location {uri!r}: use a local path, file:, s3: or s3a:")


def delete_location(uri: str) -> None:
    """Delete everything under a folder or S3 prefix (a missing one is already deleted)."""
    fs, path = arrow_filesystem(uri)
    fs.delete_dir_contents(path, missing_dir_ok=True)


def s3_filesystem() -> pafs.S3FileSystem:
    """The pyarrow S3 file system of rankflow's endpoint (path-style for a custom one)."""
    import pyarrow.fs as pafs

    from rankflow.config import s3_endpoint

    endpoint = s3_endpoint(os.environ)
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    if endpoint is None:
        return pafs.S3FileSystem(region=region)
    where = urlparse(endpoint)
    return pafs.S3FileSystem(
        endpoint_override=where.netloc, scheme=where.scheme or "https", region=region
    )


def commit_versions(table: str) -> list[int]:
    """Return the versions of the JSON commit files present in the table's ``_delta_log``."""
    import pyarrow.fs as pafs

    fs, root = arrow_filesystem(table)
    infos = fs.get_file_info(pafs.FileSelector(f"{root.rstrip('/')}/_delta_log"))
    found = (_COMMIT_FILE.match(info.base_name) for info in infos)
    return sorted(int(m.group(1)) for m in found if m)


def read_commit(table: str, version: int) -> Commit:
    """Read and parse commit ``version`` of a table."""
    fs, root = arrow_filesystem(table)
    with fs.open_input_stream(f"{root.rstrip('/')}/_delta_log/{version:020d}.json") as stream:
        text = stream.read().decode()
    return parse_commit(version, text.splitlines())


def find_commit(table: str, user_metadata: str, *, search: int = 50) -> Commit:
    """Return the newest of the last ``search`` commits whose ``userMetadata`` matches.

    Raises:
        DeltaLogError: no such commit among the newest ``search`` commits.
    """
    for version in reversed(commit_versions(table)[-search:]):
        commit = read_commit(table, version)
        if commit.user_metadata == user_metadata:
            return commit
    raise DeltaLogError(f"no commit with userMetadata {user_metadata!r} in {table}/_delta_log")


def changes_since(table: str, version: int, partition: Mapping[str, str]) -> list[int]:
    """Return the versions after ``version`` that added or removed data in ``partition``.

    Raises:
        DeltaLogError: a later commit file is missing, so changes cannot be ruled out.
    """
    later = [v for v in commit_versions(table) if v > version]
    if later and later != list(range(version + 1, later[-1] + 1)):
        raise DeltaLogError(f"commits after {version} of {table} are missing from _delta_log")
    return [v for v in later if read_commit(table, v).touches(partition)]


def partition_files(
    table: str, commit: Commit, partition: Mapping[str, str], what: str
) -> list[AddedFile]:
    """Return the files ``commit`` added to ``partition``, each with its row count.

    Raises:
        DeltaLogError: a file lacks its row count or carries a deletion vector, so its rows
            cannot be read and checked without Spark; or the commit added files elsewhere only.
    """
    files = []
    for added in commit.added:
        if any(added.partition.get(k) != v for k, v in partition.items()):
            continue
        if added.rows is None or added.has_deletion_vector:
            raise DeltaLogError(
                f"{what} file {added.path} of commit {commit.version} has no numRecords statistic "
                "or carries a deletion vector; keep statistics collection "
                f"(spark.databricks.delta.stats.collect) and deletion vectors off for {what}"
            )
        files.append(added)
    if commit.added and not files:
        raise DeltaLogError(
            f"commit {commit.version} of {table} added files but none in partition "
            f"{dict(partition)}; is column mapping on? (it renames partition columns in the log)"
        )
    return sorted(files, key=lambda f: f.path)


def table_file(table: str, relative: str) -> str:
    """Return the full location of a data file named relative to its table."""
    if urlparse(relative).scheme or relative.startswith("/"):
        return relative
    return f"{table.rstrip('/')}/{relative}"

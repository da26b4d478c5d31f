"""S3 exports of ranked lists: parts uploaded by executors, manifest last, then the pointer.

Layout (README "S3 exports"): ``<prefix>/<surface>/ds=<YYYY-MM-DD>/<version>/part-NNNNN.parquet``,
``.../<version>/_manifest.json`` written after every part, and ``<prefix>/<surface>/_latest.json``
pointing at the newest complete export. A reader that follows the pointer or a manifest never
sees a partial export.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from rankflow.config import S3Settings
from rankflow.lake.storage import ensure_bucket, s3_client

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

SCHEMA_VERSION = 1
PART_SCHEMA = "key string, rows long, bytes long, sha256 string"


class S3PublishError(RuntimeError):
    """The export could not be written or checked."""


@dataclass(frozen=True)
class ExportResult:
    """Where an export landed and what it holds."""

    bucket: str
    prefix: str
    manifest_key: str
    users: int
    parts: int
    bytes: int
    pointer_updated: bool
    resumed: bool = False  # an earlier attempt had written the whole export


def export_prefix(s3: S3Settings, surface: str, ds: date, version: str) -> str:
    """Return the folder of one export (ends with a slash)."""
    return f"{s3.prefix}/{surface}/ds={ds.isoformat()}/{version}/"


def pointer_key(s3: S3Settings, surface: str) -> str:
    """Return the key of the pointer to the latest complete export of a surface."""
    return f"{s3.prefix}/{surface}/_latest.json"


def delete_prefix(client: Any, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix`` (a retry starts from a clean export folder)."""
    deleted = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted


def parquet_bytes(frames: list[pd.DataFrame]) -> tuple[bytes, int]:
    """Serialize frames to one Parquet file in memory; return its bytes and row count."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.concat(frames, ignore_index=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue(), len(frame)


def make_part_uploader(
    s3: S3Settings, prefix: str
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Build the ``mapInPandas`` function that uploads each partition as one Parquet part."""

    def upload(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd
        from pyspark import TaskContext

        frames = [batch for batch in batches if len(batch)]
        if not frames:
            return
        body, rows = parquet_bytes(frames)
        context = TaskContext.get()
        part = context.partitionId() if context else 0
        key = f"{prefix}part-{part:05d}.parquet"
        s3_client(s3).put_object(Bucket=s3.bucket, Key=key, Body=body)
        digest = hashlib.sha256(body).hexdigest()
        yield pd.DataFrame({"key": [key], "rows": [rows], "bytes": [len(body)], "sha256": [digest]})

    return upload


def build_manifest(
    parts: list[dict[str, Any]], meta: dict[str, Any], created_at: datetime
) -> dict[str, Any]:
    """Return the manifest document: schema version, model, counts and per-part checksums."""
    parts = sorted(parts, key=lambda p: str(p["key"]))
    return {
        "schema_version": SCHEMA_VERSION,
        **meta,
        "users": int(sum(int(p["rows"]) for p in parts)),
        "parts": [
            {
                "key": p["key"],
                "rows": int(p["rows"]),
                "bytes": int(p["bytes"]),
                "sha256": p["sha256"],
            }
            for p in parts
        ],
        "created_at": created_at.isoformat(),
    }


POINTER_ATTEMPTS = 5  # a pointer moved by someone else between our read and our write: re-read


def read_json(client: Any, bucket: str, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """An object's JSON document and ETag, or (None, None) when there is no such object."""
    from botocore.exceptions import ClientError

    try:
        reply = client.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        return None, None
    return json.loads(reply["Body"].read()), str(reply["ETag"])


def precondition_failed(error: Exception) -> bool:
    """Whether a conditional write lost a race (412, or 409 while another write is in flight)."""
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return False
    code = str(error.response.get("Error", {}).get("Code"))
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def update_pointer(
    client: Any, s3: S3Settings, surface: str, ds: date, record: dict[str, Any]
) -> bool:
    """Point ``_latest.json`` at this export unless a newer date is already published.

    The write is conditional on what was read (``If-Match`` its ETag, or ``If-None-Match: *``
    when there was none), so an export of an older day racing with a newer one can never move
    the pointer back: the loser re-reads and decides again. Returns whether it points here.
    """
    from botocore.exceptions import ClientError

    key = pointer_key(s3, surface)
    body = json.dumps(record, sort_keys=True).encode()
    for _ in range(POINTER_ATTEMPTS):
        current, etag = read_json(client, s3.bucket, key)
        if current == record:
            return True  # a retry of the export that moved it
        if current is not None and str(current["ds"]) > ds.isoformat():
            return False
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            client.put_object(
                Bucket=s3.bucket, Key=key, Body=body, ContentType="application/json", **condition
            )
        except ClientError as error:
            if precondition_failed(error):
                continue
            raise
        return True
    raise S3PublishError(f"{key} changed under every one of {POINTER_ATTEMPTS} attempts to move it")


def export_rankings(
    ranked: DataFrame, s3: S3Settings, surface: str, ds: date, version: str, meta: dict[str, Any]
) -> ExportResult:
    """Upload ranked lists in parallel, then write the manifest, then move the pointer.

    Safe to retry after a crash at any point: an export whose manifest exists is complete (the
    manifest is written once, ``If-None-Match: *``, after every part) and is only pointed at
    again; without a manifest nothing can point at the folder, so its parts are replaced.
    """
    from botocore.exceptions import ClientError

    client = s3_client(s3)
    ensure_bucket(client, s3.bucket)
    prefix = export_prefix(s3, surface, ds, version)
    manifest_key = f"{prefix}_manifest.json"
    manifest, _ = read_json(client, s3.bucket, manifest_key)
    resumed = manifest is not None
    if manifest is None:
        delete_prefix(
            client, s3.bucket, prefix
        )  # parts of an attempt that died before its manifest
        manifest = upload_parts(ranked, s3, surface, ds, version, meta, prefix)
        try:
            client.put_object(
                Bucket=s3.bucket,
                Key=manifest_key,
                Body=json.dumps(manifest, indent=2, sort_keys=True).encode(),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as error:
            if not precondition_failed(error):
                raise
            manifest, _ = read_json(client, s3.bucket, manifest_key)  # a twin attempt won
            if manifest is None:
                raise S3PublishError(f"{manifest_key} was refused but cannot be read") from error
    pointer = {"ds": ds.isoformat(), "version": version, "manifest": manifest_key}
    updated = update_pointer(client, s3, surface, ds, pointer)
    return ExportResult(
        bucket=s3.bucket,
        prefix=prefix,
        manifest_key=manifest_key,
        users=int(manifest["users"]),
        parts=len(manifest["parts"]),
        bytes=sum(int(p["bytes"]) for p in manifest["parts"]),
        pointer_updated=updated,
        resumed=resumed,
    )


def upload_parts(
    ranked: DataFrame,
    s3: S3Settings,
    surface: str,
    ds: date,
    version: str,
    meta: dict[str, Any],
    prefix: str,
) -> dict[str, Any]:
    """Upload the parts from the executors and return the manifest that describes them.

    Raises:
        S3PublishError: the parts hold another number of lists than the table.
    """
    parts = [
        row.asDict()
        for row in ranked.mapInPandas(make_part_uploader(s3, prefix), PART_SCHEMA).collect()
    ]
    expected = ranked.count()
    manifest = build_manifest(
        parts,
        {**meta, "surface": surface, "ds": ds.isoformat(), "version": version},
        datetime.now(UTC),
    )
    if manifest["users"] != expected:
        raise S3PublishError(
            f"uploaded parts hold {manifest['users']} lists but the table has {expected}; "
            "the manifest was not written, so the export stays invisible"
        )
    return manifest

"""The S3 export's manifest: user counts and parts in order."""

from __future__ import annotations

from datetime import UTC, datetime

from rankflow.publish.s3 import build_manifest


def test_manifest_counts_and_orders_parts() -> None:
    parts = [
        {"key": "p/part-00001.parquet", "rows": 3, "bytes": 30, "sha256": "b"},
        {"key": "p/part-00000.parquet", "rows": 2, "bytes": 20, "sha256": "a"},
    ]
    manifest = build_manifest(parts, {"model_version": "4"}, datetime(2026, 1, 1, tzinfo=UTC))
    assert manifest["users"] == 5
    assert manifest["schema_version"] == 1
    assert [p["sha256"] for p in manifest["parts"]] == ["a", "b"]
    assert manifest["model_version"] == "4"

"""The service's own metrics that need no server: garbage-collection pauses."""

from __future__ import annotations

import gc

import pytest


def test_every_garbage_collection_is_timed_by_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    from rankflow.serving.metrics import Metrics

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics()
    gc.callbacks.append(metrics.watch_gc)
    try:
        gc.collect()  # a full collection: generation 2
    finally:
        gc.callbacks.remove(metrics.watch_gc)
    text = metrics.exposition().decode()
    assert 'rankflow_gc_pause_seconds_count{generation="2"} 1.0' in text

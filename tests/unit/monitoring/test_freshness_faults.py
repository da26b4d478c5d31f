"""The stream watch's verdict from the figures (no Redis: the figures as read)."""

from __future__ import annotations

from rankflow.monitoring.freshness import (
    SUMMARY_MAX_AGE_SECONDS,
    PartitionFreshness,
    StreamFreshness,
)


def figures(behind: float | None, p99: float | None, summary_age: float | None) -> StreamFreshness:
    partition = PartitionFreshness("kafka:0", behind, 1, 10, 0.01, p99, p99, summary_age)
    return StreamFreshness("kafka", 0, 60.0, 30.0, [partition])


def test_each_fault_is_named_and_an_old_slow_summary_no_longer_alerts() -> None:
    assert figures(1.0, 0.2, 5.0).problems() == []
    assert figures(61.0, 0.2, 5.0).faults() == {"kafka:0": "last caught up 61 s ago (bound 60 s)"}
    assert "p99 event-to-visible 45.0 s" in figures(1.0, 45.0, 5.0).faults()["kafka:0"]
    # a backlog's slow summary, then a quiet night: shown on the page, not alerted for ever
    assert figures(1.0, 45.0, SUMMARY_MAX_AGE_SECONDS + 1).problems() == []
    assert figures(None, None, None).faults() == {"kafka:0": "no updater ever reported"}
    assert not figures(None, None, None).reported

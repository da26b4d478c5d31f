"""The serving log appends its queue in a few large pipelines, not one per answer (real Redis)."""

from __future__ import annotations

import time

import pytest

from rankflow.serving.log import ServedRecord, ServingLog, decode_record

pytestmark = pytest.mark.services

STREAM = "rf-test:log:served"


def record(n: int) -> ServedRecord:
    """A small answer record numbered ``n``."""
    return ServedRecord(
        f"req-{n}", 1_700_000_000_000 + n, n, "home", 10, b"", b"", b"", "5", "fv", False, None
    )


def test_records_wait_for_the_flush_interval_then_go_in_one_pipeline(redis_client) -> None:
    served = ServingLog(
        redis_client, STREAM, max_queue=100, max_stream_length=1000, batch=5, flush_seconds=1.0
    )
    served.start()
    try:
        time.sleep(1.2)  # the first interval passes with nothing queued
        for n in range(3):
            served.append(record(n))
        time.sleep(0.3)
        assert redis_client.xlen(STREAM) == 0  # under a batch: they wait for the interval
        deadline = time.monotonic() + 3.0
        while redis_client.xlen(STREAM) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        entries = redis_client.xrange(STREAM)
        assert [decode_record(fields[b"r"]).request_id for _, fields in entries] == [
            "req-0", "req-1", "req-2"
        ]  # fmt: skip
        first = time.monotonic()
        for n in range(3, 8):  # a full batch goes at once, before the interval
            served.append(record(n))
        while redis_client.xlen(STREAM) < 8 and time.monotonic() - first < 3.0:
            time.sleep(0.01)
        assert redis_client.xlen(STREAM) == 8
        assert time.monotonic() - first < 0.9
    finally:
        served.stop()
    assert served.logged == 8
    assert served.dropped == 0


def test_stop_sends_what_is_queued_at_once(redis_client) -> None:
    served = ServingLog(
        redis_client, STREAM, max_queue=100, max_stream_length=1000, flush_seconds=60.0
    )
    served.start()
    for n in range(4):
        served.append(record(n))
    started = time.monotonic()
    served.stop()
    assert time.monotonic() - started < 2.0
    assert redis_client.xlen(STREAM) == 4

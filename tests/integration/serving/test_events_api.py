"""POST /v1/events on a real service: checked, logged whole or refused; a sale leaves answers."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from rankflow.config import Settings
from rankflow.quality.live import decode_record
from rankflow.store.client import redis_client as open_client
from rankflow.store.fresh import events_log_key
from rankflow.stream.log import partition_reader
from rankflow.stream.updater import Updater, UpdaterConfig
from serving_helpers import call, running_service, wait_for

pytestmark = pytest.mark.services


def now_text(seconds: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def event(n: int, kind: str = "click", item: int = 5, **changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "event_id": f"api-{n}", "event_type": kind, "ts": now_text(-1), "user_id": 40 + n % 3,
        "item_id": item, "surface": "search", "session_id": "s-1", "position": 1 + n % 20,
    }  # fmt: skip
    return fields | changes


def logged(client: object, partitions: int) -> list[object]:
    return [
        decode_record(fields[b"r"])
        for p in range(partitions)
        for _, fields in client.xrange(events_log_key("rf", p))
    ]


def test_events_are_checked_and_logged_whole_or_refused_with_reasons(
    settings: Settings, redis_client
) -> None:
    partitions = int(settings.pipeline["stream"]["partitions"])
    with running_service(settings, ready=False) as base:
        status, body = call(f"{base}/v1/events", {"events": [event(1), event(2)]}, key=None)
        assert status == 401
        listing = {"item_id": 77, "seller_id": 3, "listed_ts": now_text(-5), "category": "bags",
                   "brand": "acme", "condition": "good", "price": 12.5}  # fmt: skip
        status, body = call(f"{base}/v1/events",
                            {"events": [event(1), event(2)], "items": [listing]})  # fmt: skip
        assert (status, body) == (202, {"logged": 3})
        assert len(logged(redis_client, partitions)) == 3
        bad = [event(3), event(4, position=0), event(5, ts=now_text(-7200)), event(6, kind="x")]
        status, body = call(f"{base}/v1/events", {"events": bad})
        assert status == 400
        assert body["rejected"] == [
            {"kind": "events", "index": 1, "reason": "position < 1"},
            {"kind": "events", "index": 2, "reason": "timestamp before the open window"},
            {"kind": "events", "index": 3, "reason": "unknown event_type"},
        ]
        assert len(logged(redis_client, partitions)) == 3  # nothing of the refused call
        status, body = call(f"{base}/v1/events", {"events": [event(n) for n in range(1001)]})
        assert status == 400
        assert "at most 1000" in body["error"]
        status, body = call(f"{base}/v1/events", {"evnts": []})
        assert status == 400
        assert "malformed request" in body["error"]


def test_a_sold_item_leaves_the_answers_within_seconds(settings: Settings, redis_client) -> None:
    stream = settings.pipeline["stream"]
    updater = Updater(
        open_client(settings.redis.url),
        partition_reader(settings, range(int(stream["partitions"])), "api-test"),
        UpdaterConfig.of("rf", stream),
    )
    thread = threading.Thread(target=updater.run, daemon=True)
    thread.start()
    try:
        with running_service(settings, ready=False) as base:
            request = {"user_id": 41, "surface": "home", "candidates": [4, 5, 6], "k": 3}

            def answer() -> list[int]:
                status, body = call(f"{base}/v1/rank", request)
                assert status == 200
                return [item["item_id"] for item in body["items"]]

            assert answer() == [4, 5, 6]
            sold_at = time.monotonic()
            status, _ = call(f"{base}/v1/events", {"events": [event(9, "purchase", item=5)]})
            assert status == 202
            wait_for(lambda: answer() == [4, 6], seconds=5.0, step=0.05)
            took = time.monotonic() - sold_at
            print(f"sold item gone from the answers {took * 1000:.0f} ms after its event")
            assert took < 5.0
    finally:
        updater.stop()
        thread.join(5)
    assert updater.totals.sold == [5]

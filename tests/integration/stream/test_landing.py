"""The log landed as raw drops, over Redis Streams and Kafka: once per event id, ingest-valid."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rankflow.quality.live import Listing, LiveEvent, Window, rejection
from rankflow.stream import landing
from rankflow.stream.landing import COMPACTED, LANDING_GROUP, Lander

pytestmark = pytest.mark.services

TODAY = int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
D0 = TODAY - 2 * 86_400_000  # long closed: every event of it has arrived
D1 = TODAY  # open: late events may still arrive
CLOSE_AFTER = 3_900_000  # one hour of late events plus five minutes


def lander_over(backend, redis_client, raw: Path, holder: str = "t") -> Lander:
    reader = backend.reader("rft", consumer=holder, group=LANDING_GROUP)
    return Lander(redis_client, reader, raw, "rft", partitions=2, close_after_ms=CLOSE_AFTER,
                  batch=50, block_ms=50)  # fmt: skip


def event(n: int, ts: int, user: int = 7) -> LiveEvent:
    return LiveEvent(f"land-{n}", n % 6, ts, user, 1_000 + n, "home", f"s{user}", 1 + n % 20)


def land_all(lander: Lander, expected: int, now_ms: int | None) -> None:
    for _ in range(200):
        lander.step(now_ms=now_ms)
        if lander.totals.entries >= expected:
            return
    raise AssertionError(f"landed {lander.totals} of {expected} entries")


def day_folder(raw: Path, kind: str, day_ms: int) -> Path:
    return raw / kind / f"ds={datetime.fromtimestamp(day_ms / 1000, UTC).date().isoformat()}"


def test_a_day_closes_after_its_last_late_event_with_one_line_per_event_id(
    backend, redis_client, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    # day 0's events, each taken by the log two seconds after it happened, a producer's retry
    # of ten of them a minute later, a listing; then, past day 0's end plus the hour late
    # events may take, today's events
    events = [event(n, D0 + 86_000_000 + n * 1_000, user=7 + n % 5) for n in range(120)]
    listing = Listing(99_001, 5, D0 + 10_000, "bags", "acme", "good", 12.5, size="M")
    retried = events[:10]
    today = [event(500 + n, D1 + n) for n in range(5)]
    backend.append_at("rft", [listing, *events, *retried, *today],
                      [D0 + 12_000, *[e.ts_ms + 2_000 for e in events],
                       *[events[-1].ts_ms + 60_000 + n for n in range(10)],
                       *[e.ts_ms + 2_000 for e in today]])  # fmt: skip
    lander = lander_over(backend, redis_client, raw)
    land_all(lander, 136, now_ms=None)
    lander.step()  # past the old day's close on every partition: it closes; today stays open
    day0 = day_folder(raw, "events", D0)
    assert sorted(lander.totals.closed) == [f"events/{day0.name}", f"items/{day0.name}"]
    assert lander.totals.late == 0
    assert (day0 / "_SUCCESS").exists()
    assert [p.name for p in day0.glob("*.jsonl")] == [COMPACTED]
    lines = (day0 / COMPACTED).read_text().splitlines()
    by_id = {json.loads(line)["event_id"]: line for line in lines}
    assert sorted(by_id) == sorted(e.event_id for e in events)  # once each, retries too
    assert len(lines) == len(events)
    window = Window(D0, D0 + 86_399_999)
    assert all(rejection("events", line.encode(), 65_536, window) is None for line in lines)
    assert json.loads(by_id["land-0"]) == {
        "event_id": "land-0", "event_type": "impression",
        "ts": datetime.fromtimestamp((D0 + 86_000_000) / 1000, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z"),
        "user_id": 7, "item_id": 1000, "surface": "home", "session_id": "s7", "position": 1,
    }  # fmt: skip
    (line,) = (day_folder(raw, "items", D0) / COMPACTED).read_text().splitlines()
    assert rejection("items", line.encode(), 65_536, window) is None
    open_day = day_folder(raw, "events", D1)  # today: late events may still come
    assert not (open_day / "_SUCCESS").exists()
    assert sum(len(p.read_text().splitlines()) for p in open_day.glob("stream-*.jsonl")) == 5
    # a producer past the contract: an event of the closed day, logged now, is kept aside
    backend.append_at("rft", [event(900, D0 + 5_000)], [int(datetime.now(UTC).timestamp() * 1000)])
    land_all(lander, 137, now_ms=None)
    assert lander.totals.late == 1
    assert len((day0 / COMPACTED).read_text().splitlines()) == len(events)


def test_a_batch_landed_but_not_acknowledged_is_not_landed_twice(
    backend, redis_client, tmp_path: Path
) -> None:
    if backend.name == "kafka":
        pytest.skip("Kafka re-delivery after a crash is the committed offset's: the kill test")
    raw = tmp_path / "raw"
    backend.log("rft").append([event(n, D1 + 1_000 * n) for n in range(30)])
    crashed = lander_over(backend, redis_client, raw, holder="same")
    entries = crashed.reader.read(100, 50)
    by_partition: dict[int, list] = {}
    for entry in entries:
        by_partition.setdefault(entry.partition, []).append(entry)
    for partition, part in by_partition.items():
        crashed.land(partition, part)  # written, then the process dies before XACK
    written = sorted(p.name for p in raw.glob("events/*/stream-*.jsonl"))
    assert redis_client.hget(crashed.positions_key(), "redis1") is not None  # user 7: partition 1
    again = lander_over(backend, redis_client, raw, holder="same")
    land_all(again, 30, now_ms=None)
    assert again.totals.skipped == 30  # every re-delivered entry was landed already
    assert sorted(p.name for p in raw.glob("events/*/stream-*.jsonl")) == written


def test_a_crash_between_a_batchs_files_lands_every_line_once(
    backend, redis_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend.name == "kafka":
        pytest.skip("the crash point is in the lander, the same on both backends")
    raw = tmp_path / "raw"
    old = [event(n, D0 + 86_000_000 + n, user=8) for n in range(6)]  # day 0 ...
    listing = Listing(99_002, 5, D0 + 86_100_000, "bags", "acme", "good", 9.0)  # ... and its items
    backend.append_at("rft", [*old, listing], [e.ts_ms + 1_000 for e in old] + [D0 + 86_101_000])
    crashed = lander_over(backend, redis_client, raw, holder="same")
    calls = {"n": 0}
    real = landing.write_atomically

    def dies_on_the_second_file(path: Path, lines: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed between a batch's two files")
        real(path, lines)  # type: ignore[arg-type]

    monkeypatch.setattr(landing, "write_atomically", dies_on_the_second_file)
    with pytest.raises(KeyboardInterrupt):
        crashed.step()
    monkeypatch.setattr(landing, "write_atomically", real)
    again = lander_over(backend, redis_client, raw, holder="same")
    land_all(again, 7, now_ms=None)
    again.step()
    events_file = day_folder(raw, "events", D0) / COMPACTED
    items_file = day_folder(raw, "items", D0) / COMPACTED
    assert sorted(
        json.loads(x)["event_id"] for x in events_file.read_text().splitlines()
    ) == sorted(e.event_id for e in old)
    assert len(items_file.read_text().splitlines()) == 1

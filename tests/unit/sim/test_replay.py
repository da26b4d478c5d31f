"""A generated day's morning, read for a replay: checked, in time order, grouped by due moment."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rankflow.quality.live import Listing, LiveEvent
from rankflow.sim.marketplace import GeneratorConfig, generate_marketplace
from rankflow.sim.replay import (
    SEND_BATCH,
    Timed,
    midnight_ms,
    morning,
    replay,
    restamped,
    schedule,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[GeneratorConfig, Path]:
    config = GeneratorConfig.preset("tiny", days=2)
    raw = tmp_path_factory.mktemp("replay") / "raw"
    generate_marketplace(config, raw)
    return config, raw


def test_the_morning_is_every_checked_record_of_its_hours_in_time_order(tiny) -> None:
    config, raw = tiny
    day = config.last_day
    timed = morning(raw, day, hours=9.0)
    offsets = [t.offset_ms for t in timed]
    assert offsets == sorted(offsets)
    assert all(0 <= o < 9 * 3_600_000 for o in offsets)
    lines = [json.loads(line) for path in (raw / "events" / f"ds={day}").glob("*.jsonl")
             for line in path.read_text().splitlines()]  # fmt: skip
    start = midnight_ms(day)
    wanted = {e["event_id"] for e in lines if e["ts"] < f"{day.isoformat()}T09:00:00Z"}
    assert {t.fields["event_id"] for t in timed if t.kind == "events"} == wanted
    assert any(t.kind == "items" for t in timed)  # the morning's new listings
    assert any(t.fields.get("event_type") == "purchase" for t in timed)  # and its sales
    first = next(t for t in timed if t.kind == "events")
    assert first.fields["ts"] == start + first.offset_ms


def test_a_broken_line_is_counted_not_sent(tiny, tmp_path: Path) -> None:
    config, raw = tiny
    day = config.last_day
    folder = raw / "events" / f"ds={day}"
    (folder / "zz-broken.jsonl").write_text('{"event_id": "x", "ts": "not a time"}\n')
    try:
        timed = morning(raw, day, hours=1.0)
    finally:
        (folder / "zz-broken.jsonl").unlink()
    refused = [t for t in timed if t.offset_ms < 0]
    assert len(refused) == 1
    sent = []

    class Recorder:
        def append(self, records) -> None:
            sent.extend(records)

        def close(self) -> None:
            pass

    done = replay(Recorder(), timed, speed=1e9)
    assert done.refused == 1
    assert done.events + done.listings == len(sent) == len(timed) - 1
    assert done.purchases == sum(
        isinstance(r, LiveEvent) and r.type_name == "purchase" for r in sent
    )
    first_ids = {r.event_id for r in sent if isinstance(r, LiveEvent)}
    assert all(i.startswith("replay-") for i in first_ids)
    again = len(sent)
    time.sleep(0.002)  # another run: another start
    replay(Recorder(), timed, speed=1e9)  # a second replay the same day: new event ids
    assert first_ids.isdisjoint(r.event_id for r in sent[again:] if isinstance(r, LiveEvent))


def test_records_are_restamped_to_their_compressed_moment_in_groups() -> None:
    timed = [Timed(o, "events", {}) for o in (0, 0, 600, 1200, 1200)] + [Timed(-1, "events", {})]
    groups = list(schedule(timed, start_ms=1_000, speed=600.0))
    assert [(due, len(g)) for due, g in groups] == [(1_000, 2), (1_001, 1), (1_002, 2)]
    many = [Timed(0, "events", {})] * (SEND_BATCH + 3)
    assert [len(g) for _, g in schedule(many, 0, 1.0)] == [SEND_BATCH, 3]
    fields = {"event_id": "e1", "event_type": "click", "ts": 1, "user_id": 2, "item_id": 3}
    event = Timed(5, "events", {**fields, "surface": "home", "session_id": "s", "position": 1})
    record = restamped(event, 99, "replay-")
    assert (record.event_id, record.ts_ms) == ("replay-e1", 99)
    item = Timed(5, "items", {"item_id": 3, "seller_id": 4, "listed_ts": 1, "category": "c",
                              "brand": "b", "condition": "good", "price": 9.0})  # fmt: skip
    assert restamped(item, 77, "replay-") == Listing(3, 4, 77, "c", "b", "good", 9.0)
    with pytest.raises(ValueError, match="speed must be positive"):
        replay(None, [], speed=0)  # type: ignore[arg-type]

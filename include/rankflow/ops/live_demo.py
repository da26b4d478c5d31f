"""``make demo``'s live morning: today's behaviour reaching the ranking service within seconds.

With the nightly run done, the demo starts the stream updater (``rankflow stream``) beside the
ranking service and, over HTTP as the app would:

1. ranks a demo user's search-like page, sends a burst of intent (clicks and saves on one
   category the page's top did not favour) to ``POST /v1/events`` and ranks the page again:
   a model with stream features moves that category up;
2. lists a new item of that category (``POST /v1/events`` items) and times how long until the
   service scores it (the item features training gives a listing newer than its feature day),
   and where it ranks on the page;
3. sells the page's top item (a purchase event by another user) and times how long until the
   item has left the answers;
4. replays the next morning of the demo marketplace (sessions, new listings, sales) into the
   event log at a chosen speed and reads the updater's freshness figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from rankflow.config import Settings

BURST_ITEMS = 4  # items of the intent's category the user clicks and saves
REPLAY_HOURS = 6.0
REPLAY_SPEED = 720.0  # six hours in thirty seconds


@contextmanager
def running(command: list[str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run a ``rankflow`` command as a child process for the block; stop it after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rankflow.cli", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.2)
        if process.poll() is not None:
            problem = process.stderr.read().decode()[-800:] if process.stderr else ""
            raise RuntimeError(f"{name} exited at start: {problem}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def post(url: str, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
    """POST JSON with a bearer key; the status and decoded answer (errors too)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as failure:
        return failure.code, json.loads(failure.read() or b"{}")


def iso(ms: int) -> str:
    """An event time as the raw format writes it."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def model_reads_stream(settings: Settings) -> bool:
    """Whether the champion takes stream features (trained with ``training.stream_features``)."""
    import os

    from rankflow.features.registry import STREAM_FEATURES
    from rankflow.model.fit import booster_from_bytes
    from rankflow.model.registry import load_model

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a clean transcript
    names = booster_from_bytes(load_model(settings)[0]).feature_names or []
    return bool(set(names) & set(STREAM_FEATURES))


def mixed_page(snapshot: Any, size: int) -> list[int]:
    """Unsold items spread over every category: a page a burst of intent can reorder."""
    unsold = np.flatnonzero(~snapshot.is_sold)
    step = max(len(unsold) // size, 1)
    return [int(i) for i in snapshot.item_ids[unsold[::step][:size]]]


def burst_of_intent(
    base: str, key: str, user: int, page: list[int], category_of: dict[int, int], names: list[str]
) -> dict[str, Any]:
    """Rank the page, click and save items of one category it did not favour, rank again."""
    request = {"user_id": user, "surface": "search", "candidates": page, "k": 10}
    _, before = post(f"{base}/v1/rank", request, key)
    top = [item["item_id"] for item in before["items"]]
    counts = np.bincount([category_of[i] for i in page], minlength=len(names))
    in_top = np.bincount([category_of[i] for i in top], minlength=len(names))
    eligible = np.flatnonzero(counts >= 2 * BURST_ITEMS)
    if not len(eligible):
        raise RuntimeError(f"no category has {2 * BURST_ITEMS} items on the demo page")
    intent = int(eligible[np.argmin(in_top[eligible])])
    chosen = [i for i in page if category_of[i] == intent and i not in top][:BURST_ITEMS]
    at = time.time_ns() // 1_000_000 - 2_500  # before the request's cutoff (its second - 1 s)
    events = [
        {"event_id": f"demo-burst-{at}-{n}-{kind}", "event_type": kind, "ts": iso(at + n * 100),
         "user_id": user, "item_id": item, "surface": "search", "session_id": f"demo-{at}",
         "position": n + 1}
        for n, item in enumerate(chosen) for kind in ("click", "save")
    ]  # fmt: skip
    status, _ = post(f"{base}/v1/events", {"events": events}, key)
    if status != 202:
        raise RuntimeError(f"POST /v1/events answered {status}")
    time.sleep(0.5)  # the updater applies it within milliseconds; one poll of margin
    _, after = post(f"{base}/v1/rank", request, key)
    after_top = [item["item_id"] for item in after["items"]]
    return {
        "user_id": user,
        "intent_category": names[intent],
        "clicked_and_saved": chosen,
        "intent_items_in_top10_before": int(in_top[intent]),
        "intent_items_in_top10_after": sum(category_of[i] == intent for i in after_top),
        "untouched_intent_items_in_top10_after": sum(
            category_of[i] == intent and i not in chosen for i in after_top
        ),
        "top10_before": top,
        "top10_after": after_top,
    }


def listing_of(snapshot: Any, item: int, item_id: int, listed_ms: int) -> dict[str, Any]:
    """A raw listing like a snapshot item (its attributes, price and condition), under a new id."""
    from rankflow.features.registry import CONDITION_RANK

    row = int(np.searchsorted(snapshot.item_ids, item))
    words = {name: int(codes[row]) for name, codes in snapshot.codes.items()}
    values = dict(zip(snapshot.feature_names, snapshot.vectors[row].tolist(), strict=True))
    condition = {rank: name for name, rank in CONDITION_RANK.items()}.get(
        int(values["item_condition_rank"]) if np.isfinite(values["item_condition_rank"]) else 0,
        "good",
    )
    listing = {"item_id": item_id, "seller_id": 1, "listed_ts": iso(listed_ms),
               "condition": condition, "price": round(float(values["item_price"]), 2)}  # fmt: skip
    for name, code in words.items():
        if code >= 0:
            listing[name] = snapshot.vocabulary[code]
    return listing


def new_listing_ranked(
    base: str, key: str, user: int, page: list[int], snapshot: Any, like: int
) -> dict[str, Any]:
    """List an item like ``like`` under a new id; time until it is scored, and its rank."""
    at = time.time_ns() // 1_000_000
    item_id = int(snapshot.item_ids.max()) + 1 + at % 1_000_000_000  # new on every run
    listing = listing_of(snapshot, like, item_id, at)
    candidates = [*page, item_id]
    request = {"user_id": user, "surface": "search", "candidates": candidates,
               "k": len(candidates)}  # fmt: skip
    started = time.monotonic()
    status, _ = post(f"{base}/v1/events", {"items": [listing]}, key)
    if status != 202:
        raise RuntimeError(f"POST /v1/events answered {status} for a listing")
    while time.monotonic() - started < 10:
        _, answer = post(f"{base}/v1/rank", request, key)
        ranked = [(item["item_id"], item["score"]) for item in answer["items"]]
        rank = next(n for n, (item, _) in enumerate(ranked, 1) if item == item_id)
        if ranked[rank - 1][1] is not None:
            return {"item_id": item_id, "like": like, "category": listing.get("category"),
                    "scored_after_ms": round((time.monotonic() - started) * 1000),
                    "rank": rank, "of": len(candidates)}  # fmt: skip
        time.sleep(0.05)
    return {"item_id": item_id, "like": like, "category": listing.get("category"),
            "scored_after_ms": None, "rank": None, "of": len(candidates)}  # fmt: skip


def sale_disappears(base: str, key: str, user: int, page: list[int]) -> dict[str, Any]:
    """Another user buys the page's top item; time until it has left the user's answers."""
    request = {"user_id": user, "surface": "search", "candidates": page, "k": 10}
    _, answer = post(f"{base}/v1/rank", request, key)
    sold = int(answer["items"][0]["item_id"])
    at = time.time_ns() // 1_000_000
    purchase = {"event_id": f"demo-sale-{at}", "event_type": "purchase", "ts": iso(at),
                "user_id": user + 1, "item_id": sold, "surface": "home",
                "session_id": f"demo-sale-{at}", "position": 1}  # fmt: skip
    started = time.monotonic()
    post(f"{base}/v1/events", {"events": [purchase]}, key)
    while time.monotonic() - started < 10:
        _, answer = post(f"{base}/v1/rank", request, key)
        if sold not in [item["item_id"] for item in answer["items"]]:
            return {"item_id": sold, "gone_after_ms": round((time.monotonic() - started) * 1000)}
        time.sleep(0.05)
    return {"item_id": sold, "gone_after_ms": None}


def live_morning(settings: Settings, ds: date, base: str, key: str, user: int) -> dict[str, Any]:
    """The four scenes of the module docstring; print them and return their figures."""
    from rankflow.monitoring.freshness import read_freshness
    from rankflow.runs import read_run_record
    from rankflow.serving.snapshot import load_snapshot
    from rankflow.sim.replay import replay_morning
    from rankflow.store.client import redis_client

    snapshot = load_snapshot(read_run_record(settings, ds, "materialise-features")["snapshot"])
    names = snapshot.vocabulary  # codes index it
    category_of = dict(zip(snapshot.item_ids.tolist(), snapshot.codes["category"].tolist(),
                           strict=True))  # fmt: skip
    page = mixed_page(snapshot, 300)
    reads = model_reads_stream(settings)
    print("\n== a live morning: rankflow stream beside the service (docs/stream.md)")
    if not reads:
        print("the champion takes no stream features (training.stream_features: false): the "
              "burst of intent cannot move it; sales still leave the answers")  # fmt: skip
    burst = burst_of_intent(base, key, user, page, category_of, names)
    print(
        f"user {user}, a page of {len(page)} items of every category: before the burst "
        f"{burst['intent_items_in_top10_before']} of the top 10 are {burst['intent_category']}; "
        f"the user clicks and saves {len(burst['clicked_and_saved'])} of them (POST /v1/events); "
        f"after it {burst['intent_items_in_top10_after']} are "
        f"({burst['untouched_intent_items_in_top10_after']} of them items the user had not touched)"
    )
    print(f"  top 10 before: {burst['top10_before']}\n  top 10 after:  {burst['top10_after']}")
    listed = new_listing_ranked(base, key, user, page, snapshot, burst["clicked_and_saved"][0])
    print(f"a new {listed['category']} listing like item {listed['like']} went up: scored "
          f"{listed['scored_after_ms']} ms after its listing event, ranked {listed['rank']} of "
          f"{listed['of']} for user {user}")  # fmt: skip
    sale = sale_disappears(base, key, user, page)
    print(f"item {sale['item_id']} (the page's first) sold: gone from the answers "
          f"{sale['gone_after_ms']} ms after its purchase event")  # fmt: skip
    replayed = replay_morning(settings, ds, REPLAY_HOURS, REPLAY_SPEED)
    rate = (replayed.events + replayed.listings) / max(replayed.seconds, 1e-9)
    time.sleep(11)  # the updater writes its lag summary every 10 s
    client = redis_client(settings.redis.url)
    try:
        freshness = read_freshness(client, settings)
    finally:
        client.close()
    lags = [p.p99_seconds for p in freshness.partitions if p.p99_seconds is not None]
    state = "fresh" if not freshness.problems() else "behind: " + "; ".join(freshness.problems())
    p99 = f"{max(lags) * 1000:.1f} ms" if lags else "not reported"
    print(
        f"replayed {ds}'s first {REPLAY_HOURS:.0f} hours at {REPLAY_SPEED:.0f}x: "
        f"{replayed.events:,} events ({replayed.purchases} purchases) and {replayed.listings} "
        f"listings in {replayed.seconds:.1f} s ({rate:,.0f}/s); event to visible p99 {p99}; "
        f"the stream is {state}"
    )
    return {"model_reads_stream": reads, "burst": burst, "listing": listed, "sale": sale,
            "replay": asdict(replayed), "freshness": freshness.as_record()}  # fmt: skip

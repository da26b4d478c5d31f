"""Simulated sales for the demo and the tests: hourly drops drawn from the listed catalogue."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from rankflow.config import Settings
from rankflow.publish.repair import current_meta, gold_batches, list_arrays
from rankflow.quality.raw import sales_hour_dir
from rankflow.store.client import redis_client


def write_sales_hour(raw: Path, hour: datetime, sales: list[tuple[int, datetime]]) -> Path:
    """Land one hour's sales drop (JSON Lines, then ``_SUCCESS``), replacing an earlier one."""
    folder = sales_hour_dir(raw, hour)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_SUCCESS").unlink(missing_ok=True)
    lines = [
        json.dumps({"item_id": int(item), "sold_ts": sold.isoformat().replace("+00:00", "Z")})
        for item, sold in sales
    ]
    (folder / "part-00000.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""))
    (folder / "_SUCCESS").touch()
    return folder


def simulate_sales(
    items: np.ndarray, weights: np.ndarray, start: datetime, hours: int, per_hour: int, seed: int
) -> list[tuple[datetime, list[tuple[int, datetime]]]]:
    """Draw each hour's sales: unique items, more likely the more lists show them.

    A second-hand item sells once: an item drawn in one hour never sells again later.
    """
    rng = np.random.default_rng(seed)
    available = np.ones(len(items), dtype=bool)
    drops: list[tuple[datetime, list[tuple[int, datetime]]]] = []
    for h in range(hours):
        hour = start + timedelta(hours=h)
        p = np.where(available, weights, 0).astype(float)
        count = min(per_hour, int(available.sum()))
        if count == 0:
            drops.append((hour, []))
            continue
        picked = rng.choice(len(items), size=count, replace=False, p=p / p.sum())
        available[picked] = False
        seconds = np.sort(rng.integers(0, 3600, size=count))
        sales = [
            (int(items[i]), hour + timedelta(seconds=int(s)))
            for i, s in zip(picked, seconds, strict=True)
        ]
        drops.append((hour, sales))
    return drops


def listed_items(raw: Path, until: date) -> np.ndarray:
    """Return the ids of every item listed in the raw item drops up to ``until``."""
    import pandas as pd

    ids = []
    for folder in sorted((raw / "items").glob("ds=*")):
        if date.fromisoformat(folder.name[3:]) <= until:
            for path in sorted(folder.glob("*.jsonl*")):
                ids.append(pd.read_json(path, lines=True, dtype={"item_id": "Int64"})["item_id"])
    return np.unique(pd.concat(ids).dropna().to_numpy(dtype=np.int64)) if ids else np.zeros(0)


def sale_weights(catalogue: np.ndarray, shown: np.ndarray, shown_counts: np.ndarray) -> np.ndarray:
    """Weight each catalogue item's chance to sell: 1, plus log(1 + lists showing it).

    Most sales happen away from the lists; an item many lists show sells more often.
    """
    weights = np.ones(len(catalogue))
    position = np.searchsorted(catalogue, shown)
    inside = (position < len(catalogue)) & (
        catalogue[np.minimum(position, len(catalogue) - 1)] == shown
    )
    weights[position[inside]] += np.log1p(shown_counts[inside])
    return weights


def land_simulated_sales(
    settings: Settings, surface: str, hours: int, per_hour: int, seed: int
) -> tuple[datetime, int]:
    """Land simulated hourly sales drops for the morning after the current lists' day.

    Items are drawn from the whole catalogue listed so far, more often the more published lists
    show them. Returns the first hour and the number of sales.
    """
    client = redis_client(settings.redis.url)
    _, meta = current_meta(client, settings.redis.key_prefix, surface)
    list_ds = date.fromisoformat(meta["ds"])
    flat = [list_arrays(batch)[2] for batch in gold_batches(meta, surface)]
    shown, counts = np.unique(np.concatenate(flat), return_counts=True)
    catalogue = np.union1d(listed_items(settings.paths.raw, list_ds), shown)
    weights = sale_weights(catalogue, shown, counts)
    start = datetime(list_ds.year, list_ds.month, list_ds.day, tzinfo=UTC) + timedelta(days=1)
    drops = simulate_sales(catalogue, weights, start, hours, per_hour, seed)
    for hour, sales in drops:
        write_sales_hour(settings.paths.raw, hour, sales)
    return start, sum(len(sales) for _, sales in drops)

"""The generator at marketplace scale: proportional sizes, block-by-block days, bounded memory."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rankflow import host
from rankflow.sim import marketplace
from rankflow.sim.marketplace import (
    SCALE_PRESETS,
    GenerationTooLarge,
    GeneratorConfig,
    build_world,
    check_room,
    generate_marketplace,
    generation_needs,
)


def read_day_events(raw: Path) -> pd.DataFrame:
    """Every event line of every day, in a canonical order (blocks change the line order)."""
    rows = [
        json.loads(line)
        for path in sorted(raw.glob("events/ds=*/part-00000.jsonl"))
        for line in path.read_text().splitlines()
    ]
    return pd.DataFrame(rows).sort_values("event_id").reset_index(drop=True)


def read_truth(raw: Path) -> pd.DataFrame:
    """Every day's truth rows, in a canonical order."""
    frames = [pq.read_table(p).to_pandas() for p in sorted(raw.glob("truth/ds=*/*.parquet"))]
    return pd.concat(frames).sort_values(["session_id", "item_id"]).reset_index(drop=True)


@pytest.mark.parametrize("users", [100_000, 300_000, 1_000_000, 54_321])
def test_a_size_grows_the_demo_in_proportion(users: int) -> None:
    demo, grown = GeneratorConfig(), GeneratorConfig.for_users(users)
    assert grown.total_users == users
    factor = users / demo.total_users
    for name in ("initial_items", "new_items_per_day", "sellers", "sessions_per_day"):
        assert getattr(grown, name) == round(getattr(demo, name) * factor)
    # the behaviour model is the demo's: only the sizes differ
    sizes = {"initial_users", *marketplace.SCALED_WITH_USERS}
    assert replace(grown, **{n: getattr(demo, n) for n in sizes}) == demo


def test_named_sizes_are_presets_and_keep_their_calendar() -> None:
    for name, users in SCALE_PRESETS.items():
        assert GeneratorConfig.preset(name) == GeneratorConfig.for_users(users)
    ending = GeneratorConfig.preset("1m", end=GeneratorConfig().last_day, seed=3)
    assert ending.total_users == 1_000_000
    assert ending.seed == 3
    with pytest.raises(ValueError, match="too small"):
        GeneratorConfig.for_users(10)


def test_a_day_written_in_blocks_holds_what_one_block_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = GeneratorConfig.preset("tiny", days=3)
    whole = generate_marketplace(config, tmp_path / "whole")
    monkeypatch.setattr(marketplace, "BLOCK_IMPRESSIONS", 1)  # every slot a block of its own
    blocks = generate_marketplace(config, tmp_path / "blocks")
    assert blocks.events_by_type == whole.events_by_type
    assert blocks.impressions > 0
    pd.testing.assert_frame_equal(
        read_day_events(tmp_path / "blocks"), read_day_events(tmp_path / "whole")
    )
    pd.testing.assert_frame_equal(read_truth(tmp_path / "blocks"), read_truth(tmp_path / "whole"))
    truth_file = next((tmp_path / "blocks").glob("truth/ds=*/attractiveness.parquet"))
    assert pq.ParquetFile(truth_file).num_row_groups > 1  # written block by block


def test_users_drawn_in_chunks_are_one_world_per_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    config = GeneratorConfig.preset("tiny")
    unchunked = build_world(config).users
    monkeypatch.setattr(marketplace, "USER_CHUNK", 100)
    chunked = build_world(config).users
    assert np.array_equal(chunked.signup_sec, unchunked.signup_sec)
    # the first draw of a block's first chunk is the block's own generator's, as before
    assert np.array_equal(chunked.category_pref[:100], unchunked.category_pref[:100])
    # later chunks draw from generators of their own, not copies of the first chunk's draws
    assert not np.array_equal(chunked.brand_affinity[100:200], chunked.brand_affinity[:100])
    assert np.allclose(chunked.category_pref.sum(axis=1), 1.0)
    again = build_world(config).users
    assert np.array_equal(again.brand_affinity, chunked.brand_affinity)


def test_the_summary_reports_rate_and_peak_memory(tmp_path: Path) -> None:
    summary = generate_marketplace(GeneratorConfig.preset("tiny", days=2), tmp_path)
    assert summary.events == sum(summary.events_by_type.values()) > summary.impressions
    assert summary.events_per_second > 0
    assert summary.peak_memory_bytes > 50 * 2**20  # a Python process with numpy and pandas


def test_a_size_the_machine_cannot_hold_fails_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = GeneratorConfig.for_users(1_000_000)
    needs = generation_needs(config)
    assert needs.memory_bytes > 2**30
    assert needs.disk_bytes > 2**30
    monkeypatch.setattr(host, "available_memory_bytes", lambda: needs.memory_bytes - 1)
    with pytest.raises(GenerationTooLarge, match=r"needs about [\d.]+ GiB of memory"):
        check_room(config, tmp_path / "raw")
    monkeypatch.setattr(host, "available_memory_bytes", lambda: needs.memory_bytes)
    monkeypatch.setattr(marketplace, "DISK_PER_IMPRESSION", 10**12)
    with pytest.raises(GenerationTooLarge, match=r"of disk under"):
        check_room(config, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()

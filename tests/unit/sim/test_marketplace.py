"""The marketplace generator writes the raw drop contract and a plausible, learnable world."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rankflow.sim.marketplace import (
    GenerationSummary,
    GeneratorConfig,
    duplicates_in_rows,
    generate_marketplace,
    resolve_purchases,
)

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
MAX_ID = 2**32 - 1
KINDS = ("users", "items", "events", "truth")
USER_FIELDS = {"user_id", "signup_ts", "country", "size"}
ITEM_FIELDS = {
    "item_id",
    "seller_id",
    "listed_ts",
    "category",
    "brand",
    "style",
    "size",
    "condition",
    "price",
    "seller_rating",
}
EVENT_FIELDS = {
    "event_id",
    "event_type",
    "ts",
    "user_id",
    "item_id",
    "surface",
    "session_id",
    "position",
    "schema_version",
}
ACTIONS = ("click", "like", "save", "add_to_bag", "purchase")


@dataclass(frozen=True)
class Drop:
    """One generated tiny marketplace, as written and as read back."""

    config: GeneratorConfig
    raw: Path
    summary: GenerationSummary
    users: pd.DataFrame
    items: pd.DataFrame
    events: pd.DataFrame
    truth: pd.DataFrame


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_kind(raw: Path, kind: str) -> pd.DataFrame:
    frames = []
    for folder in sorted((raw / kind).glob("ds=*")):
        frame = pd.DataFrame.from_records(read_jsonl(folder / "part-00000.jsonl"))
        frames.append(frame.assign(ds=folder.name.removeprefix("ds=")))
    return pd.concat(frames, ignore_index=True)


def read_truth(raw: Path) -> pd.DataFrame:
    frames = [
        pq.read_table(folder / "attractiveness.parquet").to_pandas().assign(ds=folder.name[3:])
        for folder in sorted((raw / "truth").glob("ds=*"))
    ]
    return pd.concat(frames, ignore_index=True)


def tree_digest(raw: Path) -> dict[str, str]:
    return {
        str(p.relative_to(raw)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(raw.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def drop(tmp_path_factory: pytest.TempPathFactory) -> Drop:
    config = GeneratorConfig.preset("tiny")
    raw = tmp_path_factory.mktemp("tiny") / "raw"
    summary = generate_marketplace(config, raw)
    return Drop(
        config=config,
        raw=raw,
        summary=summary,
        users=read_kind(raw, "users"),
        items=read_kind(raw, "items"),
        events=read_kind(raw, "events"),
        truth=read_truth(raw),
    )


@pytest.fixture(scope="module")
def impressions(drop: Drop) -> pd.DataFrame:
    """Impressions with their truth and a click flag (any click on that item in the session)."""
    events = drop.events
    shown = events[events.event_type == "impression"]
    clicked = events[events.event_type == "click"][["session_id", "item_id"]].assign(click=1)
    return (
        shown.merge(drop.truth, on=["session_id", "item_id", "user_id", "ds"], how="left")
        .merge(clicked, on=["session_id", "item_id"], how="left")
        .fillna({"click": 0})
    )


# --- configuration -----------------------------------------------------------------------------


def test_presets_and_overrides() -> None:
    demo, tiny = GeneratorConfig.preset("demo"), GeneratorConfig.preset("tiny", seed=3)
    assert demo == GeneratorConfig()
    assert demo.sessions_per_day * demo.list_length * demo.days >= 1_000_000
    assert (tiny.seed, tiny.days, tiny.sessions_per_day, tiny.list_length) == (3, 14, 150, 20)


def test_rejects_unknown_preset_and_impossible_config() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        GeneratorConfig.preset("huge")
    with pytest.raises(ValueError, match="initial_items"):
        GeneratorConfig(initial_items=50, list_length=20)
    with pytest.raises(ValueError, match="surface_shares"):
        GeneratorConfig(surface_shares=(0.5, 0.2, 0.2))


# --- pure helpers --------------------------------------------------------------------------------


def test_duplicates_in_rows_keeps_the_leftmost_occurrence() -> None:
    values = np.array([[5, 3, 5, 5, 1], [2, 2, 9, 1, 9]], dtype=np.int64)
    assert duplicates_in_rows(values).tolist() == [
        [False, False, True, True, False],
        [False, True, False, False, True],
    ]


def test_resolve_purchases_sells_once_and_never_before_a_later_impression() -> None:
    item = np.array([1, 1, 2, 2, 3], dtype=np.int64)
    shown_at = np.array([100, 110, 100, 500, 100], dtype=np.int64)
    attempt = np.array([True, True, True, False, True])
    attempt_at = np.array([400, 300, 200, 0, 150], dtype=np.int64)
    # item 1: both attempts follow its last impression, the earlier one (300) sells it;
    # item 2: the attempt at 200 precedes another list's impression at 500, so it does not sell;
    # item 3: a single attempt after its only impression sells it.
    assert resolve_purchases(item, shown_at, attempt, attempt_at).tolist() == [
        False,
        True,
        False,
        False,
        True,
    ]


# --- the drop contract -------------------------------------------------------------------------


def test_every_day_folder_is_complete_and_nothing_temporary_is_left(drop: Drop) -> None:
    days = [(drop.config.start + timedelta(days=d)).isoformat() for d in range(drop.config.days)]
    assert drop.summary.days == days
    for kind in KINDS:
        assert sorted(p.name for p in (drop.raw / kind).iterdir()) == [f"ds={d}" for d in days]
        for d in days:
            names = sorted(p.name for p in (drop.raw / kind / f"ds={d}").iterdir())
            data = "attractiveness.parquet" if kind == "truth" else "part-00000.jsonl"
            assert names == sorted(["_SUCCESS", data])
            assert (drop.raw / kind / f"ds={d}" / "_SUCCESS").stat().st_size == 0


def test_rows_follow_the_raw_format(drop: Drop) -> None:
    for kind, expected in (
        ("users", USER_FIELDS),
        ("items", ITEM_FIELDS),
        ("events", EVENT_FIELDS),
    ):
        for path in sorted((drop.raw / kind).glob("ds=*/part-00000.jsonl")):
            rows = read_jsonl(path)
            assert rows, path
            assert all(set(row) == expected for row in rows), path
    users, items, events = drop.users, drop.items, drop.events
    integers = [
        users.user_id,
        items.item_id,
        items.seller_id,
        events.user_id,
        events.item_id,
        events.position,
    ]
    for column in integers:
        assert column.map(type).eq(int).all(), column.name
        assert column.between(1, MAX_ID).all(), column.name
    assert users.user_id.is_unique
    assert items.item_id.is_unique
    assert users.signup_ts.str.match(TS).all()
    assert set(users.country) <= {"FR", "DE", "ES", "IT", "NL", "PL", "LT", "BE", "UK", "CZ"}
    assert set(users["size"].dropna()) <= {"XS", "S", "M", "L", "XL", "XXL"}
    assert users["size"].isna().any()
    assert items.listed_ts.str.match(TS).all()
    assert set(items["size"]) <= {"XS", "S", "M", "L", "XL", "XXL", "one_size"}
    assert set(items.condition) == {"new_with_tags", "very_good", "good", "satisfactory"}
    assert items.category.nunique() >= 10
    assert items.brand.nunique() >= 50
    assert items["style"].isna().any()
    assert (items.price > 0).all()
    rating = items.seller_rating.dropna()
    assert rating.between(1, 5).all()
    assert items.seller_rating.isna().any()
    assert events.event_id.map(type).eq(str).all()
    assert events.session_id.map(type).eq(str).all()
    assert events.event_id.is_unique
    assert set(events.event_type) == {"impression", *ACTIONS}
    assert set(events.surface) == {"home", "search", "similar"}
    assert events.ts.str.match(TS).all()
    assert (events.ts.str[:10] == events.ds).all()
    assert (events.position >= 1).all()


def test_summary_counts_what_was_written(drop: Drop) -> None:
    assert drop.summary.users == len(drop.users)
    assert drop.summary.items == len(drop.items)
    assert drop.summary.sellers == drop.items.seller_id.nunique()
    assert drop.summary.events_by_type == drop.events.event_type.value_counts().to_dict()
    assert drop.summary.impressions == (drop.events.event_type == "impression").sum()
    assert drop.summary.sold_items == (drop.events.event_type == "purchase").sum()
    assert json.loads(json.dumps(drop.summary.as_dict()))["impressions"] == drop.summary.impressions


# --- determinism and idempotency ---------------------------------------------------------------


def test_same_seed_writes_identical_bytes_and_another_seed_does_not(
    drop: Drop, tmp_path: Path
) -> None:
    generate_marketplace(drop.config, tmp_path / "again")
    assert tree_digest(tmp_path / "again") == tree_digest(drop.raw)
    generate_marketplace(GeneratorConfig.preset("tiny", seed=8), tmp_path / "other")
    other = tree_digest(tmp_path / "other")
    assert other.keys() == tree_digest(drop.raw).keys()
    changed = [name for name, digest in other.items() if digest != tree_digest(drop.raw)[name]]
    assert all(any(name.startswith(kind) for name in changed) for kind in KINDS)


def test_regenerating_replaces_the_days(drop: Drop, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    generate_marketplace(GeneratorConfig.preset("tiny", seed=8), raw)
    (raw / "events" / "ds=2026-10-02" / "part-00001.jsonl").write_text("stale\n")
    generate_marketplace(drop.config, raw)
    assert tree_digest(raw) == tree_digest(drop.raw)


def test_first_days_do_not_depend_on_how_many_days_follow(drop: Drop, tmp_path: Path) -> None:
    generate_marketplace(GeneratorConfig.preset("tiny", days=3), tmp_path / "short")
    short = tree_digest(tmp_path / "short")
    assert len(short) == 3 * len(KINDS) * 2
    assert short == {name: tree_digest(drop.raw)[name] for name in short}


def test_a_day_without_sessions_has_empty_events_and_truth(tmp_path: Path) -> None:
    config = GeneratorConfig.preset("tiny", days=2, sessions_per_day=0)
    summary = generate_marketplace(config, tmp_path)
    assert summary.impressions == 0
    assert summary.events_by_type == dict.fromkeys(["impression", *ACTIONS], 0)
    for ds in summary.days:
        assert (tmp_path / "events" / f"ds={ds}" / "part-00000.jsonl").read_text() == ""
        assert (tmp_path / "events" / f"ds={ds}" / "_SUCCESS").exists()
        truth = pq.read_table(tmp_path / "truth" / f"ds={ds}" / "attractiveness.parquet")
        assert truth.num_rows == 0
        assert truth.schema.names == ["session_id", "user_id", "item_id", "attractiveness"]


# --- sessions and truth ------------------------------------------------------------------------


def test_sessions_are_lists_of_distinct_items_at_positions_1_to_n(drop: Drop) -> None:
    shown = drop.events[drop.events.event_type == "impression"]
    per_session = shown.groupby("session_id")
    length = drop.config.list_length
    assert per_session.position.apply(lambda p: sorted(p) == list(range(1, length + 1))).all()
    assert (per_session.item_id.nunique() == length).all()
    assert (per_session[["user_id", "surface", "ds"]].nunique() == 1).all().all()
    assert per_session.ngroups == drop.config.sessions_per_day * drop.config.days


def test_actions_follow_an_impression_of_the_same_session_position_and_item(drop: Drop) -> None:
    events = drop.events
    shown = events[events.event_type == "impression"]
    actions = events[events.event_type != "impression"]
    joined = actions.merge(
        shown, on=["session_id", "item_id"], how="left", suffixes=("", "_shown"), validate="m:1"
    )
    assert joined.ts_shown.notna().all()
    assert (joined.position == joined.position_shown).all()
    assert (joined.user_id == joined.user_id_shown).all()
    assert (joined.surface == joined.surface_shown).all()
    assert (joined.ts >= joined.ts_shown).all()
    keys = ["session_id", "item_id"]
    clicks = set(map(tuple, actions[actions.event_type == "click"][keys].to_numpy()))
    for kind in ("like", "save", "add_to_bag"):
        assert set(map(tuple, actions[actions.event_type == kind][keys].to_numpy())) <= clicks
    bags = actions[actions.event_type == "add_to_bag"]
    buys = actions[actions.event_type == "purchase"]
    paired = buys.merge(bags, on=keys, how="left", suffixes=("", "_bag"))
    assert paired.ts_bag.notna().all()
    assert (paired.ts >= paired.ts_bag).all()


def test_truth_has_one_row_per_impression(drop: Drop) -> None:
    shown = drop.events[drop.events.event_type == "impression"]
    assert len(drop.truth) == len(shown)
    assert drop.truth.groupby("ds").size().equals(shown.groupby("ds").size())
    keys = ["session_id", "item_id", "user_id"]
    merged = shown[keys].merge(drop.truth[keys], how="outer", indicator=True, validate="1:1")
    assert (merged._merge == "both").all()
    assert [str(t) for t in drop.truth.dtypes.iloc[:4]] == ["object", "int64", "int64", "float64"]
    assert drop.truth.attractiveness.between(0, 1, inclusive="neither").all()


# --- the marketplace -----------------------------------------------------------------------------


def test_an_item_sells_once_and_is_never_shown_after_it_sold(drop: Drop) -> None:
    events = drop.events
    buys = events[events.event_type == "purchase"]
    assert buys.item_id.is_unique
    sold_at = buys.set_index("item_id").ts
    shown = events[(events.event_type == "impression") & events.item_id.isin(sold_at.index)]
    assert len(shown) > 0
    assert (shown.ts <= shown.item_id.map(sold_at)).all()
    assert (shown.ds <= shown.item_id.map(sold_at).str[:10]).all()


def test_every_day_has_clicks_and_purchases(drop: Drop) -> None:
    per_day = drop.events.groupby(["ds", "event_type"]).size().unstack(fill_value=0)
    assert len(per_day) == drop.config.days
    assert (per_day.click >= 50).all()
    assert (per_day.purchase >= 1).all()
    ctr = drop.summary.events_by_type["click"] / drop.summary.impressions
    assert 0.03 <= ctr <= 0.08


def test_new_users_and_listings_arrive_every_day_and_act_only_once_they_exist(
    drop: Drop,
) -> None:
    users, items, events = drop.users, drop.items, drop.events
    start = drop.config.start.isoformat()
    first = users.ds == start
    assert (first.sum()) >= drop.config.initial_users
    assert (users[first].signup_ts < start).sum() == drop.config.initial_users
    later = users[~first]
    assert later.ds.nunique() == drop.config.days - 1
    assert (later.signup_ts.str[:10] == later.ds).all()
    assert (items[items.ds == start].listed_ts < start).sum() == drop.config.initial_items
    later_items = items[items.ds != start]
    assert later_items.ds.nunique() == drop.config.days - 1
    assert (later_items.listed_ts.str[:10] == later_items.ds).all()
    signup = users.set_index("user_id").signup_ts
    listed = items.set_index("item_id").listed_ts
    assert (events.ts > events.user_id.map(signup)).all()
    assert (events.ts > events.item_id.map(listed)).all()
    assert events.user_id.isin(later.user_id).any()
    assert events.item_id.isin(later_items.item_id).any()


def test_returning_users_have_history_and_some_come_once(drop: Drop) -> None:
    shown = drop.events[drop.events.event_type == "impression"]
    sessions = shown.drop_duplicates("session_id")[["session_id", "user_id", "ds"]]
    per_user = sessions.groupby("user_id").size()
    assert (per_user == 1).sum() > 0
    assert (per_user >= 10).sum() > 0
    assert per_user.max() <= 0.05 * len(sessions)
    clicks = drop.events[drop.events.event_type == "click"]
    first_click = clicks.groupby("user_id").ds.min()
    last_day = sessions[sessions.ds == sessions.ds.max()]
    assert (last_day.user_id.map(first_click) < last_day.ds).mean() > 0.5


def test_position_bias_follows_the_examination_model(impressions: pd.DataFrame, drop: Drop) -> None:
    by_position = impressions.groupby("position")
    ctr = by_position.click.mean()
    assert ctr[1] > ctr[2] > ctr[5] > ctr.loc[11:].mean()
    # clicks / sum(attractiveness) estimates P(examine | position) up to a constant
    examined = by_position.click.sum() / by_position.attractiveness.sum()
    relative = (examined / examined[1]).to_numpy()
    expected = np.arange(1, drop.config.list_length + 1) ** -drop.config.position_bias_exponent
    assert relative[1:5] == pytest.approx(expected[1:5], abs=0.08)
    assert relative[5:].mean() == pytest.approx(expected[5:].mean(), abs=0.03)


def test_clicks_follow_the_true_attractiveness(impressions: pd.DataFrame) -> None:
    clicked = impressions[impressions.click == 1].attractiveness.mean()
    ignored = impressions[impressions.click == 0].attractiveness.mean()
    assert clicked > 2 * ignored
    # at every position, clicked items are the more attractive ones
    by_position = impressions.groupby(["position", "click"]).attractiveness.mean().unstack()
    assert (by_position[1] > by_position[0]).all()


def test_personal_taste_beats_popularity(impressions: pd.DataFrame) -> None:
    """Ranking a session by the truth finds its clicks better than ranking by past clicks."""
    frame = impressions.sort_values(["ds", "session_id", "position"])
    days = sorted(frame.ds.unique())
    daily = frame.groupby(["item_id", "ds"]).click.sum().unstack(fill_value=0)
    before = daily.reindex(columns=days, fill_value=0).cumsum(axis=1).shift(1, axis=1).fillna(0)
    popularity = before.stack().rename("popularity")
    frame = frame.join(popularity, on=["item_id", "ds"]).fillna({"popularity": 0})
    held_out = frame[frame.ds >= days[-3]]

    def clicks_in_top(score: str, k: int = 5) -> float:
        ranked = held_out.sort_values(["session_id", score], ascending=[True, False])
        return float(ranked.groupby("session_id").head(k).click.sum() / held_out.click.sum())

    oracle, popular = clicks_in_top("attractiveness"), clicks_in_top("popularity")
    assert oracle > popular + 0.15


def test_lists_follow_the_logged_policy_not_the_truth(impressions: pd.DataFrame) -> None:
    """The logged order is popularity-heavy: it is far from sorting by attractiveness."""
    truth_rank = impressions.groupby("session_id").attractiveness.rank(ascending=False)
    assert abs(np.corrcoef(truth_rank, impressions.position)[0, 1]) < 0.2


def test_search_lists_mostly_hold_one_category(drop: Drop) -> None:
    shown = drop.events[drop.events.event_type == "impression"]
    category = drop.items.set_index("item_id").category
    shown = shown.assign(category=shown.item_id.map(category))
    top_share = shown.groupby(["surface", "session_id"]).category.agg(
        lambda c: c.value_counts(normalize=True).iloc[0]
    )
    assert top_share["search"].mean() > top_share["home"].mean() + 0.2


# --- visits: several lists, one intent -----------------------------------------------------------


def test_a_visits_lists_follow_each_other_within_their_slot() -> None:
    from rankflow.sim.marketplace import list_starts, visits_of_lists

    rng = np.random.default_rng(3)
    visit = visits_of_lists(rng, 30_000, 3.0)
    assert (np.diff(visit) >= 0).all()
    assert visit[0] == 0
    sizes = np.bincount(visit)
    assert 2.8 < sizes[:-1].mean() < 3.2  # 1 + Poisson(2); the last visit may be cut
    starts = list_starts(rng, visit, 3600, 7200, 60.0)
    assert ((starts >= 3600) & (starts < 7200)).all()
    same = visit[1:] == visit[:-1]
    gaps = np.diff(starts)[same]
    assert (gaps >= 0).all()
    assert 40 < np.median(gaps) < 60  # exponential, mean 60 s: median about 42 s
    assert list_starts(rng, visit[:0], 0, 10, 60.0).size == 0


def same_visit_click_lift(raw: Path) -> float:
    """CTR on the categories the previous list of the visit got clicks in, over the CTR on others.

    Only pairs of a user's lists opened less than ten minutes apart (one visit) count.
    """
    events = read_kind(raw, "events")
    category = read_kind(raw, "items").set_index("item_id")["category"]
    shown = events[events.event_type == "impression"].assign(
        category=lambda f: f.item_id.map(category), at=lambda f: pd.to_datetime(f.ts)
    )
    clicks = events[events.event_type == "click"]
    clicked = set(zip(clicks.session_id, clicks.item_id, strict=True))
    shown = shown.assign(click=[(s, i) in clicked for s, i in zip(shown.session_id, shown.item_id,
                                                                   strict=True)])  # fmt: skip
    clicked_categories = shown[shown.click].groupby("session_id").category.agg(set)
    opened = shown.groupby("session_id").agg(user=("user_id", "first"), at=("at", "min"))
    counts = np.zeros((2, 2))  # [same category?][clicks, impressions]
    by_list = dict(list(shown.groupby("session_id")))
    for _, lists in opened.sort_values("at").groupby("user"):
        for a, b in itertools.pairwise(lists.itertuples()):
            if a.Index not in clicked_categories.index or b.at - a.at >= pd.Timedelta(minutes=10):
                continue
            later = by_list[b.Index]
            same = later.category.isin(clicked_categories[a.Index]).to_numpy()
            for flag in (0, 1):
                counts[flag] += [later.click.to_numpy()[same == flag].sum(), (same == flag).sum()]
    return float((counts[1, 0] / counts[1, 1]) / (counts[0, 0] / counts[0, 1]))


def test_a_visits_intent_shows_in_its_later_lists_clicks(tmp_path: Path) -> None:
    """What a visit's first clicks reveal predicts its next ones: the stream features' signal.

    The same marketplace without the visit's intent (its weights at 0) keeps only the taste any
    day shows: the lift of the categories clicked earlier in the visit is clearly lower.
    """
    from rankflow.sim.marketplace import TasteWeights

    with_intent, without = tmp_path / "with", tmp_path / "without"
    generate_marketplace(GeneratorConfig.preset("tiny"), with_intent)
    flat = TasteWeights(visit_category=0.0, visit_brand=0.0)
    generate_marketplace(GeneratorConfig.preset("tiny", taste=flat), without)
    assert same_visit_click_lift(with_intent) > same_visit_click_lift(without) + 0.3

"""Synthetic second-hand fashion marketplace written as raw drops (docs/raw-format.md).

The simulator plays a Vinted-like app. Users with sparse latent tastes (a few categories, brands
and styles they really care about) browse lists produced by a popularity-biased *logged policy*.
A shown item is examined with a probability that decays with its position, ``(1/p)^0.8``, and
clicked with the user's true attractiveness of the item; clicks lead to likes, saves, add-to-bags
and purchases, and a purchased item is gone for good. Every day gets its users, items and events
drops, plus the truth (the attractiveness of every impression) that only evaluation may read.

Time is simulated in slots (an hour by default): the lists of one slot are drawn from the items
available at the slot's start, and a purchase only stands if no list showed the item after it, so
an item is never shown after it sold. Everything is drawn from NumPy generators seeded by
``(seed, purpose, block)``: the same configuration writes byte-identical files, and the first days
do not depend on how many days follow.

Sizes: the ``demo`` preset has 24,500 users by its last day; ``GeneratorConfig.for_users`` (the
``100k``, ``300k`` and ``1m`` presets, ``rankflow generate --users N``) grows users, listings,
sellers and sessions in proportion. Memory grows with the world (users and listings), not with
the events: a day is simulated and written in blocks of whole slots (``BLOCK_IMPRESSIONS``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rankflow import host
from rankflow.config import SURFACES
from rankflow.quality.raw import EVENT_TYPES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
StrArray = npt.NDArray[np.str_]
Record = TypeVar("Record", bound="DataclassInstance")

DAY_SECONDS = 86_400
USER_ID_BASE = 100_000  # ids of users, items and sellers live in disjoint ranges (< 2^32)
ITEM_ID_BASE = 1_000_000_000
SELLER_ID_BASE = 5_000_000
SCHEMA_VERSION = 1

CATEGORIES = (
    "dresses",
    "tops",
    "jeans",
    "sneakers",
    "boots",
    "bags",
    "coats",
    "knitwear",
    "skirts",
    "jewellery",
    "kids",
    "sportswear",
)
CATEGORY_SHARE = (0.11, 0.16, 0.09, 0.08, 0.05, 0.07, 0.07, 0.08, 0.06, 0.05, 0.10, 0.08)
CATEGORY_PRICE = (18.0, 8.0, 15.0, 35.0, 40.0, 28.0, 45.0, 14.0, 12.0, 10.0, 7.0, 15.0)  # EUR
ONE_SIZE_CATEGORIES = ("bags", "jewellery")
STYLES = ("casual", "streetwear", "vintage", "classic", "boho", "minimalist", "sporty", "glam")
SIZES = ("XS", "S", "M", "L", "XL", "XXL", "one_size")
ONE_SIZE = 6
SIZE_SHARE = (0.08, 0.22, 0.32, 0.22, 0.11, 0.05)
SIZE_FIT = (1.0, -0.5, -1.5, -1.5, -1.5, -1.5)  # by |user size - item size|; one_size fits all
CONDITIONS = ("new_with_tags", "very_good", "good", "satisfactory")
CONDITION_SHARE = (0.14, 0.42, 0.34, 0.10)
CONDITION_PRICE = (1.35, 1.0, 0.8, 0.6)
CONDITION_APPEAL = (0.3, 0.15, 0.0, -0.5)
COUNTRIES = ("FR", "DE", "ES", "IT", "NL", "PL", "LT", "BE", "UK", "CZ")
COUNTRY_SHARE = (0.30, 0.16, 0.11, 0.10, 0.06, 0.08, 0.04, 0.05, 0.06, 0.04)
TIER_SHARE = (0.35, 0.40, 0.18, 0.07)  # budget, mid, premium, luxury
TIER_PRICE = (0.6, 1.0, 1.8, 3.5)
EVENT_CODES = ("i", "c", "l", "s", "b", "p")  # last letters of event ids, one per type
BRAND_STEMS = "Alba Bruma Corra Dune Elio Fjord Gala Hollis Iris Jura Kora Lumen Mira Nova Orla"
BRAND_SUFFIXES: tuple[str, ...] = ("", " Studio", " & Co", " Atelier", " Label", " Club")
BRAND_SUFFIXES += (" House", " Supply", " Collective", " Works")

STREAM_CATALOGUE, STREAM_USERS, STREAM_ITEMS, STREAM_EVENTS = 0, 1, 2, 3
# a day's impressions are simulated and written in blocks of whole slots of about this many,
# so the generator's memory does not grow with the events of a day
BLOCK_IMPRESSIONS = 250_000
# users of one block are drawn in chunks of at most this many (each with its own generator past
# the first), bounding the (users x brands) temporaries; the demo's blocks fit in one chunk
USER_CHUNK = 65_536
# what grows with the number of users when a preset is scaled (everything else is behaviour)
SCALED_WITH_USERS = (
    "new_users_per_day",
    "initial_items",
    "new_items_per_day",
    "sellers",
    "sessions_per_day",
)
SCALE_PRESETS = {"100k": 100_000, "300k": 300_000, "1m": 1_000_000}


@dataclass(frozen=True)
class TasteWeights:
    """Coefficients of the true attractiveness logit (what a perfect ranker would recover)."""

    intercept: float = -6.0
    category: float = 4.0  # times the user's affinity (0..1, 1 = favourite) for the category
    brand: float = 3.0
    style: float = 3.0
    size: float = 1.5  # times SIZE_FIT of the size distance
    price: float = 1.5  # times (price sensitivity - 0.3) * log(price / category median)
    quality: float = 0.4  # times the item's latent quality (standard normal)
    seller: float = 0.3  # times the seller's latent quality (standard normal)
    visit_category: float = 2.5  # when the item is of the category the user came for this visit
    visit_brand: float = 1.5  # ... of the brand the user came for


@dataclass(frozen=True)
class GeneratorConfig:
    """Size and behaviour of the simulated marketplace (defaults = the ``demo`` preset)."""

    seed: int = 7
    start: date = date(2026, 10, 1)  # first day of events
    days: int = 30
    initial_users: int = 20_000
    new_users_per_day: int = 150
    initial_items: int = 50_000  # live listings on day 0 (listed before start)
    new_items_per_day: int = 1_500
    sellers: int = 6_000
    sessions_per_day: int = 1_900  # lists shown per day, across surfaces
    list_length: int = 20  # impressions per session, positions 1..list_length
    lists_per_visit: float = 3.0  # a visit opens 1 + Poisson(this - 1) lists, one intent for all
    visit_gap_seconds: float = 60.0  # mean time between the lists of a visit (exponential)
    slots_per_day: int = 24  # availability is refreshed at the start of every slot
    candidate_factor: int = 3  # the policy draws candidate_factor * list_length candidates
    surface_shares: tuple[float, float, float] = (0.60, 0.25, 0.15)  # home, search, similar
    personal_shares: tuple[float, float, float] = (0.30, 0.80, 0.60)  # from the target category
    position_bias_exponent: float = 0.8  # P(examine | position p) = (1/p)^exponent
    like_rate: float = 0.25  # P(like | click) = like_rate * attractiveness
    save_rate: float = 0.15  # P(save | click) = save_rate * attractiveness
    add_to_bag_rate: float = 0.12  # P(add_to_bag | click) = add_to_bag_rate * attractiveness
    purchase_given_bag: float = 0.4  # P(purchase | add_to_bag)
    activity_sigma: float = 1.2  # log-normal spread of how often users come back ...
    activity_cap: float = 2.5  # ... truncated at this many sigmas (no single user dominates)
    new_user_boost: float = 6.0  # activity multiplier on the signup day
    signup_history_days: int = 730  # initial users signed up during these days before start
    listing_history_days: int = 42  # initial items were listed during these days before start
    brand_zipf: float = 1.1  # brand popularity ~ 1 / rank^brand_zipf
    policy_brand_exponent: float = 0.7  # logged policy weight ~ popularity^this ...
    policy_quality: float = 0.8  # ... * exp(policy_quality * item quality) ...
    policy_click_exponent: float = 0.5  # ... * (1 + past clicks)^this ...
    policy_fresh_boost: float = 1.0  # ... * (1 + boost) for listings younger than fresh_days
    policy_fresh_days: float = 2.0
    policy_personal_bonus: float = 0.5  # score bonus of items in the session's target category
    policy_noise: float = 1.0  # scale of the Gumbel noise added to the policy's log-score
    taste: TasteWeights = field(default_factory=TasteWeights)

    def __post_init__(self) -> None:
        """Reject configurations the simulation cannot honour, with the reason."""
        checks = {
            "days >= 1": self.days >= 1,
            "initial_users >= 1": self.initial_users >= 1,
            "sellers >= 1": self.sellers >= 1,
            "list_length >= 1": self.list_length >= 1,
            "lists_per_visit >= 1": self.lists_per_visit >= 1.0,
            "candidate_factor >= 1": self.candidate_factor >= 1,
            "sessions_per_day >= 0": self.sessions_per_day >= 0,
            "new_users_per_day >= 0": self.new_users_per_day >= 0,
            "new_items_per_day >= 0": self.new_items_per_day >= 0,
            "1 <= slots_per_day <= 1440": 1 <= self.slots_per_day <= 1440,
            "initial_items >= 10 * list_length": self.initial_items >= 10 * self.list_length,
            "surface_shares sum to 1": abs(sum(self.surface_shares) - 1.0) < 1e-9,
            "rates in [0, 1]": all(
                0.0 <= r <= 1.0
                for r in (
                    self.like_rate,
                    self.save_rate,
                    self.add_to_bag_rate,
                    self.purchase_given_bag,
                    *self.surface_shares,
                    *self.personal_shares,
                )
            ),
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid GeneratorConfig: {', '.join(failed)}")

    @property
    def total_users(self) -> int:
        """Users signed up by the last day (the initial ones and every day's new ones)."""
        return self.initial_users + self.new_users_per_day * self.days

    @classmethod
    def for_users(cls, users: int, **overrides: Any) -> GeneratorConfig:
        """The demo marketplace grown to ``users`` users by its last day.

        Listings, sellers, new users and sessions grow in proportion, so each active user sees
        about as many lists a month as in the demo (about 75 impressions) and the behaviour
        model is the same; only the sizes change.
        """
        demo = cls()
        factor = users / demo.total_users
        sized = {name: max(1, round(getattr(demo, name) * factor)) for name in SCALED_WITH_USERS}
        sized["initial_users"] = users - sized["new_users_per_day"] * demo.days
        if sized["initial_users"] < 1:
            raise ValueError(f"--users {users} is too small to scale the demo marketplace to")
        return cls(**{**sized, **overrides})

    @property
    def last_day(self) -> date:
        """The last simulated day (``start + days - 1``)."""
        return self.start + timedelta(days=self.days - 1)

    def ending(self, last: date) -> GeneratorConfig:
        """The same marketplace on a calendar that ends on ``last`` (only the dates change).

        Every draw depends on the seed and on day offsets from ``start``, never on the dates
        themselves, so the shifted calendar holds the same users, items and events.
        """
        return replace(self, start=last - timedelta(days=self.days - 1))

    @classmethod
    def preset(cls, name: str, *, end: date | None = None, **overrides: Any) -> GeneratorConfig:
        """Return a named configuration with overrides: ``tiny`` (tests), ``demo``, or a size.

        The sizes ``100k``, ``300k`` and ``1m`` are the demo grown by :meth:`for_users`.
        ``end`` moves the calendar so that its last day is ``end`` (see :meth:`ending`); without
        it the calendar starts on ``start`` (2026-10-01 unless overridden).
        """
        if name in SCALE_PRESETS:
            config = cls.for_users(SCALE_PRESETS[name], **overrides)
            return config if end is None else config.ending(end)
        presets: dict[str, dict[str, Any]] = {
            "demo": {},
            "tiny": {
                "seed": 7,
                "days": 14,
                "initial_users": 400,
                "new_users_per_day": 8,
                "initial_items": 1_200,
                "new_items_per_day": 25,
                "sellers": 300,
                "sessions_per_day": 150,
                "list_length": 20,
                # more conversions so every tiny day has purchases to label and sell
                "add_to_bag_rate": 0.5,
                "purchase_given_bag": 0.7,
            },
        }
        if name not in presets:
            choices = sorted([*presets, *SCALE_PRESETS])
            raise ValueError(f"unknown preset {name!r}; choose one of {choices}")
        config = cls(**{**presets[name], **overrides})
        return config if end is None else config.ending(end)


def yesterday(now: datetime | None = None) -> date:
    """The last complete UTC day: the day the next nightly run processes."""
    return (now or datetime.now(UTC)).astimezone(UTC).date() - timedelta(days=1)


@dataclass(frozen=True)
class GenerationSummary:
    """What one generation wrote (returned to the CLI and logged)."""

    days: list[str]
    users: int
    items: int
    sellers: int
    events_by_type: dict[str, int]
    impressions: int
    sold_items: int
    seconds: float
    events: int = 0  # every event of every type
    events_per_second: float = 0.0
    peak_memory_bytes: int = 0  # the process's peak resident memory (ru_maxrss)

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as a JSON-serialisable dictionary."""
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Catalogue:
    """Brands and sellers: the marketplace's fixed supply side."""

    brand_names: StrArray
    brand_popularity: FloatArray  # (B,), sums to 1, Zipf by rank
    brand_tier: IntArray  # (B,) index into TIER_PRICE
    brand_styles: FloatArray  # (B, styles), rows sum to 1: the styles a brand fits
    brand_categories: FloatArray  # (B, categories), rows sum to 1
    seller_volume: FloatArray  # (sellers,), sums to 1: share of listings
    seller_quality: FloatArray  # (sellers,) latent, standard normal
    seller_rating: FloatArray  # (sellers,) public 1..5, NaN when the seller has no rating yet


@dataclass(frozen=True, eq=False)
class Users:
    """All users of the run, sorted by signup time (index = user_id - USER_ID_BASE)."""

    signup_sec: IntArray  # seconds since start midnight (negative before start)
    country: IntArray
    size: IntArray  # true size, index into SIZES[:6]
    size_declared: BoolArray
    price_sensitivity: FloatArray  # in (0, 1)
    activity: FloatArray  # relative session rate, log-normal
    category_pref: FloatArray  # (N, categories), rows sum to 1: intent distribution
    category_affinity: FloatArray  # (N, categories), pref / max pref: 1 for the favourite
    brand_affinity: FloatArray  # (N, brands)
    style_affinity: FloatArray  # (N, styles)


@dataclass(frozen=True, eq=False)
class Items:
    """All listings of the run, sorted by listing time (index = item_id - ITEM_ID_BASE)."""

    listed_sec: IntArray
    seller: IntArray
    category: IntArray
    brand: IntArray
    style: IntArray
    style_shown: BoolArray  # the seller filled in the optional style field
    size: IntArray  # index into SIZES (ONE_SIZE for bags and jewellery)
    condition: IntArray
    price: FloatArray
    quality: FloatArray  # latent photo/appeal quality, standard normal


@dataclass(frozen=True, eq=False)
class World:
    """Everything that exists during the run, drawn before the first day is simulated."""

    catalogue: Catalogue
    users: Users
    items: Items
    user_blocks: IntArray  # (days + 2,) user index bounds: initial users, then each day
    item_blocks: IntArray  # (days + 2,) item index bounds: initial items, then each day
    items_by_category: IntArray  # item indices ordered by category (stable)
    category_bounds: IntArray  # (categories + 1,) bounds of each category in that order
    policy_base: FloatArray  # static part of the logged policy's item weight


@dataclass(eq=False)
class SimulationState:
    """What the marketplace remembers between slots (mutated as time advances)."""

    sold: BoolArray
    item_clicks: FloatArray
    user_category_clicks: npt.NDArray[np.int32]
    user_last_category: IntArray

    @classmethod
    def empty(cls, world: World) -> SimulationState:
        """Return the state before the first day: nothing sold, nobody clicked."""
        n_items, n_users = len(world.items.listed_sec), len(world.users.signup_sec)
        return cls(
            sold=np.zeros(n_items, dtype=np.bool_),
            item_clicks=np.zeros(n_items, dtype=np.float64),
            user_category_clicks=np.zeros((n_users, len(CATEGORIES)), dtype=np.int32),
            user_last_category=np.full(n_users, -1, dtype=np.int64),
        )


@dataclass(frozen=True, eq=False)
class ImpressionLog:
    """One row per impression with what followed it (all arrays of equal length)."""

    session: IntArray  # session index within the day
    user: IntArray
    item: IntArray
    position: IntArray
    surface: IntArray
    attractiveness: FloatArray
    impression_sec: IntArray
    click: BoolArray
    like: BoolArray
    save: BoolArray
    add_to_bag: BoolArray
    purchase: BoolArray
    click_sec: IntArray
    like_sec: IntArray
    save_sec: IntArray
    add_to_bag_sec: IntArray
    purchase_sec: IntArray


def stream(seed: int, purpose: int, block: int = 0, chunk: int = 0) -> np.random.Generator:
    """Return the random generator of one purpose and block, independent of all the others."""
    return np.random.default_rng([seed, purpose, block] + ([chunk] if chunk else []))


def brand_names() -> StrArray:
    """Return the 150 brand names, the plainest (most popular) first."""
    return np.array([stem + end for end in BRAND_SUFFIXES for stem in BRAND_STEMS.split()])


def dirichlet_rows(rng: np.random.Generator, alpha: FloatArray) -> FloatArray:
    """Draw one Dirichlet vector per row of ``alpha`` (small alpha = sparse preferences)."""
    draws = rng.gamma(alpha)
    totals = draws.sum(axis=1, keepdims=True)
    return np.asarray(draws / np.maximum(totals, 1e-300), dtype=np.float64)


def affinity(pref: FloatArray) -> FloatArray:
    """Scale preference rows so the favourite is 1 (what a user 'really cares about')."""
    return np.asarray(pref / np.maximum(pref.max(axis=1, keepdims=True), 1e-300), np.float64)


def sample_rows(rng: np.random.Generator, probs: FloatArray) -> IntArray:
    """Draw one column per row of a (rows, k) weight matrix, in proportion to the weights."""
    cumulative = probs.cumsum(axis=1)
    u = rng.random(len(probs))[:, None] * cumulative[:, -1:]
    picked = (cumulative <= u).sum(axis=1)
    return np.asarray(np.minimum(picked, probs.shape[1] - 1), dtype=np.int64)


def diurnal_profile(slots: int) -> FloatArray:
    """Return the share of daily activity in each slot (quiet nights, lunch and evening peaks)."""
    hours = (np.arange(slots) + 0.5) * 24.0 / slots
    weight = (
        0.15
        + np.exp(-(((hours - 20.5) / 2.5) ** 2))
        + 0.6 * np.exp(-(((hours - 12.5) / 2.0) ** 2))
        + 0.3 * np.exp(-(((hours - 8.0) / 1.5) ** 2))
    )
    return np.asarray(weight / weight.sum(), dtype=np.float64)


def times_of_day(rng: np.random.Generator, n: int, slots: int) -> IntArray:
    """Draw ``n`` sorted seconds within a day following the diurnal profile."""
    slot = rng.choice(slots, size=n, p=diurnal_profile(slots))
    seconds = (slot + rng.random(n)) * (DAY_SECONDS / slots)
    return np.sort(np.minimum(seconds.astype(np.int64), DAY_SECONDS - 1))


def build_catalogue(config: GeneratorConfig) -> Catalogue:
    """Draw brands (Zipf popularity, price tier, styles, categories) and sellers."""
    rng = stream(config.seed, STREAM_CATALOGUE)
    names = brand_names()
    n_brands = len(names)
    popularity = 1.0 / np.arange(1, n_brands + 1) ** config.brand_zipf
    tier = rng.choice(len(TIER_SHARE), size=n_brands, p=TIER_SHARE)
    tier[:15] = np.minimum(tier[:15], 1)  # the best-known brands are high-street ones
    styles = dirichlet_rows(rng, np.full((n_brands, len(STYLES)), 0.3))
    categories = dirichlet_rows(
        rng, np.tile(0.6 * len(CATEGORIES) * np.asarray(CATEGORY_SHARE), (n_brands, 1))
    )
    volume = rng.lognormal(0.0, 1.2, size=config.sellers)
    quality = rng.standard_normal(config.sellers)
    rating = np.clip(np.round(4.4 + 0.35 * quality + rng.normal(0.0, 0.3, config.sellers), 1), 1, 5)
    rating[rng.random(config.sellers) < 0.15] = np.nan
    return Catalogue(
        brand_names=names,
        brand_popularity=popularity / popularity.sum(),
        brand_tier=tier.astype(np.int64),
        brand_styles=styles,
        brand_categories=categories,
        seller_volume=volume / volume.sum(),
        seller_quality=quality,
        seller_rating=rating,
    )


def draw_users(
    rng: np.random.Generator, signup_sec: IntArray, catalogue: Catalogue, config: GeneratorConfig
) -> Users:
    """Draw users with the given signup times: market, size, price sensitivity and sparse taste."""
    n = len(signup_sec)
    n_cat = len(CATEGORIES)
    category_pref = dirichlet_rows(rng, np.tile(0.25 * n_cat * np.asarray(CATEGORY_SHARE), (n, 1)))
    style_pref = dirichlet_rows(rng, np.full((n, len(STYLES)), 0.25))
    # brands: popular ones and those fitting the user's styles get more of a concentration of 3
    fit = 0.15 + style_pref @ catalogue.brand_styles.T
    weight = catalogue.brand_popularity**0.6 * fit
    brand_pref = dirichlet_rows(rng, 3.0 * weight / weight.sum(axis=1, keepdims=True))
    return Users(
        signup_sec=signup_sec,
        country=rng.choice(len(COUNTRIES), size=n, p=COUNTRY_SHARE).astype(np.int64),
        size=rng.choice(len(SIZE_SHARE), size=n, p=SIZE_SHARE).astype(np.int64),
        size_declared=rng.random(n) < 0.88,
        price_sensitivity=rng.beta(2.0, 2.0, size=n),
        activity=np.exp(
            config.activity_sigma * np.minimum(rng.standard_normal(n), config.activity_cap)
        ),
        category_pref=category_pref,
        category_affinity=affinity(category_pref),
        brand_affinity=affinity(brand_pref),
        style_affinity=affinity(style_pref),
    )


def draw_items(rng: np.random.Generator, listed_sec: IntArray, catalogue: Catalogue) -> Items:
    """Draw listings with the given listing times: category, brand, style, size, price, quality."""
    n = len(listed_sec)
    category = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_SHARE).astype(np.int64)
    brand = np.zeros(n, dtype=np.int64)
    for c in range(len(CATEGORIES)):  # a loop over the 12 categories, not over items
        members = np.flatnonzero(category == c)
        p = catalogue.brand_popularity * catalogue.brand_categories[:, c]
        brand[members] = rng.choice(len(p), size=len(members), p=p / p.sum())
    style = sample_rows(rng, 0.75 * catalogue.brand_styles[brand] + 0.25 / len(STYLES))
    one_size = np.isin(category, [CATEGORIES.index(c) for c in ONE_SIZE_CATEGORIES])
    size = np.where(one_size, ONE_SIZE, rng.choice(len(SIZE_SHARE), size=n, p=SIZE_SHARE))
    condition = rng.choice(len(CONDITIONS), size=n, p=CONDITION_SHARE).astype(np.int64)
    log_price = (
        np.log(np.asarray(CATEGORY_PRICE))[category]
        + np.log(np.asarray(TIER_PRICE))[catalogue.brand_tier[brand]]
        + np.log(np.asarray(CONDITION_PRICE))[condition]
        + rng.normal(0.0, 0.45, size=n)
    )
    return Items(
        listed_sec=listed_sec,
        seller=rng.choice(len(catalogue.seller_volume), size=n, p=catalogue.seller_volume),
        category=category,
        brand=brand,
        style=style,
        style_shown=rng.random(n) < 0.94,
        size=size.astype(np.int64),
        condition=condition,
        price=np.maximum(1.0, np.round(np.exp(log_price) * 2.0) / 2.0),  # 0.50 EUR steps
        quality=rng.standard_normal(n),
    )


def block_times(
    rng: np.random.Generator, block: int, n: int, history_days: int, skew: float, slots: int
) -> IntArray:
    """Draw sorted creation times: block 0 in the ``history_days`` before start, else day block-1.

    Ages before start follow Beta(1, skew) of the history: 1 = uniform, > 1 = mostly recent.
    """
    if block == 0:
        age = rng.beta(1.0, skew, size=n) * history_days * DAY_SECONDS
        return np.sort(-1 - age.astype(np.int64))
    return (block - 1) * DAY_SECONDS + times_of_day(rng, n, slots)


def user_chunks(
    rng: np.random.Generator, seed: int, block: int, users: int
) -> list[tuple[np.random.Generator, int]]:
    """The generator and first index of each chunk of a block's users (the block's own first)."""
    starts = range(0, max(users, 1), USER_CHUNK)
    return [
        (rng if chunk == 0 else stream(seed, STREAM_USERS, block, chunk), at)
        for chunk, at in enumerate(starts)
    ]


def concat_records(records: Sequence[Record], kind: type[Record]) -> Record:
    """Concatenate dataclasses of equal-length arrays field by field."""
    columns = {f.name: np.concatenate([getattr(r, f.name) for r in records]) for f in fields(kind)}
    return kind(**columns)


def build_world(config: GeneratorConfig) -> World:
    """Draw the catalogue, every user and every listing of the run (initial ones, then per day)."""
    catalogue = build_catalogue(config)
    user_parts: list[Users] = []  # chunks of each block's users
    user_counts: list[int] = []
    item_parts: list[Items] = []
    slots = config.slots_per_day
    for block in range(config.days + 1):  # block 0: before start; block d + 1: day d
        n_users = config.initial_users if block == 0 else config.new_users_per_day
        rng = stream(config.seed, STREAM_USERS, block)
        signup = block_times(rng, block, n_users, config.signup_history_days, 1.0, slots)
        user_parts += [
            draw_users(chunk_rng, signup[at : at + USER_CHUNK], catalogue, config)
            for chunk_rng, at in user_chunks(rng, config.seed, block, n_users)
        ]
        user_counts.append(n_users)
        n_items = config.initial_items if block == 0 else config.new_items_per_day
        rng = stream(config.seed, STREAM_ITEMS, block)
        listed = block_times(rng, block, n_items, config.listing_history_days, 2.0, slots)
        item_parts.append(draw_items(rng, listed, catalogue))
    users = concat_records(user_parts, Users)
    items = concat_records(item_parts, Items)
    by_category = np.argsort(items.category, kind="stable")
    n_brands = len(catalogue.brand_names)
    brand_weight = (
        n_brands * catalogue.brand_popularity[items.brand]
    ) ** config.policy_brand_exponent
    return World(
        catalogue=catalogue,
        users=users,
        items=items,
        user_blocks=np.cumsum([0, *user_counts]).astype(np.int64),
        item_blocks=np.cumsum([0] + [len(p.listed_sec) for p in item_parts]).astype(np.int64),
        items_by_category=by_category.astype(np.int64),
        category_bounds=np.searchsorted(
            items.category[by_category], np.arange(len(CATEGORIES) + 1)
        ).astype(np.int64),
        policy_base=brand_weight * np.exp(config.policy_quality * items.quality),
    )


def true_attractiveness(
    world: World,
    user: IntArray,
    item: IntArray,
    taste: TasteWeights,
    visit: tuple[IntArray, IntArray] | None = None,
) -> FloatArray:
    """Return P(click | examined) of user-item pairs: personal taste first, then item and seller.

    ``visit`` (the category and brand each pair's visit came for, broadcast like ``user``) adds
    today's intent: what a session's first clicks reveal and yesterday's features cannot know.
    """
    users, items = world.users, world.items
    category = items.category[item]
    intent = 0.0
    if visit is not None:
        intent = taste.visit_category * (category == visit[0]) + taste.visit_brand * (
            items.brand[item] == visit[1]
        )
    distance = np.minimum(np.abs(users.size[user] - items.size[item]), len(SIZE_FIT) - 1)
    fit = np.where(items.size[item] == ONE_SIZE, 1.0, np.asarray(SIZE_FIT)[distance])
    price_gap = np.log(items.price[item]) - np.log(np.asarray(CATEGORY_PRICE))[category]
    logit = (
        taste.intercept
        + taste.category * users.category_affinity[user, category]
        + taste.brand * users.brand_affinity[user, items.brand[item]]
        + taste.style * users.style_affinity[user, items.style[item]]
        + taste.size * fit
        - taste.price * (users.price_sensitivity[user] - 0.3) * price_gap
        + taste.quality * items.quality[item]
        + taste.seller * world.catalogue.seller_quality[items.seller[item]]
        + np.asarray(CONDITION_APPEAL)[items.condition[item]]
        + intent
    )
    return np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=np.float64)


def policy_weights(
    world: World, state: SimulationState, config: GeneratorConfig, t0: int
) -> FloatArray:
    """Return the logged policy's weight of every item at ``t0`` (0 = not listed yet or sold)."""
    items = world.items
    fresh = (t0 - items.listed_sec) < config.policy_fresh_days * DAY_SECONDS
    weight = (
        world.policy_base
        * (1.0 + state.item_clicks) ** config.policy_click_exponent
        * np.where(fresh, 1.0 + config.policy_fresh_boost, 1.0)
    )
    available = (items.listed_sec < t0) & ~state.sold
    return np.where(available, weight, 0.0)


def draw_session_users(
    rng: np.random.Generator, world: World, config: GeneratorConfig, day: int, t0: int, n: int
) -> IntArray:
    """Draw who opens a list in a slot: signed-up users weighted by heavy-tailed activity."""
    users = world.users
    eligible = int(np.searchsorted(users.signup_sec, t0, side="left"))
    new_today = users.signup_sec[:eligible] >= day * DAY_SECONDS
    weight = users.activity[:eligible] * np.where(new_today, config.new_user_boost, 1.0)
    cumulative = np.cumsum(weight)
    picked = np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right")
    return np.asarray(np.minimum(picked, eligible - 1), dtype=np.int64)


def target_categories(
    world: World,
    state: SimulationState,
    user: IntArray,
    surface: IntArray,
    intent: IntArray,
) -> IntArray:
    """Return each session's target category (-1 = none), the policy's weak personal signal.

    Search: the category the user came for (the visit's ``intent``). Similar: the category of
    the user's last click (before this slot), else the intent. Home: the user's most clicked
    category, if any.
    """
    clicks = state.user_category_clicks[user]
    top_clicked = np.where(clicks.sum(axis=1) > 0, clicks.argmax(axis=1), -1)
    last = state.user_last_category[user]
    similar = np.where(last >= 0, last, intent)
    return np.select([surface == 0, surface == 1], [top_clicked, intent], similar).astype(np.int64)


def duplicates_in_rows(values: IntArray) -> BoolArray:
    """Mark every repeat of a value within its row (the leftmost occurrence stays False)."""
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    repeat = np.zeros(values.shape, dtype=np.bool_)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    marked = np.zeros(values.shape, dtype=np.bool_)
    np.put_along_axis(marked, order, repeat, axis=1)
    return marked


def draw_candidates(
    rng: np.random.Generator,
    world: World,
    config: GeneratorConfig,
    weight: FloatArray,
    target: IntArray,
    surface: IntArray,
) -> tuple[IntArray, FloatArray]:
    """Draw each session's candidates and score them the way the logged policy does.

    Candidates are drawn (with replacement, repeats dropped) in proportion to the policy weight,
    a surface-dependent share of them from the session's target category; the score is the log
    weight plus a small bonus for the target category plus Gumbel noise. ``list_length`` uniform
    reserve draws, scored far below, fill a list only when too few distinct candidates came up.

    Returns:
        ``(sessions, (candidate_factor + 1) * list_length)`` candidate item indices and policy
        scores, ``-inf`` where the candidate is unavailable or a repeat.
    """
    n, length = len(target), config.list_length
    draws = config.candidate_factor * length
    available = np.flatnonzero(weight > 0)
    if len(available) < length:
        raise RuntimeError(f"only {len(available)} items are available for lists of {length}")
    order = world.items_by_category
    cumulative = np.cumsum(weight[order])
    before = np.concatenate([[0.0], cumulative])
    low = before[world.category_bounds[:-1]]
    mass = before[world.category_bounds[1:]] - low
    has_target = (target >= 0) & (mass[np.maximum(target, 0)] > 0)
    share = np.asarray(config.personal_shares)[surface] * has_target
    personal = rng.random((n, draws)) < share[:, None]
    offset = np.where(personal, low[np.maximum(target, 0)][:, None], 0.0)
    width = np.where(personal, mass[np.maximum(target, 0)][:, None], cumulative[-1])
    index = np.searchsorted(cumulative, offset + rng.random((n, draws)) * width, side="right")
    drawn = order[np.minimum(index, len(order) - 1)]
    reserve = available[rng.integers(len(available), size=(n, length))]
    candidates = np.concatenate([drawn, reserve], axis=1)
    in_target = world.items.category[candidates] == target[:, None]
    score = (
        np.log(np.maximum(weight[candidates], 1e-300))
        + config.policy_personal_bonus * in_target
        + config.policy_noise * rng.gumbel(size=candidates.shape)
    )
    score[:, draws:] -= 1e9
    valid = (weight[candidates] > 0) & ~duplicates_in_rows(candidates)
    return candidates, np.where(valid, score, -np.inf)


def top_of_lists(candidates: IntArray, score: FloatArray, length: int) -> IntArray:
    """Return the ``length`` best-scored candidates of each row, best first."""
    best = np.argsort(-score, axis=1, kind="stable")[:, :length]
    if not np.isfinite(np.take_along_axis(score, best, axis=1)).all():
        raise RuntimeError("a list could not be filled with distinct available items")
    return np.take_along_axis(candidates, best, axis=1)


def resolve_purchases(
    item: IntArray, impression_sec: IntArray, purchase: BoolArray, purchase_sec: IntArray
) -> BoolArray:
    """Keep the purchases that really sell an item: first per item, after its last impression.

    A purchase attempt made before another list of the slot showed the item would make that
    impression show a sold item, so it stays an add-to-bag; of the remaining attempts on one
    item only the earliest sells it, later ones stay add-to-bags.
    """
    unique, inverse = np.unique(item, return_inverse=True)
    last_shown = np.full(len(unique), np.iinfo(np.int64).min)
    np.maximum.at(last_shown, inverse, impression_sec)
    attempt = np.flatnonzero(purchase & (purchase_sec > last_shown[inverse]))
    ordered = attempt[np.lexsort((attempt, purchase_sec[attempt], item[attempt]))]
    first = np.ones(len(ordered), dtype=np.bool_)
    first[1:] = item[ordered][1:] != item[ordered][:-1]
    sells = np.zeros(len(item), dtype=np.bool_)
    sells[ordered[first]] = True
    return sells


def visits_of_lists(rng: np.random.Generator, lists: int, mean: float) -> IntArray:
    """Number each of a slot's ``lists`` by its visit: runs of 1 + Poisson(mean - 1) lists."""
    sizes = 1 + rng.poisson(mean - 1.0, size=lists)  # at most ``lists`` visits are needed
    visit = np.repeat(np.arange(lists, dtype=np.int64), sizes)[:lists]
    return np.asarray(visit, dtype=np.int64)


def list_starts(
    rng: np.random.Generator, visit: IntArray, t0: int, t1: int, mean_gap: float
) -> IntArray:
    """When each list opens: its visit starts in ``[t0, t1)``, later lists follow by gaps."""
    if not len(visit):
        return np.zeros(0, dtype=np.int64)
    visits = int(visit[-1]) + 1
    begins = t0 + np.floor(rng.random(visits) * (t1 - t0)).astype(np.int64)
    gap = np.floor(rng.exponential(mean_gap, size=len(visit))).astype(np.int64) + 1
    first = np.r_[True, visit[1:] != visit[:-1]]
    gap[first] = 0
    elapsed = np.cumsum(gap)
    elapsed -= np.maximum.accumulate(np.where(first, elapsed, 0))  # restart at each visit
    # a visit's lists stay in its slot: a later slot's sales must not precede their impressions
    return np.asarray(np.minimum(begins[visit] + elapsed, t1 - 1), dtype=np.int64)


def later(rng: np.random.Generator, sec: IntArray, minimum: int, mean: float, end: int) -> IntArray:
    """Return times seconds to minutes after ``sec`` (exponential delays), capped at ``end``."""
    delay = minimum + np.floor(rng.exponential(mean, size=sec.shape)).astype(np.int64)
    return np.asarray(np.minimum(sec + delay, end), dtype=np.int64)


def simulate_slot(
    rng: np.random.Generator,
    world: World,
    state: SimulationState,
    config: GeneratorConfig,
    day: int,
    slot: tuple[int, int],
    n_sessions: int,
) -> ImpressionLog:
    """Simulate the lists opened during one slot ``[t0, t1)`` and what users did with them."""
    t0, t1 = slot
    length = config.list_length
    day_end = (day + 1) * DAY_SECONDS - 1
    visit = visits_of_lists(rng, n_sessions, config.lists_per_visit)
    visitor = draw_session_users(
        rng, world, config, day, t0, int(visit[-1]) + 1 if n_sessions else 0
    )
    user = visitor[visit]
    # a visit's category: often one of the user's usual ones, as often anything the market has
    exploring = 0.5 * world.users.category_pref[visitor] + 0.5 * np.asarray(CATEGORY_SHARE)
    came_for = (
        sample_rows(rng, exploring)[visit],
        sample_rows(rng, world.users.brand_affinity[visitor])[visit],
    )
    surface = rng.choice(len(SURFACES), size=n_sessions, p=config.surface_shares).astype(np.int64)
    target = target_categories(world, state, user, surface, came_for[0])
    weight = policy_weights(world, state, config, t0)
    candidates, score = draw_candidates(rng, world, config, weight, target, surface)
    shown = top_of_lists(candidates, score, length)
    users = np.repeat(user[:, None], length, axis=1)
    attract = true_attractiveness(
        world, users, shown, config.taste, (came_for[0][:, None], came_for[1][:, None])
    )
    position = np.broadcast_to(np.arange(1, length + 1), shown.shape)
    examine = position.astype(np.float64) ** -config.position_bias_exponent
    click = rng.random(shown.shape) < examine * attract
    like = click & (rng.random(shown.shape) < config.like_rate * attract)
    save = click & (rng.random(shown.shape) < config.save_rate * attract)
    bag = click & (rng.random(shown.shape) < config.add_to_bag_rate * attract)
    buy = bag & (rng.random(shown.shape) < config.purchase_given_bag)
    start = list_starts(rng, visit, t0, t1, config.visit_gap_seconds)
    impression_sec = np.minimum(start[:, None] + (position - 1) // 3, day_end)
    click_sec = later(rng, impression_sec, 1, 15.0, day_end)
    bag_sec = later(rng, click_sec, 5, 60.0, day_end)
    purchase_sec = later(rng, bag_sec, 20, 180.0, day_end)
    flat_item = shown.ravel()
    sells = resolve_purchases(flat_item, impression_sec.ravel(), buy.ravel(), purchase_sec.ravel())
    return ImpressionLog(
        session=np.repeat(np.arange(n_sessions, dtype=np.int64), length),
        user=users.ravel(),
        item=flat_item,
        position=position.ravel().astype(np.int64),
        surface=np.repeat(surface, length),
        attractiveness=attract.ravel(),
        impression_sec=impression_sec.ravel(),
        click=click.ravel(),
        like=like.ravel(),
        save=save.ravel(),
        add_to_bag=bag.ravel(),
        purchase=sells,
        click_sec=click_sec.ravel(),
        like_sec=later(rng, click_sec, 2, 30.0, day_end).ravel(),
        save_sec=later(rng, click_sec, 2, 45.0, day_end).ravel(),
        add_to_bag_sec=bag_sec.ravel(),
        purchase_sec=purchase_sec.ravel(),
    )


def advance_state(state: SimulationState, world: World, log: ImpressionLog) -> None:
    """Record a slot's sales and clicks so that later slots see them."""
    state.sold[log.item[log.purchase]] = True
    clicked_item, clicked_user = log.item[log.click], log.user[log.click]
    category = world.items.category[clicked_item]
    np.add.at(state.item_clicks, clicked_item, 1.0)
    np.add.at(state.user_category_clicks, (clicked_user, category), 1)
    latest_first = np.argsort(log.click_sec[log.click], kind="stable")[::-1]
    user, index = np.unique(clicked_user[latest_first], return_index=True)
    state.user_last_category[user] = category[latest_first][index]


def simulate_day(
    world: World,
    state: SimulationState,
    config: GeneratorConfig,
    day: int,
    block_impressions: int = BLOCK_IMPRESSIONS,
) -> Iterator[ImpressionLog]:
    """Simulate one day slot by slot, yielding blocks of whole slots.

    A block holds ``block_impressions`` or more impressions (the last one fewer); sessions are
    numbered across the day, and a day without sessions yields one empty log.
    """
    rng = stream(config.seed, STREAM_EVENTS, day)
    per_slot = rng.multinomial(config.sessions_per_day, diurnal_profile(config.slots_per_day))
    pending: list[ImpressionLog] = []
    opened = yielded = 0
    for slot, n_sessions in enumerate(per_slot.tolist()):
        if n_sessions == 0 and (pending or yielded or slot < len(per_slot) - 1):
            continue  # an empty day still yields one (empty) log
        t0 = day * DAY_SECONDS + slot * DAY_SECONDS // config.slots_per_day
        t1 = day * DAY_SECONDS + (slot + 1) * DAY_SECONDS // config.slots_per_day
        log = simulate_slot(rng, world, state, config, day, (t0, t1), n_sessions)
        advance_state(state, world, log)
        pending.append(replace_sessions(log, log.session + opened))
        opened += n_sessions
        if sum(len(p.item) for p in pending) >= block_impressions:
            yield concat_records(pending, ImpressionLog)
            pending, yielded = [], yielded + 1
    if pending:
        yield concat_records(pending, ImpressionLog)


def replace_sessions(log: ImpressionLog, session: IntArray) -> ImpressionLog:
    """Return the log with its session indices replaced (slot-local -> day-level)."""
    values = {f.name: getattr(log, f.name) for f in fields(ImpressionLog)}
    return ImpressionLog(**{**values, "session": session})


def iso_timestamps(start: date, seconds: IntArray) -> StrArray:
    """Format seconds since ``start`` midnight UTC as ISO-8601 strings with a 'Z'."""
    unique, inverse = np.unique(seconds, return_inverse=True)
    base = np.datetime64(start.isoformat(), "s")
    text = np.datetime_as_string(base + unique.astype("timedelta64[s]"), unit="s", timezone="UTC")
    return np.asarray(text[inverse], dtype=np.str_)


def zero_padded(values: IntArray, width: int) -> StrArray:
    """Format integers as strings left-padded with zeros to ``width`` digits."""
    if values.size == 0:  # np.strings.zfill cannot size an empty result
        return np.zeros(0, dtype=f"<U{width}")
    return np.asarray(np.strings.zfill(values.astype(np.str_), width), dtype=np.str_)


def session_ids(ds: date, index: IntArray, config: GeneratorConfig) -> StrArray:
    """Return the string ids of a day's sessions, e.g. ``20261001-00042`` (unique across days)."""
    width = max(5, len(str(config.sessions_per_day)))
    digits = zero_padded(index, width)
    return np.asarray(np.strings.add(f"{ds:%Y%m%d}-", digits), dtype=np.str_)


def day_rows(blocks: IntArray, day: int) -> slice:
    """Return the rows written in day ``day``'s drop: its own block, plus block 0 on day 0."""
    return slice(int(blocks[0] if day == 0 else blocks[day + 1]), int(blocks[day + 2]))


def blank_where(missing: BoolArray, values: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Return ``values`` with None (JSON null) where an optional field was left empty."""
    out = values.copy()
    out[missing] = None
    return out


def users_frame(world: World, config: GeneratorConfig, day: int) -> pd.DataFrame:
    """Return the users drop of a day (the initial users are in the first day's drop)."""
    rows = day_rows(world.user_blocks, day)
    users = world.users
    size = np.asarray(SIZES, dtype=object)[users.size[rows]]
    return pd.DataFrame(
        {
            "user_id": USER_ID_BASE + np.arange(rows.start, rows.stop, dtype=np.int64),
            "signup_ts": iso_timestamps(config.start, users.signup_sec[rows]),
            "country": np.asarray(COUNTRIES)[users.country[rows]],
            "size": blank_where(~users.size_declared[rows], size),
        }
    )


def items_frame(world: World, config: GeneratorConfig, day: int) -> pd.DataFrame:
    """Return the items drop of a day (the initial listings are in the first day's drop)."""
    rows = day_rows(world.item_blocks, day)
    items, catalogue = world.items, world.catalogue
    style = np.asarray(STYLES, dtype=object)[items.style[rows]]
    return pd.DataFrame(
        {
            "item_id": ITEM_ID_BASE + np.arange(rows.start, rows.stop, dtype=np.int64),
            "seller_id": SELLER_ID_BASE + items.seller[rows],
            "listed_ts": iso_timestamps(config.start, items.listed_sec[rows]),
            "category": np.asarray(CATEGORIES)[items.category[rows]],
            "brand": catalogue.brand_names[items.brand[rows]],
            "style": blank_where(~items.style_shown[rows], style),
            "size": np.asarray(SIZES)[items.size[rows]],
            "condition": np.asarray(CONDITIONS)[items.condition[rows]],
            "price": items.price[rows],
            "seller_rating": catalogue.seller_rating[items.seller[rows]],
        }
    )


def events_frame(log: ImpressionLog, config: GeneratorConfig, ds: date) -> pd.DataFrame:
    """Return a day's events: each impression and each action that followed it, in time order."""
    every = np.ones(len(log.item), dtype=np.bool_)
    flags = [every, log.click, log.like, log.save, log.add_to_bag, log.purchase]
    times = [log.impression_sec, log.click_sec, log.like_sec, log.save_sec]
    times += [log.add_to_bag_sec, log.purchase_sec]
    rows_by_type = [np.flatnonzero(flag) for flag in flags]
    row = np.concatenate(rows_by_type)
    kind = np.concatenate([np.full(len(r), k, dtype=np.int64) for k, r in enumerate(rows_by_type)])
    sec = np.concatenate([t[r] for t, r in zip(times, rows_by_type, strict=True)])
    order = np.lexsort((kind, log.position[row], log.session[row], sec))
    row, kind, sec = row[order], kind[order], sec[order]
    session = session_ids(ds, log.session[row], config)
    suffix = np.strings.add(zero_padded(log.position[row], 2), np.asarray(EVENT_CODES)[kind])
    return pd.DataFrame(
        {
            "event_id": np.strings.add(np.strings.add(session, "-"), suffix),
            "event_type": np.asarray(EVENT_TYPES)[kind],
            "ts": iso_timestamps(config.start, sec),
            "user_id": USER_ID_BASE + log.user[row],
            "item_id": ITEM_ID_BASE + log.item[row],
            "surface": np.asarray(SURFACES)[log.surface[row]],
            "session_id": session,
            "position": log.position[row],
            "schema_version": np.full(len(row), SCHEMA_VERSION, dtype=np.int64),
        }
    )


TRUTH_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("attractiveness", pa.float64()),
    ]
)


def truth_table(log: ImpressionLog, config: GeneratorConfig, ds: date) -> pa.Table:
    """Return the day's truth: every impression's attractiveness, known only to the simulator."""
    columns = [
        session_ids(ds, log.session, config),
        USER_ID_BASE + log.user,
        ITEM_ID_BASE + log.item,
        log.attractiveness,
    ]
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, TRUTH_SCHEMA, strict=True)],
        schema=TRUTH_SCHEMA,
    )


def write_jsonl(frame: pd.DataFrame, path: Path) -> None:
    """Write a frame as JSON Lines (an empty frame gives an empty file)."""
    with path.open("w") as out:
        append_jsonl(frame, out)


def append_jsonl(frame: pd.DataFrame, out: IO[str]) -> None:
    """Append a frame's rows to an open JSON Lines file, one object a line."""
    if not frame.empty:
        frame.to_json(out, orient="records", lines=True)


@contextmanager
def swapped_folder(final: Path) -> Iterator[Path]:
    """Yield a hidden folder to write a day into; on success add ``_SUCCESS`` and swap it in.

    Readers never see a half-written day: the folder appears complete or keeps its old content
    (a failure leaves the hidden folder, cleared by the next attempt).
    """
    temporary = final.with_name(f".{final.name}.tmp")
    previous = final.with_name(f".{final.name}.old")
    for stale in (temporary, previous):
        shutil.rmtree(stale, ignore_errors=True)
    temporary.mkdir(parents=True)
    yield temporary
    (temporary / "_SUCCESS").touch()
    if final.exists():
        final.rename(previous)
    temporary.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


def write_day(
    raw_dir: Path, ds: date, world: World, state: SimulationState, config: GeneratorConfig, day: int
) -> npt.NDArray[np.int64]:
    """Simulate and write one day's drops (users, items, then events and truth block by block).

    Returns the day's count of each event type.
    """
    folder = f"ds={ds.isoformat()}"
    for kind, frame in (
        ("users", users_frame(world, config, day)),
        ("items", items_frame(world, config, day)),
    ):
        with swapped_folder(raw_dir / kind / folder) as out:
            write_jsonl(frame, out / "part-00000.jsonl")
    counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    with (
        swapped_folder(raw_dir / "events" / folder) as events_dir,
        swapped_folder(raw_dir / "truth" / folder) as truth_dir,
        (events_dir / "part-00000.jsonl").open("w") as events,
        pq.ParquetWriter(truth_dir / "attractiveness.parquet", TRUTH_SCHEMA) as truth,
    ):
        for log in simulate_day(world, state, config, day, BLOCK_IMPRESSIONS):
            append_jsonl(events_frame(log, config, ds), events)
            truth.write_table(truth_table(log, config, ds))
            flags = (log.click, log.like, log.save, log.add_to_bag, log.purchase)
            counts += np.array([len(log.item)] + [int(f.sum()) for f in flags], dtype=np.int64)
    return counts


def generate_marketplace(
    config: GeneratorConfig,
    raw_dir: Path,
    on_day: Callable[[int, int], None] | None = None,
) -> GenerationSummary:
    """Simulate ``config.days`` days and write each day's drops and truth under ``raw_dir``.

    Re-running replaces the days it writes (other folders under ``raw_dir`` are left alone).
    ``on_day(done, total)`` is called after each day (a progress bar, for example).
    """
    started = time.perf_counter()
    world = build_world(config)
    state = SimulationState.empty(world)
    counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    days: list[str] = []
    for day in range(config.days):
        ds = config.start + timedelta(days=day)
        counts += write_day(Path(raw_dir), ds, world, state, config, day)
        days.append(ds.isoformat())
        if on_day is not None:
            on_day(day + 1, config.days)
    seconds = time.perf_counter() - started
    return GenerationSummary(
        days=days,
        users=len(world.users.signup_sec),
        items=len(world.items.listed_sec),
        sellers=len(np.unique(world.items.seller)),
        events_by_type={name: int(n) for name, n in zip(EVENT_TYPES, counts, strict=True)},
        impressions=int(counts[0]),
        sold_items=int(state.sold.sum()),
        seconds=round(seconds, 3),
        events=int(counts.sum()),
        events_per_second=round(float(counts.sum()) / max(seconds, 1e-9), 1),
        peak_memory_bytes=host.peak_memory_bytes(),
    )


# what a generation costs (measured with `rankflow generate`, see docs/scale.md): memory per user
# and per listing of the world (with the copies made while it is built), per block, and disk per
# impression of the raw drops (events, truth, users and items)
MEMORY_PER_USER = 4_600
MEMORY_PER_ITEM = 256
MEMORY_FIXED = 300 * 2**20
DISK_PER_IMPRESSION = 260


@dataclass(frozen=True)
class Needs:
    """What generating a configuration needs: memory and disk, in bytes."""

    memory_bytes: int
    disk_bytes: int


def generation_needs(config: GeneratorConfig) -> Needs:
    """Estimate the memory and disk a generation of ``config`` needs."""
    items = config.initial_items + config.new_items_per_day * config.days
    memory = MEMORY_PER_USER * config.total_users + MEMORY_PER_ITEM * items + MEMORY_FIXED
    impressions = config.sessions_per_day * config.list_length * config.days
    return Needs(memory, DISK_PER_IMPRESSION * impressions)


def check_room(config: GeneratorConfig, raw_dir: Path) -> Needs:
    """Fail before generating when this machine lacks the memory or disk ``config`` needs.

    Raises:
        GenerationTooLarge: the estimate exceeds the available memory or the free disk.
    """
    needs = generation_needs(config)
    probe = Path(raw_dir)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_disk = shutil.disk_usage(probe).free
    memory = host.available_memory_bytes()
    short = []
    if memory is not None and needs.memory_bytes > memory:
        short.append(
            f"about {host.gib(needs.memory_bytes)} of memory ({host.gib(memory)} available)"
        )
    if needs.disk_bytes > free_disk:
        free = host.gib(free_disk)
        short.append(f"about {host.gib(needs.disk_bytes)} of disk under {raw_dir} ({free} free)")
    if short:
        raise GenerationTooLarge(
            f"a marketplace of {config.total_users:,} users over {config.days} days needs "
            f"{' and '.join(short)}: choose fewer users or days, or free some room"
        )
    return needs


class GenerationTooLarge(RuntimeError):
    """The machine cannot hold the marketplace asked for (raised before anything is written)."""

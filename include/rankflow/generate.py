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
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
StrArray = npt.NDArray[np.str_]

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
SURFACES = ("home", "search", "similar")
EVENT_TYPES = ("impression", "click", "like", "save", "add_to_bag", "purchase")
EVENT_CODES = ("i", "c", "l", "s", "b", "p")  # last letters of event ids, one per type
BRAND_STEMS = ("Alba", "Bruma", "Corra", "Dune", "Elio", "Fjord", "Gala", "Hollis", "Iris")
BRAND_STEMS += ("Jura", "Kora", "Lumen", "Mira", "Nova", "Orla")
BRAND_SUFFIXES = ("", " Studio", " & Co", " Atelier", " Label", " Club", " House", " Supply")
BRAND_SUFFIXES += (" Collective", " Works")

STREAM_CATALOGUE, STREAM_USERS, STREAM_ITEMS, STREAM_EVENTS = 0, 1, 2, 3


@dataclass(frozen=True)
class TasteWeights:
    """Coefficients of the true attractiveness logit (what a perfect ranker would recover)."""

    intercept: float = -4.3
    category: float = 3.5
    brand: float = 1.5
    style: float = 1.5
    size: float = 0.8
    price: float = 1.5
    quality: float = 0.5
    seller: float = 0.3


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
    slots_per_day: int = 24  # availability is refreshed at the start of every slot
    candidate_factor: int = 3  # the policy draws candidate_factor * list_length candidates
    surface_shares: tuple[float, float, float] = (0.60, 0.25, 0.15)  # home, search, similar
    personal_shares: tuple[float, float, float] = (0.30, 0.80, 0.60)  # from the target category
    position_bias_exponent: float = 0.8  # P(examine | position p) = (1/p)^exponent
    like_rate: float = 0.25  # P(like | click) = like_rate * attractiveness
    save_rate: float = 0.15  # P(save | click) = save_rate * attractiveness
    add_to_bag_rate: float = 0.12  # P(add_to_bag | click) = add_to_bag_rate * attractiveness
    purchase_given_bag: float = 0.4  # P(purchase | add_to_bag)
    activity_sigma: float = 1.4  # log-normal spread of how often users come back
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

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GeneratorConfig:
        """Return a named configuration (``tiny`` for end-to-end tests, ``demo``) with overrides."""
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
                "add_to_bag_rate": 0.35,
                "purchase_given_bag": 0.6,
            },
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


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
    sold_sec: IntArray
    item_clicks: FloatArray
    user_category_clicks: npt.NDArray[np.int32]
    user_last_category: IntArray

    @classmethod
    def empty(cls, world: World) -> SimulationState:
        """Return the state before the first day: nothing sold, nobody clicked."""
        n_items, n_users = len(world.items.listed_sec), len(world.users.signup_sec)
        return cls(
            sold=np.zeros(n_items, dtype=np.bool_),
            sold_sec=np.full(n_items, -1, dtype=np.int64),
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


def stream(seed: int, purpose: int, block: int = 0) -> np.random.Generator:
    """Return the random generator of one purpose and block, independent of all the others."""
    return np.random.default_rng([seed, purpose, block])


def brand_names() -> StrArray:
    """Return the 150 brand names, the plainest (most popular) first."""
    return np.array([stem + suffix for suffix in BRAND_SUFFIXES for stem in BRAND_STEMS])


def dirichlet_rows(rng: np.random.Generator, alpha: FloatArray) -> FloatArray:
    """Draw one Dirichlet vector per row of ``alpha`` (gamma draws normalised; small alpha = sparse)."""
    draws = rng.gamma(alpha)
    totals = draws.sum(axis=1, keepdims=True)
    return np.asarray(draws / np.maximum(totals, 1e-300), dtype=np.float64)


def affinity(pref: FloatArray) -> FloatArray:
    """Scale preference rows so the favourite is 1 (what a user 'really cares about')."""
    return np.asarray(pref / np.maximum(pref.max(axis=1, keepdims=True), 1e-300), np.float64)


def sample_rows(rng: np.random.Generator, probs: FloatArray) -> IntArray:
    """Draw one category index per row of a (rows, k) matrix of non-negative weights."""
    cumulative = probs.cumsum(axis=1)
    u = rng.random(len(probs))[:, None] * cumulative[:, -1:]
    picked = (cumulative <= u).sum(axis=1)
    return np.minimum(picked, probs.shape[1] - 1).astype(np.int64)


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
    category_pref = dirichlet_rows(
        rng, np.tile(0.25 * n_cat * np.asarray(CATEGORY_SHARE), (n, 1))
    )
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
        activity=rng.lognormal(0.0, config.activity_sigma, size=n),
        category_pref=category_pref,
        category_affinity=affinity(category_pref),
        brand_affinity=affinity(brand_pref),
        style_affinity=affinity(style_pref),
    )


def draw_items(
    rng: np.random.Generator, listed_sec: IntArray, catalogue: Catalogue
) -> Items:
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


def block_times(rng: np.random.Generator, block: int, n: int, history_days: int, config: GeneratorConfig, recent: bool) -> IntArray:
    """Draw the sorted creation times of block 0 (before start) or of day ``block - 1``."""
    if block == 0:
        shape = 2.0 if recent else 1.0  # recent: live listings skew towards the last days
        age = rng.beta(1.0, shape, size=n) * history_days * DAY_SECONDS
        return np.sort(-1 - age.astype(np.int64))
    return (block - 1) * DAY_SECONDS + times_of_day(rng, n, config.slots_per_day)


def concat_records(records: list[Any], kind: type[Any]) -> Any:
    """Concatenate dataclasses of equal-length arrays field by field."""
    return kind(**{f.name: np.concatenate([getattr(r, f.name) for r in records]) for f in fields(kind)})

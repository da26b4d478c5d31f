"""The model inputs, declared once and in order: name, entity, kind, dtype, missing policy, source.

The training set, batch scoring, the materialised feature vectors and the ranking service all
take the feature order from :data:`REGISTRY`; its :func:`schema_hash` goes into every model's
lineage and MLflow tags and into every feature version's meta, so a model is only ever served
with the features it was trained on (``docs/feature-store.md``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pyspark.sql import Column

# the windows, in days, of the item and user counts
WINDOWS = (1, 7, 28)
# the item counts per window: each count's event types
COUNTED_TYPES = {
    "impressions": ("impression",),
    "clicks": ("click",),
    "saves": ("like", "save"),
    "bags": ("add_to_bag",),
    "purchases": ("purchase",),
}
# an item's condition as a rank (``item_condition_rank``); another condition is missing
CONDITION_RANK = {"new_with_tags": 4, "very_good": 3, "good": 2, "satisfactory": 1}
# the item attributes a user's affinities are shares of (``aff_<dimension>``)
AFFINITY_DIMENSIONS = ("category", "brand", "style", "size")

Entity = Literal["item", "user", "user_item"]
Kind = Literal["batch", "on_demand", "stream"]
Missing = Literal["nan", "zero"]

# the version of the registry's own layout; bump when a field's meaning changes
REGISTRY_FORMAT = "1"


@dataclass(frozen=True)
class Feature:
    """One model input: what it describes, how it is computed and what absence means.

    ``missing`` is what the model sees when the entity has no row (a new user, a new listing):
    ``nan`` (XGBoost's missing value, learned per split) or ``zero``. ``source`` names the Delta
    table and column of a batch feature, or the function of an on-demand one.
    """

    name: str
    entity: Entity
    kind: Kind
    source: str
    missing: Missing = "nan"
    dtype: str = "float32"
    window_days: int | None = None
    description: str = ""
    lag_seconds: int | None = None  # stream features: events of the last lag seconds left out


def _item(name: str, description: str, window: int | None = None) -> Feature:
    """An item batch feature, read from ``silver/item_features``."""
    return Feature(name, "item", "batch", f"silver/item_features.{name}", "nan", "float32",
                   window, description)  # fmt: skip


def _user(name: str, description: str, window: int | None = None) -> Feature:
    """A user batch feature, read from ``silver/user_features``."""
    return Feature(name, "user", "batch", f"silver/user_features.{name}", "nan", "float32",
                   window, description)  # fmt: skip


def _cross(name: str, missing: Missing, description: str) -> Feature:
    """A user x item feature computed by :func:`rankflow.features.on_demand.cross_features`."""
    return Feature(name, "user_item", "on_demand", "rankflow.features.on_demand.cross_features",
                   missing, "float32", None, description)  # fmt: skip


def _stream(name: str, entity: Entity, missing: Missing, description: str) -> Feature:
    """A stream feature: kept fresh by the stream updater, rebuilt offline by the backfill."""
    return Feature(name, entity, "stream", "rankflow.features.stream", missing, "float32",
                   None, description, STREAM_LAG_SECONDS)  # fmt: skip


# stream features count the events before the request's second minus this (the declared lag)
STREAM_LAG_SECONDS = 1
_COUNTED = {"impressions": "times shown", "clicks": "clicks", "saves": "likes and saves"}

REGISTRY: tuple[Feature, ...] = (
    *[
        _item(f"item_{name}_{w}d", f"{what} of the item over the {w} days ending as of", w)
        for w in WINDOWS
        for name, what in _COUNTED.items()
    ],
    _item("item_bags_28d", "add-to-bag events of the item over 28 days", 28),
    _item("item_purchases_28d", "purchases of the item over 28 days", 28),
    *[
        _item(f"item_ctr_{w}d", f"click-through rate over {w} days, shrunk to the day's rate", w)
        for w in WINDOWS
    ],
    _item("item_age_days", "days between listing and the end of the as-of day"),
    _item("item_price", "asking price"),
    _item("item_price_rel_category", "price over its category's median as of the day"),
    _item("item_condition_rank", "condition, 4 = new with tags .. 1 = satisfactory"),
    _item("seller_rating", "the seller's rating"),
    _user("user_impressions_28d", "items shown to the user over 28 days", 28),
    _user("user_clicks_28d", "the user's clicks over 28 days", 28),
    _user("user_positives_28d", "the user's likes, saves, bags and purchases over 28 days", 28),
    _user("user_active_days_28d", "days with any event over 28 days", 28),
    _user("user_days_since_signup", "days between signup and the end of the as-of day"),
    _user("user_log_price_mean", "mean log price of the items the user interacted with", 28),
    _cross("aff_category", "zero", "the user's share of weighted interactions in the category"),
    _cross("aff_brand", "zero", "the user's share of weighted interactions with the brand"),
    _cross("aff_style", "zero", "the user's share of weighted interactions in the style"),
    _cross("aff_size", "zero", "the user's share of weighted interactions in the size"),
    _cross("size_fit", "nan", "1 if the item's size is the user's or one size, else 0"),
    _cross("price_distance", "nan", "|log price - the user's mean log price|"),
    _cross("seen_before", "zero", "times the item was shown to the user over 28 days"),
    _cross("clicked_before", "zero", "times the user clicked the item over 28 days"),
    _stream("sess_pos_category", "user_item", "zero",
            "the user's positive events in the last 30 minutes on the item's category"),
    _stream("sess_pos_brand", "user_item", "zero",
            "the user's positive events in the last 30 minutes on the item's brand"),
    _stream("sess_seen", "user_item", "zero", "times the item was shown to the user in 30 minutes"),
    _stream("sess_secs_since_pos", "user_item", "nan",
            "seconds since the user's last positive event in 30 minutes (none: missing)"),
    _stream("today_impressions", "item", "zero", "times the item was shown today so far (UTC)"),
    _stream("today_clicks", "item", "zero", "clicks on the item today so far"),
    _stream("today_saves", "item", "zero", "likes and saves of the item today so far"),
)  # fmt: skip


def names(entity: Entity | None = None, kind: Kind | None = None) -> list[str]:
    """The registry's feature names, in order, optionally of one entity and kind."""
    return [
        f.name
        for f in REGISTRY
        if (entity is None or f.entity == entity) and (kind is None or f.kind == kind)
    ]


ITEM_FEATURES = names("item", "batch")
USER_FEATURES = names("user", "batch")
CROSS_FEATURES = names("user_item", "on_demand")
STREAM_FEATURES = names(kind="stream")
# what the nightly models are trained on; stream features join when training asks for them
MODEL_FEATURES = [f.name for f in REGISTRY if f.kind != "stream"]


def schema_document() -> dict[str, Any]:
    """The registry as a JSON-ready document (what the schema hash is taken of)."""
    return {"format": REGISTRY_FORMAT, "features": [asdict(f) for f in REGISTRY]}


def schema_hash() -> str:
    """SHA-256 (16 hex) of the registry: names, order, kinds, dtypes, missing policies, sources.

    Descriptions are left out, so rewording one never makes a model unservable.
    """
    document = schema_document()
    for feature in document["features"]:
        feature.pop("description")
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def feature_vector() -> list[Column]:
    """Return the model input columns, in order, as doubles (null stays null -> NaN)."""
    from pyspark.sql import functions as F

    return [F.col(name).cast("double").alias(name) for name in MODEL_FEATURES]


def popularity(counts: Mapping[str, Any]) -> Any:
    """An item's popularity: its clicks plus twice its saves over 7 days.

    One formula for every caller: ``counts`` maps the two count names to Spark columns (the
    features step) or to pandas/numpy columns (the offline baseline), and the result is of the
    same kind.
    """
    return counts["item_clicks_7d"] + 2.0 * counts["item_saves_7d"]


def by_popularity() -> list[Column]:
    """The order of "most popular first": popularity, then the newest listing, then item id."""
    from pyspark.sql import functions as F

    return [F.col("popularity").desc(), F.col("listed_ts").desc(), F.col("item_id")]

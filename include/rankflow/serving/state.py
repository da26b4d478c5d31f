"""What the ranking service serves: the champion model and the current feature version, as a pair.

The pair is swapped as one reference, so a request sees one model with the features it was
trained on. A refresher follows the feature version pointer and the ``champion`` alias (through
the announcement promotions and rollbacks write to Redis); a new pair whose model was trained
on another feature schema is refused (the old pair stays), logged and counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rankflow.features.registry import (
    AFFINITY_DIMENSIONS,
    CROSS_FEATURES,
    ITEM_FEATURES,
    STREAM_FEATURES,
    USER_FEATURES,
)
from rankflow.model.fit import POSITION_FEATURE
from rankflow.serving.snapshot import ItemSnapshot, load_snapshot

if TYPE_CHECKING:
    import redis
    import xgboost as xgb

    from rankflow.config import Settings

log = logging.getLogger("rankflow.serving")


@dataclass(frozen=True)
class FeatureVersion:
    """One online feature version: its id, schema and the in-process item snapshot."""

    version: str
    schema_hash: str
    snapshot: ItemSnapshot
    one_size: int


@dataclass(frozen=True)
class MatrixPlan:
    """Where each group of a model's inputs goes in its matrix, as index arrays (one copy each)."""

    item_columns: np.ndarray
    item_sources: np.ndarray  # positions in the snapshot's item vectors
    user_columns: np.ndarray
    user_sources: np.ndarray  # positions in the user vector
    cross_columns: list[int]
    cross_names: list[str]
    position_columns: np.ndarray
    stream_columns: list[int]
    stream_names: list[str]

    @classmethod
    def of(cls, layout: list[tuple[str, int]]) -> MatrixPlan:
        """The plan of a model's input layout."""

        def columns(source: str) -> np.ndarray:
            return np.array([j for j, (s, _) in enumerate(layout) if s == source], np.intp)

        def sources(source: str) -> np.ndarray:
            return np.array([i for s, i in layout if s == source], np.intp)

        cross = [(j, CROSS_FEATURES[i]) for j, (s, i) in enumerate(layout) if s == "cross"]
        stream = [(j, STREAM_FEATURES[i]) for j, (s, i) in enumerate(layout) if s == "stream"]
        return cls(
            columns("item"),
            sources("item"),
            columns("user"),
            sources("user"),
            [j for j, _ in cross],
            [name for _, name in cross],
            columns("position"),
            [j for j, _ in stream],
            [name for _, name in stream],
        )


@dataclass(frozen=True)
class ServedModel:
    """A booster with its registry version and the feature schema it was trained on."""

    version: str
    schema_hash: str | None
    booster: xgb.Booster
    layout: list[tuple[str, int]]  # per model input: (source, index): item, user, cross, position
    plan: MatrixPlan = field(init=False)  # how model_matrix fills the inputs, built once

    def __post_init__(self) -> None:
        """Build the matrix plan of the layout (frozen: set through object.__setattr__)."""
        object.__setattr__(self, "plan", MatrixPlan.of(self.layout))

    @property
    def reads_stream(self) -> bool:
        """Whether the model takes stream features (read from the fresh state per request)."""
        return bool(self.plan.stream_columns)


@dataclass(frozen=True)
class Served:
    """The pair a request is answered with."""

    model: ServedModel
    features: FeatureVersion


def input_layout(names: list[str]) -> list[tuple[str, int]]:
    """Where each of a model's inputs comes from, in the model's order."""
    sources = {
        **{n: ("item", i) for i, n in enumerate(ITEM_FEATURES)},
        **{n: ("user", i) for i, n in enumerate(USER_FEATURES)},
        **{n: ("cross", i) for i, n in enumerate(CROSS_FEATURES)},
        **{n: ("stream", i) for i, n in enumerate(STREAM_FEATURES)},
        POSITION_FEATURE: ("position", 0),
    }
    unknown = [n for n in names if n not in sources]
    if unknown:
        raise ValueError(f"the model reads features the registry does not declare: {unknown}")
    return [sources[n] for n in names]


def load_feature_version(client: redis.Redis, prefix: str, version: str) -> FeatureVersion:
    """Read a feature version's schema from Redis and load its item snapshot."""
    from rankflow.store.commands import _text
    from rankflow.store.keys import FEATURES, schema_key
    from rankflow.store.vectors import FEATURE_ENCODING
    from rankflow.store.versions import version_meta

    meta = version_meta(client, prefix, FEATURES, version)
    schema = json.loads(_text(client.get(schema_key(prefix, version))) or "{}")
    if not meta or not schema:
        raise LookupError(f"feature version {version} has no meta or schema in Redis")
    if schema.get("encoding") != FEATURE_ENCODING:
        raise ValueError(
            f"feature version {version} is encoded {schema.get('encoding')!r}; this service "
            f"decodes {FEATURE_ENCODING!r} (materialise the features again with this release)"
        )
    dims = schema["groups"]["p"]["affinity_dimensions"]
    if list(dims) != list(AFFINITY_DIMENSIONS):
        raise ValueError(f"feature version {version} has affinity dimensions {dims}")
    snapshot = load_snapshot(meta["snapshot"])
    if snapshot.version != version:
        raise ValueError(f"snapshot {meta['snapshot']} belongs to {snapshot.version}")
    return FeatureVersion(version, schema["schema_hash"], snapshot, snapshot.code("one_size"))


def load_served_model(settings: Settings, version: str, schema_hash: str | None) -> ServedModel:
    """Load a registered model version for serving (one thread: one worker per core)."""
    from rankflow.model.fit import booster_from_bytes
    from rankflow.model.registry import load_model

    raw, loaded = load_model(settings, version)
    booster = booster_from_bytes(raw, nthread=1)
    return ServedModel(
        loaded, schema_hash, booster, input_layout(list(booster.feature_names or []))
    )


@dataclass
class ServingState:
    """The served pair, refreshed from the feature pointer and the champion announcement.

    Each tick reads both Redis pointers in one round trip. MLflow (the champion alias, the
    source of truth) is asked only when the announcement changed, when nothing is known yet,
    or every ``registry_poll_seconds`` (an alias moved outside rankflow): an MLflow call holds
    the GIL for milliseconds, so it must not run on every tick next to live requests.
    """

    settings: Settings
    client: redis.Redis
    registry_poll_seconds: float = 60.0
    served: Served | None = None
    refused: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    last_refused: tuple[str, str] | None = None  # the (model, features) pair refused last
    on_refusal: Callable[[dict[str, str]], None] | None = None  # e.g. append to the refusals log
    # called with a new feature version's snapshot just before it is served (live listings)
    on_features: Callable[[ItemSnapshot], None] | None = None
    champion: tuple[str, str | None] | None = None  # MLflow's last answer: version, schema hash
    announcement: str | None = None  # the announcement that answer followed
    registry_read_at: float = float("-inf")  # monotonic time of that answer

    def champion_now(self, announcement: str | None) -> tuple[str, str | None]:
        """The champion's version and feature schema hash, from MLflow only when needed."""
        import time

        from rankflow.model.registry import served_model

        now = time.monotonic()
        if (
            self.champion is not None
            and announcement == self.announcement
            and now - self.registry_read_at < self.registry_poll_seconds
        ):
            return self.champion
        self.champion = served_model(self.settings)
        self.announcement, self.registry_read_at = announcement, now
        return self.champion

    def refresh(self) -> bool:
        """Read both pointers once; swap to a consistent new pair. Returns whether it swapped."""
        from rankflow.store.versions import serving_pointers

        prefix = self.settings.redis.key_prefix
        feature_version, announcement = serving_pointers(self.client, prefix)
        if feature_version is None:
            raise LookupError("no feature version is published: run materialise_features")
        model_version, model_hash = self.champion_now(announcement)
        current = self.served
        if current and (current.model.version, current.features.version) == (
            model_version,
            feature_version,
        ):
            return False
        features = (
            current.features
            if current and current.features.version == feature_version
            else load_feature_version(self.client, prefix, feature_version)
        )
        if model_hash != features.schema_hash:
            self.refuse(model_version, model_hash, features)
            return False
        model = (
            current.model
            if current and current.model.version == model_version
            else load_served_model(self.settings, model_version, model_hash)
        )
        if self.on_features is not None and (current is None or current.features is not features):
            self.on_features(features.snapshot)
        self.served = Served(model, features)
        freeze_heap()
        log.info("serving model %s with feature version %s", model.version, features.version)
        return True

    def refuse(self, model_version: str, model_hash: str | None, features: FeatureVersion) -> None:
        """Keep the old pair: log, count and report a model of another feature schema, once."""
        if self.last_refused == (model_version, features.version):
            return  # counted and logged once per refused pair
        self.last_refused = (model_version, features.version)
        reason = "model_schema_mismatch"
        self.refused[reason] = self.refused.get(reason, 0) + 1
        current = self.served
        log.warning(
            "refusing model %s (feature schema %s) with feature version %s (schema %s); "
            "still serving %s",
            model_version,
            model_hash,
            features.version,
            features.schema_hash,
            current.model.version if current else "nothing",
        )
        if self.on_refusal is not None:
            self.on_refusal(
                {
                    "reason": reason,
                    "model_version": model_version,
                    "model_schema_hash": str(model_hash),
                    "feature_version": features.version,
                    "feature_schema_hash": features.schema_hash,
                    "serving": current.model.version if current else "",
                }
            )

    def refresh_quietly(self) -> None:
        """Refresh, logging a failure instead of raising (the old pair keeps serving)."""
        try:
            self.refresh()
            self.last_error = ""
        except Exception as error:  # any failure: keep serving what we have
            if str(error) != self.last_error:
                log.warning("refresh failed, still serving what was loaded: %s", error)
            self.last_error = str(error)


def freeze_heap() -> None:
    """Collect once, then keep the loaded pair's objects out of later full collections.

    A full collection over the ~365k objects a served pair holds takes 0.2 s, stalling every
    request in flight (bench-realtime measured 90-180 ms p99 spikes); frozen objects are still
    freed by reference counting when the next swap drops them.
    """
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


def model_matrix(
    served: Served,
    items: np.ndarray,
    user_vector: np.ndarray,
    cross: dict[str, np.ndarray],
    stream: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The float32 matrix the model predicts from, in its own input order.

    ``items``: the candidates' item vectors. Stream features the model takes but the request
    has none of (``stream`` None) are NaN.
    """
    plan = served.model.plan
    matrix = np.empty((len(items), len(served.model.layout)), dtype=np.float32)
    matrix[:, plan.item_columns] = items[:, plan.item_sources]
    matrix[:, plan.user_columns] = user_vector[plan.user_sources]
    for column, name in zip(plan.cross_columns, plan.cross_names, strict=True):
        matrix[:, column] = cross[name]
    for column, name in zip(plan.stream_columns, plan.stream_names, strict=True):
        matrix[:, column] = stream[name] if stream is not None else np.nan
    matrix[:, plan.position_columns] = 1.0
    return matrix


def describe(served: Served | None) -> dict[str, Any]:
    """What is served, for /readyz."""
    if served is None:
        return {"ready": False}
    return {
        "ready": True,
        "model_version": served.model.version,
        "feature_version": served.features.version,
        "schema_hash": served.features.schema_hash,
        "items": len(served.features.snapshot.item_ids),
    }

"""The feature registry: one declaration per model input, and a hash that notices any change."""

from __future__ import annotations

import dataclasses

import pytest

from rankflow.features import registry
from rankflow.features.registry import (
    MODEL_FEATURES,
    REGISTRY,
    STREAM_FEATURES,
    names,
    schema_hash,
)
from rankflow.features.stream import SESSION_FEATURES, TODAY_FEATURES


def test_every_input_is_declared_once_with_a_known_entity_kind_and_policy() -> None:
    assert len(set(names())) == len(names()) == len(REGISTRY)
    assert names() == MODEL_FEATURES + STREAM_FEATURES
    assert {f.entity for f in REGISTRY} == {"item", "user", "user_item"}
    assert {f.missing for f in REGISTRY} <= {"nan", "zero"}
    assert all(f.dtype == "float32" and f.source and f.description for f in REGISTRY)
    # the order models were trained with: item, then user, then user x item features
    entities = [f.entity for f in REGISTRY if f.kind != "stream"]
    assert entities == sorted(entities, key=["item", "user", "user_item"].index)


def test_stream_features_declare_their_lag_and_come_last_in_the_functions_order() -> None:
    stream = [f for f in REGISTRY if f.kind == "stream"]
    assert [f.name for f in stream] == [*SESSION_FEATURES, *TODAY_FEATURES] == STREAM_FEATURES
    assert REGISTRY[-len(stream) :] == tuple(stream)
    assert {f.lag_seconds for f in stream} == {1}
    assert all(f.lag_seconds is None for f in REGISTRY if f.kind != "stream")


def test_the_schema_hash_changes_with_order_policy_or_source_but_not_descriptions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = schema_hash()
    assert len(before) == 16
    reworded = tuple(dataclasses.replace(f, description="other words") for f in REGISTRY)
    monkeypatch.setattr(registry, "REGISTRY", reworded)
    assert schema_hash() == before
    for changed in (
        (REGISTRY[1], REGISTRY[0], *REGISTRY[2:]),
        (dataclasses.replace(REGISTRY[0], missing="zero"), *REGISTRY[1:]),
        (dataclasses.replace(REGISTRY[0], source="elsewhere"), *REGISTRY[1:]),
        REGISTRY[:-1],
    ):
        monkeypatch.setattr(registry, "REGISTRY", changed)
        assert schema_hash() != before

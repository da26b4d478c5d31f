"""The served (model, feature version) pair: swapped together, never with a mismatched schema."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rankflow.serving import state as state_module
from rankflow.serving.state import FeatureVersion, ServedModel, ServingState


def install(monkeypatch: pytest.MonkeyPatch, pointers: dict[str, Any]) -> None:
    """Point the refresher's lookups at ``pointers`` (model, its hash, feature version, hash)."""
    import rankflow.model.registry as registry
    import rankflow.store.versions as versions

    def served_model(settings: Any) -> tuple[str, str]:
        pointers["mlflow_reads"] = pointers.get("mlflow_reads", 0) + 1
        return pointers["model"], pointers["mhash"]

    monkeypatch.setattr(registry, "served_model", served_model)
    monkeypatch.setattr(
        versions, "serving_pointers", lambda c, p: (pointers["fv"], pointers.get("announced"))
    )
    monkeypatch.setattr(
        state_module,
        "load_feature_version",
        lambda c, p, v: FeatureVersion(v, pointers["fhash"], None, -1),  # type: ignore[arg-type]
    )
    monkeypatch.setattr(
        state_module,
        "load_served_model",
        lambda s, v, h: ServedModel(v, h, None, []),  # type: ignore[arg-type]
    )


class _Settings:
    class redis:
        key_prefix = "rf"


def test_a_model_of_another_schema_is_refused_once_and_the_old_pair_keeps_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pointers = {"model": "1", "mhash": "aaa", "fv": "f1", "fhash": "aaa"}
    install(monkeypatch, pointers)
    serving = ServingState(_Settings(), client=None)  # type: ignore[arg-type]
    assert serving.refresh() is True
    assert (serving.served.model.version, serving.served.features.version) == ("1", "f1")
    pointers.update(model="2", mhash="bbb", announced="2")  # a champion of another registry
    assert serving.refresh() is False
    assert serving.refresh() is False  # polled again: still refused, counted once
    assert serving.served.model.version == "1"
    assert serving.refused == {"model_schema_mismatch": 1}
    pointers.update(fv="f2", fhash="bbb")  # its features arrive: the pair swaps together
    assert serving.refresh() is True
    assert (serving.served.model.version, serving.served.features.version) == ("2", "f2")


def test_nothing_is_served_until_a_feature_version_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, {"model": "1", "mhash": "aaa", "fv": None, "fhash": "aaa"})
    serving = ServingState(_Settings(), client=None)  # type: ignore[arg-type]
    serving.refresh_quietly()
    assert serving.served is None
    assert "no feature version" in serving.last_error


def test_mlflow_is_read_when_a_move_is_announced_or_the_poll_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pointers = {"model": "1", "mhash": "aaa", "fv": "f1", "fhash": "aaa", "announced": "a1"}
    install(monkeypatch, pointers)
    serving = ServingState(_Settings(), client=None, registry_poll_seconds=3600)  # type: ignore[arg-type]
    assert serving.refresh() is True
    pointers.update(model="2")  # the alias moved in MLflow, not announced (yet)
    for _ in range(5):
        assert serving.refresh() is False
    assert pointers["mlflow_reads"] == 1  # ticks cost one Redis round trip, no MLflow call
    pointers.update(announced="a2")  # a promotion announces it
    assert serving.refresh() is True
    assert serving.served.model.version == "2"
    assert pointers["mlflow_reads"] == 2
    pointers.update(model="3")  # moved outside rankflow: found when the poll is due
    serving.registry_poll_seconds = 0
    assert serving.refresh() is True
    assert serving.served.model.version == "3"


def test_a_refused_champion_is_remembered_when_its_features_arrive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pointers = {"model": "1", "mhash": "aaa", "fv": "f1", "fhash": "aaa", "announced": "a1"}
    install(monkeypatch, pointers)
    serving = ServingState(_Settings(), client=None, registry_poll_seconds=3600)  # type: ignore[arg-type]
    assert serving.refresh() is True
    pointers.update(model="2", mhash="bbb", announced="a2")
    assert serving.refresh() is False  # refused: model 1 keeps serving
    pointers.update(fv="f2", fhash="bbb")  # no new announcement, only the features
    assert serving.refresh() is True
    assert (serving.served.model.version, serving.served.features.version) == ("2", "f2")
    assert pointers["mlflow_reads"] == 2


def test_a_new_feature_version_is_announced_before_it_is_served_never_when_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Live listings are ranked against a version before its first answer (on_features)."""
    pointers = {"model": "1", "mhash": "aaa", "fv": "f1", "fhash": "aaa", "announced": "a1"}
    install(monkeypatch, pointers)
    serving = ServingState(_Settings(), client=None, registry_poll_seconds=0)  # type: ignore[arg-type]
    seen: list[tuple[str, str | None]] = []

    def on_features(snapshot: object) -> None:
        served = serving.served
        seen.append((pointers["fv"], served.features.version if served else None))

    serving.on_features = on_features  # type: ignore[assignment]
    assert serving.refresh() is True
    assert seen == [("f1", None)]  # before anything was served
    pointers.update(model="2", announced="a2")  # a new model, the same features: no call
    assert serving.refresh() is True
    assert seen == [("f1", None)]
    pointers.update(fv="f2", fhash="bbb")  # features of another schema: refused, no call
    assert serving.refresh() is False
    assert seen == [("f1", None)]
    pointers.update(fhash="aaa", fv="f3")
    assert serving.refresh() is True
    assert seen == [("f1", None), ("f3", "f1")]  # called while f1 was still served


class _Store:
    """A feature version's meta and schema as Redis returns them (bytes)."""

    def __init__(self, encoding: str) -> None:
        schema = {"encoding": encoding, "schema_hash": "h", "groups": {"p": {}}}
        self.schema = json.dumps(schema).encode()

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return {b"snapshot": b"/nowhere/items.arrow", b"state": b"published"}

    def get(self, key: str) -> bytes:
        return self.schema


def test_a_feature_version_of_another_encoding_is_refused_before_anything_is_read() -> None:
    from rankflow.serving.state import load_feature_version

    with pytest.raises(ValueError, match="is encoded 'f32le-v1'; this service decodes"):
        load_feature_version(_Store("f32le-v1"), "rf", "20261204-abc")  # type: ignore[arg-type]

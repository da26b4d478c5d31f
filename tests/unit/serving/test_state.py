"""The served (model, feature version) pair: swapped together, never with a mismatched schema."""

from __future__ import annotations

from typing import Any

import pytest

from rankflow.serving import state as state_module
from rankflow.serving.state import FeatureVersion, ServedModel, ServingState


def install(monkeypatch: pytest.MonkeyPatch, pointers: dict[str, Any]) -> None:
    """Point the refresher's lookups at ``pointers`` (model, its hash, feature version, hash)."""
    import rankflow.model.registry as registry
    import rankflow.store.versions as versions

    monkeypatch.setattr(registry, "served_model", lambda s: (pointers["model"], pointers["mhash"]))
    monkeypatch.setattr(versions, "version_pointers", lambda c, p, n: (pointers["fv"], None))
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
    pointers.update(model="2", mhash="bbb")  # a champion trained on another registry
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

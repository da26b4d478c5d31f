"""Debiasing variants: the configs and inputs each one trains and predicts with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankflow.features.registry import MODEL_FEATURES
from rankflow.model.fit import (
    POSITION_FEATURE,
    fit_variant,
    model_features,
    model_inputs,
    variant_params,
)

CONFIG = {
    "seed": 1,
    "num_boost_round": 20,
    "early_stopping_rounds": 5,
    "params": {"objective": "rank:ndcg", "eval_metric": "ndcg@10", "nthread": 1},
}


def rows(seed: int, groups: int = 60, size: int = 10) -> pd.DataFrame:
    """Logged lists: clicks come from the first feature and from being shown near the top."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        rng.normal(size=(groups * size, len(MODEL_FEATURES))), columns=MODEL_FEATURES
    )
    frame["qid"] = np.repeat(np.arange(groups), size)
    frame["position"] = np.tile(np.arange(1, size + 1), groups)
    examined = rng.random(len(frame)) < 1.0 / frame["position"]
    attractive = rng.random(len(frame)) < 1 / (1 + np.exp(-2 * frame[MODEL_FEATURES[0]]))
    frame["label"] = (examined & attractive).astype(float)
    return frame


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"training\.debiasing must be one of"):
        model_features("ips")


def test_variant_params_switch_xgboosts_unbiased_lambdamart_only_for_that_variant() -> None:
    assert variant_params(CONFIG, "lambdarank_unbiased")["params"]["lambdarank_unbiased"] is True
    plain = variant_params(
        {**CONFIG, "params": {**CONFIG["params"], "lambdarank_unbiased": True}}, "none"
    )
    assert "lambdarank_unbiased" not in plain["params"]


@pytest.mark.parametrize("variant", ["none", "lambdarank_unbiased", "position_feature"])
def test_each_variant_trains_and_predicts_from_the_same_candidate_rows(variant: str) -> None:
    fitted = fit_variant(rows(1), rows(2), CONFIG, variant)
    names = fitted.booster.feature_names
    assert names == model_features(variant)
    candidates = rows(3).drop(columns=["position", "label"])  # scoring knows no position
    scores = fitted.booster.inplace_predict(model_inputs(fitted.booster, candidates))
    assert scores.shape == (len(candidates),)
    assert np.isfinite(scores).all()


def test_the_position_feature_is_fixed_at_prediction_time() -> None:
    fitted = fit_variant(rows(1), rows(2), CONFIG, "position_feature")
    assert POSITION_FEATURE in fitted.booster.feature_names
    logged = rows(3)
    at_top = model_inputs(fitted.booster, logged)
    assert (at_top[:, -1] == 1.0).all()
    at_five = model_inputs(fitted.booster, logged, position=5.0)
    assert (at_five[:, -1] == 5.0).all()

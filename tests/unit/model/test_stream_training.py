"""A model fitted on the stream features too: its inputs, and the groups fitted without them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankflow.features.registry import MODEL_FEATURES, STREAM_FEATURES
from rankflow.features.stream import quiet_values
from rankflow.model.fit import (
    fit_variant,
    frame_matrix,
    model_features,
    model_inputs,
    stale_groups,
    stale_stream_share,
)

CONFIG = {
    "seed": 1,
    "num_boost_round": 30,
    "early_stopping_rounds": 10,
    "params": {"objective": "rank:ndcg", "eval_metric": "ndcg@10", "nthread": 1},
    "stream_features": True,
    "stream_stale_share": 0.2,
}


def rows(seed: int, groups: int = 200, size: int = 10) -> pd.DataFrame:
    """Lists whose clicks follow a batch feature and, more strongly, a session feature."""
    rng = np.random.default_rng(seed)
    names = [*MODEL_FEATURES, *STREAM_FEATURES]
    frame = pd.DataFrame(rng.normal(size=(groups * size, len(names))), columns=names)
    frame["sess_pos_category"] = rng.poisson(0.5, len(frame)).astype(float)
    frame["qid"] = np.repeat([f"s{g}" for g in range(groups)], size)
    frame["position"] = np.tile(np.arange(1, size + 1), groups)
    logit = frame[MODEL_FEATURES[0]] + 2.0 * frame["sess_pos_category"] - 1.0
    frame["label"] = (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(float)
    return frame


def test_the_stream_features_follow_the_batch_ones_in_the_model() -> None:
    assert model_features("none", stream=True) == [*MODEL_FEATURES, *STREAM_FEATURES]
    assert model_features("position_feature", stream=True)[-1] == "shown_position"
    assert model_features("none") == list(MODEL_FEATURES)


def test_the_stale_share_applies_only_when_stream_features_are_fitted() -> None:
    assert stale_stream_share(CONFIG) == 0.2
    assert stale_stream_share({**CONFIG, "stream_features": False}) == 0.0
    assert stale_stream_share({}) == 0.0  # a lineage from before the setting
    with pytest.raises(ValueError, match="stream_stale_share"):
        stale_stream_share({**CONFIG, "stream_stale_share": 1.0})


def test_a_fixed_sample_of_whole_groups_is_fitted_with_its_stream_features_missing() -> None:
    frame = rows(1)
    matrix = frame_matrix(frame, "none", stream=True, stale_share=0.2)
    values = matrix.get_data().toarray()  # missing cells are absent from the CSR: 0 here
    names = model_features("none", stream=True)
    stream_at = [names.index(n) for n in STREAM_FEATURES]
    stale = stale_groups(frame["qid"], 0.2)
    per_group = pd.Series(stale).groupby(frame["qid"].to_numpy()).agg(["min", "max"])
    assert (per_group["min"] == per_group["max"]).all()  # whole groups
    assert 0.1 < per_group["min"].mean() < 0.3
    assert np.array_equal(stale, stale_groups(frame["qid"].copy(), 0.2))  # the same every run
    dense = frame_matrix(frame, "none", stream=True).get_data().toarray()
    assert (values[stale][:, stream_at] == 0).all()  # blanked (missing) in the stale groups
    assert (dense[stale][:, stream_at] != 0).any()  # ... which held values before
    fresh = ~stale
    assert np.array_equal(values[fresh], dense[fresh])  # the other groups untouched
    batch_at = [names.index(n) for n in MODEL_FEATURES]
    assert np.array_equal(values[:, batch_at], dense[:, batch_at])


def test_a_stream_model_uses_the_session_and_ranks_by_the_rest_when_it_is_missing() -> None:
    fitted = fit_variant(rows(1), rows(2), CONFIG, "none")
    assert fitted.booster.feature_names == model_features("none", stream=True)
    test = rows(3)
    scores = fitted.booster.inplace_predict(model_inputs(fitted.booster, test))
    hot = test["sess_pos_category"] > 0
    assert scores[hot].mean() > scores[~hot].mean()  # the session signal is used
    missing = test.assign(**{n: np.nan for n in STREAM_FEATURES})
    blind = fitted.booster.inplace_predict(model_inputs(fitted.booster, missing))
    assert np.isfinite(blind).all()
    assert np.corrcoef(blind, test[MODEL_FEATURES[0]])[0, 1] > 0.3  # ranked by the rest
    quiet = test.assign(**quiet_values(len(test)))
    assert np.isfinite(fitted.booster.inplace_predict(model_inputs(fitted.booster, quiet))).all()


def test_a_minimum_above_the_rounds_grown_is_held_to_the_rounds() -> None:
    few = {**CONFIG, "num_boost_round": 5, "early_stopping_rounds": 2, "min_boost_rounds": 20}
    fitted = fit_variant(rows(1, groups=40), rows(2, groups=40), few, "none")
    assert fitted.best_iteration == 4  # judged at the last round grown, not never
    judged = {**CONFIG, "num_boost_round": 40, "min_boost_rounds": 25}
    assert fit_variant(rows(1), rows(2), judged, "none").best_iteration >= 24

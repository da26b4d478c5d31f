"""The skew check's per-value verdicts: equal, mismatch, missing, extra, and the SMAPE term."""

from __future__ import annotations

import numpy as np

from rankflow.monitoring.skew import EQUAL, EXTRA, MISMATCH, MISSING, compare_values


def test_values_are_compared_nan_aware() -> None:
    nan = np.nan
    online = np.array([[1.0, nan, 2.0, nan, 0.0, 3.0]], np.float32)
    offline = np.array([[1.0, nan, nan, 2.0, 0.0, 1.0]], np.float32)
    status, smape = compare_values(online, offline)
    assert status.tolist() == [[EQUAL, EQUAL, EXTRA, MISSING, EQUAL, MISMATCH]]
    assert smape[0, 0] == 0.0
    assert np.isnan(smape[0, 1:4]).all()
    assert smape[0, 4] == 0.0  # both zero: no error
    assert smape[0, 5] == np.float32(1.0)  # |3 - 1| / ((3 + 1) / 2)


def test_a_one_ulp_difference_is_a_mismatch() -> None:
    one = np.float32(1.0)
    status, _ = compare_values(np.array([[one]]), np.array([[np.nextafter(one, np.float32(2))]]))
    assert status.tolist() == [[MISMATCH]]


def test_fixed_thresholds_are_never_calibrated_away() -> None:
    from rankflow.monitoring.rules import Figure, judge

    config = {
        "thresholds": {"skew_mismatch_rate": {"max": 0, "fixed": True}, "drifty": {"max": 0}},
        "calibration": {"min_clean_days": 2, "mad_multiplier": 5.0, "relative_floor": 0.002},
    }
    history = [
        {"ds": d, "metric": m, "subject": "", "value": 0.3, "breached": False}
        for d in ("2026-12-01", "2026-12-02", "2026-12-03")
        for m in ("skew_mismatch_rate", "drifty")
    ]
    rows = judge([Figure("skew", "skew_mismatch_rate", 0.3), Figure("x", "drifty", 0.3)],
                 config, history)  # fmt: skip
    fixed, calibrated = rows
    assert fixed["threshold_source"] == "fixed"
    assert fixed["breached"] is True
    assert calibrated["threshold_source"].startswith("calibrated")
    assert calibrated["breached"] is False


def test_a_stream_models_replay_compares_its_stream_features_by_name() -> None:
    """The status columns follow COMPARED: a served stream value that differs is named."""
    import pandas as pd
    import xgboost as xgb

    from rankflow.features.registry import MODEL_FEATURES, STREAM_FEATURES
    from rankflow.monitoring.skew import COMPARED, UNUSED, replay_frame

    names = [*MODEL_FEATURES, *STREAM_FEATURES]
    rng = np.random.default_rng(5)
    train = xgb.DMatrix(rng.normal(size=(200, len(names))), label=rng.integers(0, 3, 200),
                        feature_names=names)  # fmt: skip
    train.set_group([20] * 10)
    booster = xgb.train({"objective": "rank:ndcg", "max_depth": 3, "nthread": 1}, train, 5)
    rebuilt = pd.DataFrame(rng.normal(size=(3, len(names))).astype(np.float32), columns=names)
    online = rebuilt[names].to_numpy(np.float32).copy()
    online[1, names.index("today_clicks")] += 1.0  # the service saw one click more
    online[2, names.index("sess_secs_since_pos")] = np.nan  # ... and no positive at all
    part = rebuilt.assign(
        request_id="r",
        item_id=[1, 2, 3],
        online=[row.tobytes() for row in online],
        online_score=booster.inplace_predict(online).astype(np.float32),
    )
    out = replay_frame(booster, part)
    status = np.stack(out["status"].to_list())
    assert status.shape == (3, len(COMPARED))
    at = {name: COMPARED.index(name) for name in ("today_clicks", "sess_secs_since_pos")}
    assert status[1, at["today_clicks"]] == MISMATCH
    assert status[2, at["sess_secs_since_pos"]] == MISSING
    assert (status[0] == EQUAL).all()
    assert UNUSED not in status  # the model reads every compared feature
    assert (np.count_nonzero(status != EQUAL, axis=1) == [0, 1, 1]).all()

"""Position-bias estimation (PBM by EM) and inverse-propensity-weighted NDCG (pure: no services)."""

from __future__ import annotations

import numpy as np
import pytest

from rankflow.evaluation import metrics as m
from rankflow.evaluation.propensity import as_record, estimate_examination, inverse_propensity


def simulated_clicks(
    seed: int, exponent: float, sessions: int = 6000, length: int = 10, items: int = 400
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lists of items ordered by a noisy popularity policy; clicks = examined and attractive."""
    rng = np.random.default_rng(seed)
    attract = rng.beta(1.5, 6.0, size=items)
    popularity = attract + rng.normal(0, 0.02, size=items)  # the policy favours good items
    shown = np.stack(
        [np.argsort(-(popularity + rng.gumbel(0, 0.05, items)))[:length] for _ in range(sessions)]
    )
    position = np.broadcast_to(np.arange(1, length + 1), shown.shape)
    examined = rng.random(shown.shape) < position ** -float(exponent)
    clicked = examined & (rng.random(shown.shape) < attract[shown])
    return position.ravel(), shown.ravel(), clicked.ravel(), attract


@pytest.mark.parametrize("exponent", [0.5, 1.0])
def test_em_recovers_the_examination_curve_of_simulated_clicks(exponent: float) -> None:
    position, item, clicked, _ = simulated_clicks(3, exponent)

    curve = estimate_examination(position, item, clicked)

    true = np.arange(1, 11) ** -exponent
    error = np.abs(curve[1:] - true).max()
    naive = np.bincount(position, weights=clicked)[1:] / np.bincount(position)[1:]
    naive_error = np.abs(naive / naive[0] - true).max()  # CTR by position mixes in attraction
    assert curve[1] == 1.0
    assert error < 0.04
    assert naive_error > 2 * error


def test_rarely_shown_items_are_left_out_and_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no item was shown 20 times"):
        estimate_examination([1, 2], [7, 8], [True, False])
    with pytest.raises(ValueError, match="positions start at 1"):
        estimate_examination([0, 1], [7, 7], [True, False], min_impressions=1)
    with pytest.raises(ValueError, match="same length"):
        estimate_examination([1, 2], [7], [True, False])


def test_inverse_propensity_is_capped_and_positions_past_the_curve_use_its_end() -> None:
    curve = np.array([1.0, 1.0, 0.5, 0.01])
    weights = inverse_propensity([1, 2, 3, 9], curve, clip=20.0)
    assert weights.tolist() == [1.0, 2.0, 20.0, 20.0]
    assert as_record(curve) == {"1": 1.0, "2": 0.5, "3": 0.01}


def test_ipw_ndcg_pools_weighted_dcg_over_groups() -> None:
    group = np.array([0, 0, 0, 1, 1])
    label = np.array([1.0, 0.0, 1.0, 0.0, 2.0])
    score = np.array([0.9, 0.5, 0.1, 0.3, 0.2])
    weight = np.array([1.0, 1.0, 4.0, 1.0, 1.0])

    result = m.evaluate_ranking(group, label, score, cutoffs=(10,), propensity_weight=weight)
    single = m.evaluate_ranking(
        [0, 0], [0.0, 1.0], [0.9, 0.1], cutoffs=(1,), propensity_weight=[1.0, 5.0]
    )

    # group 0 gains 1 (rank 1) and 1 x 4 (rank 3); group 1 gain 3 at rank 2
    dcg = (1.0 + 4.0 / np.log2(4.0)) + 3.0 / np.log2(3.0)
    ideal = (4.0 + 1.0 / np.log2(3.0)) + 3.0
    assert result["ipw_ndcg@10"] == pytest.approx(dcg / ideal)
    assert result["ndcg@10"] == m.ndcg_at_k(group, label, score, 10)
    assert single["ipw_ndcg@1"] == 0.0  # the one click is ranked below the cut-off


def test_ipw_ndcg_does_not_cancel_the_weight_of_a_lone_click() -> None:
    # two groups, one click each: the click seen at a rarely examined slot weighs more
    group = np.array([0, 0, 1, 1])
    label = np.array([1.0, 0.0, 0.0, 1.0])
    score = np.array([0.9, 0.1, 0.9, 0.1])  # first group's click ranked first, second's last

    light = m.evaluate_ranking(group, label, score, cutoffs=(2,), propensity_weight=[1, 1, 1, 1])
    heavy = m.evaluate_ranking(group, label, score, cutoffs=(2,), propensity_weight=[1, 1, 1, 9])

    assert light["ipw_ndcg@2"] == pytest.approx(light["ndcg@2"])
    assert heavy["ipw_ndcg@2"] < light["ipw_ndcg@2"]  # the missed click now counts 9 times


def test_every_refusal_says_exactly_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^no item was shown 3 times: cannot estimate position"):
        estimate_examination([1, 2], [7, 8], [True, False], min_impressions=3)
    with pytest.raises(ValueError, match=r"^positions start at 1$"):
        estimate_examination([0, 1], [7, 7], [True, False], min_impressions=1)
    with pytest.raises(ValueError, match=r"^position, item and click must have the same length$"):
        estimate_examination([1, 2], [7], [True, False])
    with pytest.raises(
        ValueError, match=r"^no examination estimate: nothing shown or clicked at position 1$"
    ):
        # nothing was ever shown first: the curve cannot be scaled to position 1
        estimate_examination([2, 3, 2, 3], [7, 7, 7, 7], [True, False] * 2, min_impressions=1)


def test_an_item_shown_exactly_min_impressions_times_takes_part() -> None:
    curve = estimate_examination([1, 2, 1], [7, 7, 7], [True, False, True], min_impressions=3)
    assert curve[1] == 1.0
    assert len(curve) == 3


def test_em_converges_on_a_realistic_log_and_warns_when_it_cannot(caplog) -> None:
    position, item, clicked, _ = simulated_clicks(4, 1.0, sessions=1500)
    with caplog.at_level("WARNING", logger="rankflow.evaluation.propensity"):
        estimate_examination(position, item, clicked)
    assert caplog.records == []
    with caplog.at_level("WARNING", logger="rankflow.evaluation.propensity"):
        estimate_examination(position, item, clicked, max_iterations=2)
    (record,) = caplog.records
    assert record.getMessage() == (
        "position-bias EM did not converge in 2 iterations; the curve is approximate"
    )


def test_the_default_clip_is_the_configured_ipw_clip() -> None:
    from rankflow.config import load_pipeline_config

    clip = float(load_pipeline_config(None, {})["evaluation"]["ipw_clip"])
    assert inverse_propensity([1, 2], np.array([1.0, 1.0, 1e-6])).tolist() == [1.0, clip]

"""Offline metrics: what they refuse, and the pooled IPW NDCG on a hand-computed case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankflow.evaluation import metrics as m

GROUP = np.array([0, 0, 1, 1])
LABEL = np.array([1.0, 0.0, 0.0, 1.0])
SCORE = np.array([0.9, 0.1, 0.8, 0.2])


@pytest.mark.parametrize("which", [0, 1, 2])
def test_each_input_must_be_one_dimensional(which: int) -> None:
    arrays = [GROUP, LABEL, SCORE]
    arrays[which] = arrays[which].reshape(2, 2)
    with pytest.raises(ValueError, match=r"^group, label and score must be 1-D arrays$"):
        m.ndcg_at_k(*arrays, 10)


def test_values_that_cannot_be_ranked_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^group contains NaN$"):
        m.ndcg_at_k(np.array([0.0, math.nan, 1.0, 1.0]), LABEL, SCORE, 10)
    with pytest.raises(ValueError, match=r"^label must be finite and non-negative$"):
        m.ndcg_at_k(GROUP, np.array([1.0, -1.0, 0.0, 1.0]), SCORE, 10)
    with pytest.raises(ValueError, match=r"^label must be finite and non-negative$"):
        m.ndcg_at_k(GROUP, np.array([1.0, math.inf, 0.0, 1.0]), SCORE, 10)
    with pytest.raises(ValueError, match=r"^score contains NaN$"):
        m.ndcg_at_k(GROUP, LABEL, np.array([0.9, math.nan, 0.8, 0.2]), 10)
    with pytest.raises(ValueError, match="differ in length: 4, 4, 3"):
        m.ndcg_at_k(GROUP, LABEL, SCORE[:3], 10)
    # string group ids are fine (no NaN check on them)
    assert m.ndcg_at_k(np.array(["a", "a", "b", "b"]), LABEL, SCORE, 10) > 0


def test_pooled_ipw_ndcg_weights_each_click_by_its_inverse_propensity() -> None:
    weight = np.array([2.0, 1.0, 1.0, 3.0])
    got = m.evaluate_ranking(GROUP, LABEL, SCORE, cutoffs=(10,), propensity_weight=weight)
    # gains (2**label - 1) x weight: 2 at the top of group 0, 3 second in group 1
    dcg = 2.0 / math.log2(2) + 3.0 / math.log2(3)
    ideal = 2.0 / math.log2(2) + 3.0 / math.log2(2)
    assert got["ipw_ndcg@10"] == pytest.approx(dcg / ideal)
    # a cutoff of 1 leaves out group 1's click, not its ideal
    top = m.evaluate_ranking(GROUP, LABEL, SCORE, cutoffs=(1,), propensity_weight=weight)
    assert top["ipw_ndcg@1"] == pytest.approx(2.0 / 5.0)


def test_pooled_ipw_ndcg_without_any_click_is_nan_and_a_bad_cutoff_is_refused() -> None:
    none = np.zeros(4)
    got = m.evaluate_ranking(GROUP, none, SCORE, cutoffs=(10,), propensity_weight=np.ones(4))
    assert math.isnan(got["ipw_ndcg@10"])
    with pytest.raises(ValueError, match="k must be a positive integer or None, got 0"):
        m.evaluate_ranking(GROUP, LABEL, SCORE, cutoffs=(0,), propensity_weight=np.ones(4))


def test_no_recall_when_asked_for_none() -> None:
    got = m.evaluate_ranking(GROUP, LABEL, SCORE, cutoffs=(10,), recall_k=None)
    assert not any(name.startswith("recall@") for name in got)
    assert m.evaluate_ranking(GROUP, LABEL, SCORE, cutoffs=(10,), recall_k=1)["recall@1"] == 0.5

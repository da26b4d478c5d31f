"""Offline ranking metrics over flat ``(group, label, score)`` arrays: NDCG, MAP, MRR, recall.

Conventions shared by every metric:

* Inputs are three 1-D arrays of equal length ``n``: ``group`` (query ids: any sortable values,
  ints or strings; the rows of a group need not be contiguous), ``label`` (graded relevance,
  finite and non-negative) and ``score`` (higher is ranked first; NaN is rejected).
* Ties in ``score`` are broken by input order (stable sort): of two rows with the same score,
  the one that comes first in the arrays is ranked first. That is what XGBoost does.
* Per-group functions return a float64 array of shape ``(n_groups,)`` aligned with
  ``np.unique(group)`` (sorted group ids), so two models scored on the same rows can be paired.
  A group skipped by the ``empty="skip"`` convention holds NaN there.
* A group is *empty* when it has nothing to find: no row with ``label > 0`` (for NDCG this is
  the same as an ideal DCG of 0). ``empty`` says what it counts as: ``"one"``, ``"zero"`` or
  ``"skip"`` (left out of the mean). A mean over no remaining groups is NaN.
* MAP, MRR and recall use binary relevance ``label > 0``.

Everything is vectorised: one stable ``np.lexsort`` by ``(group, -score)``, ranks within groups
from the group starts, and per-group sums with ``np.bincount``; ~1M rows take a fraction of a
second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Gain = Literal["exponential", "linear"]
Empty = Literal["one", "zero", "skip"]

GAINS: tuple[str, ...] = ("exponential", "linear")
EMPTY_CONVENTIONS: tuple[str, ...] = ("one", "zero", "skip")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class RankedGroups:
    """Rows sorted by ``(group, -score)`` with their group index and 0-based position.

    Attributes:
        group_index: Shape ``(n,)``; index of each sorted row's group in ``np.unique(group)``.
        position: Shape ``(n,)``; 0-based rank of each sorted row within its group.
        label: Shape ``(n,)``; relevance of each sorted row (float64).
        n_groups: Number of distinct groups.
    """

    group_index: IntArray
    position: IntArray
    label: FloatArray
    n_groups: int

    @cached_property
    def relevant(self) -> FloatArray:
        """Binary relevance ``label > 0`` of the sorted rows as 0/1 floats, shape ``(n,)``."""
        return (self.label > 0).astype(np.float64)

    @cached_property
    def n_relevant(self) -> FloatArray:
        """Number of relevant rows per group, shape ``(n_groups,)``."""
        return self.per_group_sum(self.relevant)

    @cached_property
    def ideal_label(self) -> FloatArray:
        """Labels sorted descending within each group (the ideal ordering), shape ``(n,)``."""
        return self.label[np.lexsort((-self.label, self.group_index))]

    def per_group_sum(self, values: FloatArray) -> FloatArray:
        """Sum row values of shape ``(n,)`` per group into shape ``(n_groups,)``."""
        sums = np.bincount(self.group_index, weights=values, minlength=self.n_groups)
        return sums.astype(np.float64, copy=False)

    def within(self, k: int | None) -> npt.NDArray[np.bool_]:
        """Return which sorted rows sit in the top ``k`` of their group (all if ``k`` is None)."""
        if k is None:
            return np.ones(self.position.shape, dtype=bool)
        return self.position < k


def group_codes(values: npt.ArrayLike) -> IntArray:
    """Map arbitrary group ids (ints, strings) to int64 codes ``0..n_groups-1`` in sorted order."""
    _, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.reshape(-1).astype(np.int64, copy=False)


def rank_groups(group: npt.ArrayLike, label: npt.ArrayLike, score: npt.ArrayLike) -> RankedGroups:
    """Sort rows once by ``(group, -score)``, stable on ties, for reuse by several metrics."""
    group_arr = np.asarray(group)
    label_arr = np.asarray(label, dtype=np.float64)
    score_arr = np.asarray(score, dtype=np.float64)
    _check_inputs(group_arr, label_arr, score_arr)
    n = label_arr.shape[0]
    order = np.lexsort((-score_arr, group_arr))
    sorted_group = group_arr[order]
    is_start = np.ones(n, dtype=bool)
    is_start[1:] = sorted_group[1:] != sorted_group[:-1]
    starts = np.flatnonzero(is_start)
    group_index = np.cumsum(is_start, dtype=np.int64) - 1
    position = np.arange(n, dtype=np.int64) - starts[group_index]
    return RankedGroups(group_index, position, label_arr[order], int(starts.shape[0]))


def _check_inputs(group: npt.NDArray[Any], label: FloatArray, score: FloatArray) -> None:
    """Raise ValueError unless the inputs are equal-length 1-D arrays with valid values."""
    if group.ndim != 1 or label.ndim != 1 or score.ndim != 1:
        raise ValueError("group, label and score must be 1-D arrays")
    if not group.shape[0] == label.shape[0] == score.shape[0]:
        raise ValueError(
            f"group, label and score differ in length: "
            f"{group.shape[0]}, {label.shape[0]}, {score.shape[0]}"
        )
    if group.dtype.kind in "fc" and np.any(np.isnan(group)):
        raise ValueError("group contains NaN")
    if not np.all(np.isfinite(label)) or np.any(label < 0):
        raise ValueError("label must be finite and non-negative")
    if np.any(np.isnan(score)):
        raise ValueError("score contains NaN")


def _check_k(k: int | None) -> None:
    """Raise ValueError unless the cutoff ``k`` is None or a positive integer."""
    if k is not None and (isinstance(k, bool) or int(k) != k or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")


def _apply_empty(values: FloatArray, is_empty: npt.NDArray[np.bool_], empty: Empty) -> FloatArray:
    """Set the per-group values of empty groups to 1, 0 or NaN (skipped) per ``empty``."""
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(f"empty must be one of {EMPTY_CONVENTIONS}, got {empty!r}")
    fill = {"one": 1.0, "zero": 0.0, "skip": np.nan}[empty]
    return np.where(is_empty, fill, values)


def mean_over_groups(per_group: FloatArray) -> float:
    """Mean of per-group values ignoring NaN (skipped groups); NaN when no group remains."""
    kept = per_group[~np.isnan(per_group)]
    return float(kept.mean()) if kept.shape[0] else float("nan")


def _gain(label: FloatArray, gain: Gain) -> FloatArray:
    """Gain of each label: ``2**rel - 1`` (exponential) or ``rel`` (linear)."""
    if gain == "exponential":
        return np.exp2(label) - 1.0
    if gain == "linear":
        return label
    raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")


def _ndcg(ranked: RankedGroups, k: int | None, gain: Gain, empty: Empty) -> FloatArray:
    """Per-group NDCG@k of already ranked rows, shape ``(n_groups,)``."""
    _check_k(k)
    keep = ranked.within(k)
    discount = np.where(keep, 1.0 / np.log2(ranked.position + 2.0), 0.0)
    dcg = ranked.per_group_sum(_gain(ranked.label, gain) * discount)
    idcg = ranked.per_group_sum(_gain(ranked.ideal_label, gain) * discount)
    is_empty = idcg <= 0
    return _apply_empty(dcg / np.where(is_empty, 1.0, idcg), is_empty, empty)


def _pooled_ndcg(ranked: RankedGroups, k: int | None) -> float:
    """Sum of DCG@k over groups divided by the sum of ideal DCG@k (linear gain = label)."""
    _check_k(k)
    discount = np.where(ranked.within(k), 1.0 / np.log2(ranked.position + 2.0), 0.0)
    ideal = float(np.sum(ranked.ideal_label * discount))
    return float(np.sum(ranked.label * discount)) / ideal if ideal > 0 else float("nan")


def _average_precision(ranked: RankedGroups, k: int | None, empty: Empty) -> FloatArray:
    """Per-group AP@k (denominator ``min(k, n_relevant)``) of ranked rows, ``(n_groups,)``."""
    _check_k(k)
    relevant = ranked.relevant
    cumulative = np.cumsum(relevant)
    before_group = (cumulative - relevant)[ranked.position == 0]
    hits = cumulative - before_group[ranked.group_index]
    precision = np.where(ranked.within(k) & (relevant > 0), hits / (ranked.position + 1.0), 0.0)
    n_relevant = ranked.n_relevant
    denominator = n_relevant if k is None else np.minimum(n_relevant, k)
    is_empty = n_relevant == 0
    ap = ranked.per_group_sum(precision) / np.where(is_empty, 1.0, denominator)
    return _apply_empty(ap, is_empty, empty)


def _reciprocal_rank(ranked: RankedGroups, k: int | None, empty: Empty) -> FloatArray:
    """Per-group reciprocal rank of the first relevant row (0 beyond ``k``), ``(n_groups,)``."""
    _check_k(k)
    rows = np.flatnonzero(ranked.relevant > 0)
    groups = ranked.group_index[rows]
    first = np.ones(rows.shape[0], dtype=bool)
    first[1:] = groups[1:] != groups[:-1]
    rr = np.zeros(ranked.n_groups, dtype=np.float64)
    first_position = ranked.position[rows[first]]
    in_cutoff = first_position < (k if k is not None else np.inf)
    rr[groups[first]] = np.where(in_cutoff, 1.0 / (first_position + 1.0), 0.0)
    return _apply_empty(rr, ranked.n_relevant == 0, empty)


def _recall(ranked: RankedGroups, k: int | None, empty: Empty) -> FloatArray:
    """Per-group share of relevant rows ranked in the top ``k``, shape ``(n_groups,)``."""
    _check_k(k)
    hits = ranked.per_group_sum(np.where(ranked.within(k), ranked.relevant, 0.0))
    n_relevant = ranked.n_relevant
    is_empty = n_relevant == 0
    return _apply_empty(hits / np.where(is_empty, 1.0, n_relevant), is_empty, empty)


def ndcg_at_k_per_group(
    group: npt.ArrayLike,
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    k: int | None = 10,
    gain: Gain = "exponential",
    empty: Empty = "one",
) -> FloatArray:
    """NDCG@k per group (discount ``1/log2(rank+1)``), shape ``(n_groups,)``, by sorted group id.

    Args:
        group: Shape ``(n,)``; query group id of each row (need not be contiguous).
        label: Shape ``(n,)``; graded relevance, non-negative.
        score: Shape ``(n,)``; model score, higher ranked first, ties by input order.
        k: Cutoff on both DCG and the ideal DCG; None for the whole list.
        gain: ``"exponential"`` (``2**rel - 1``, XGBoost) or ``"linear"`` (``rel``, sklearn).
        empty: Value of a group whose ideal DCG is 0: ``"one"`` (XGBoost), ``"zero"`` (sklearn)
            or ``"skip"`` (NaN).
    """
    return _ndcg(rank_groups(group, label, score), k, gain, empty)


def ndcg_at_k(
    group: npt.ArrayLike,
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    k: int | None = 10,
    gain: Gain = "exponential",
    empty: Empty = "one",
) -> float:
    """Mean NDCG@k over groups; see :func:`ndcg_at_k_per_group` for the arguments."""
    return mean_over_groups(ndcg_at_k_per_group(group, label, score, k, gain, empty))


def map_at_k_per_group(
    group: npt.ArrayLike,
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    k: int | None = 10,
    empty: Empty = "skip",
) -> FloatArray:
    """AP@k per group with binary relevance ``label > 0``, shape ``(n_groups,)``.

    AP@k is the sum of precision@i over relevant positions ``i <= k`` divided by
    ``min(k, n_relevant)`` (``n_relevant`` when ``k`` is None). XGBoost's ``map@k`` divides by
    the relevant rows found in the top k instead, so its values can be higher.

    Args:
        group: Shape ``(n,)``; query group id of each row (need not be contiguous).
        label: Shape ``(n,)``; relevance, positive means relevant.
        score: Shape ``(n,)``; model score, higher ranked first, ties by input order.
        k: Cutoff; None for the whole list.
        empty: Value of a group without relevant rows: ``"skip"`` (NaN, default), ``"one"``
            or ``"zero"``.
    """
    return _average_precision(rank_groups(group, label, score), k, empty)


def map_at_k(
    group: npt.ArrayLike,
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    k: int | None = 10,
    empty: Empty = "skip",
) -> float:
    """Mean AP@k over groups; see :func:`map_at_k_per_group` for the arguments."""
    return mean_over_groups(map_at_k_per_group(group, label, score, k, empty))


def mrr_per_group(
    group: npt.ArrayLike,
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    k: int | None = None,
    empty: Empty = "skip",
) -> FloatArray:
    """Reciprocal rank of the first row with ``label > 0`` per group, shape ``(n_groups,)``.

    Args:
        group: Shape ``(n,)``; query group id of each row (need not be contiguous).
        label: Shape ``(n,)``; relevance, positive means relevant.
        score: Shape ``(n,)``; model score, higher ranked first, ties by input order.
        k: Optional cutoff: a first relevant row ranked below ``k`` counts 0.
        empty: Value of a group without relevant rows: ``"skip"`` (NaN, default), ``"one"``
            or ``"zero"``.
    """
    return _reciprocal_rank(rank_groups(group, label, score), k, empty)


def mrr(
    group: npt.ArrayLike,
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    k: int | None = None,
    empty: Empty = "skip",
) -> float:
    """Mean reciprocal rank over groups; see :func:`mrr_per_group` for the arguments."""
    return mean_over_groups(mrr_per_group(group, label, score, k, empty))


def recall_at_k_per_group(
    group: npt.ArrayLike,
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    k: int | None = 100,
    empty: Empty = "skip",
) -> FloatArray:
    """Share of each group's relevant rows (``label > 0``) in its top k, ``(n_groups,)``.

    Args:
        group: Shape ``(n,)``; query group id of each row (need not be contiguous).
        label: Shape ``(n,)``; relevance, positive means relevant.
        score: Shape ``(n,)``; model score, higher ranked first, ties by input order.
        k: Cutoff; None for the whole list (recall 1 for every non-empty group).
        empty: Value of a group without relevant rows: ``"skip"`` (NaN, default), ``"one"``
            or ``"zero"``.
    """
    return _recall(rank_groups(group, label, score), k, empty)


def recall_at_k(
    group: npt.ArrayLike,
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    k: int | None = 100,
    empty: Empty = "skip",
) -> float:
    """Mean recall@k over groups; see :func:`recall_at_k_per_group` for the arguments."""
    return mean_over_groups(recall_at_k_per_group(group, label, score, k, empty))


def evaluate_ranking(
    group: npt.ArrayLike,
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    cutoffs: Sequence[int] = (10, 20),
    recall_k: int | None = 100,
    ndcg_empty: Empty = "one",
    propensity_weight: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """All offline metrics of one scoring (model or baseline) from a single sort.

    Returns ``ndcg@k`` (exponential gain, ``ndcg_empty`` convention) and ``map@k`` (empty groups
    skipped) for each k in ``cutoffs``, ``mrr`` and ``recall@{recall_k}`` (empty groups skipped;
    None leaves it out: on 20 logged impressions, recall@100 is 1 for any order),
    ``groups`` (number of groups) and ``groups_with_relevant`` (groups with a ``label > 0`` row).
    With ``propensity_weight`` (1 / P(examined) of each row's logged position) it also returns
    ``ipw_ndcg@k``: the inverse-propensity-weighted DCG@k (gains ``(2**label - 1) * weight``,
    an unbiased estimate of the DCG on true relevance) summed over groups, divided by the same
    sum for the ideal order. Pooling keeps the weights: normalising each group by its own
    weighted ideal would cancel the weight of a group's only click.
    """
    ranked = rank_groups(group, label, score)
    result: dict[str, float] = {}
    for k in cutoffs:
        result[f"ndcg@{k}"] = mean_over_groups(_ndcg(ranked, k, "exponential", ndcg_empty))
    if propensity_weight is not None:
        weighted = (np.exp2(np.asarray(label, dtype=np.float64)) - 1.0) * np.asarray(
            propensity_weight, dtype=np.float64
        )
        reweighted = rank_groups(group, weighted, score)
        for k in cutoffs:
            result[f"ipw_ndcg@{k}"] = _pooled_ndcg(reweighted, k)
    for k in cutoffs:
        result[f"map@{k}"] = mean_over_groups(_average_precision(ranked, k, "skip"))
    result["mrr"] = mean_over_groups(_reciprocal_rank(ranked, None, "skip"))
    if recall_k is not None:
        result[f"recall@{recall_k}"] = mean_over_groups(_recall(ranked, recall_k, "skip"))
    result["groups"] = float(ranked.n_groups)
    result["groups_with_relevant"] = float(np.count_nonzero(ranked.n_relevant))
    return result


def ndcg_parts(
    group: npt.ArrayLike,
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    k: int,
    ndcg_empty: Empty = "skip",
    propensity_weight: npt.ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Per-group numerator and denominator whose ratio of sums is NDCG@k (or IPW NDCG@k).

    Without weights: the group's NDCG@k over 1 (a skipped empty group is 0 over 0), so the ratio
    of sums is the mean NDCG@k of :func:`evaluate_ranking`. With ``propensity_weight``: the
    group's weighted DCG@k over its weighted ideal DCG@k, whose ratio of sums is the pooled
    ``ipw_ndcg@k``. Resampling groups and re-taking the ratio is the bootstrap of either metric.
    """
    if propensity_weight is None:
        per_group = _ndcg(rank_groups(group, label, score), k, "exponential", ndcg_empty)
        kept = ~np.isnan(per_group)
        return np.where(kept, per_group, 0.0), kept.astype(np.float64)
    weighted = (np.exp2(np.asarray(label, dtype=np.float64)) - 1.0) * np.asarray(
        propensity_weight, dtype=np.float64
    )
    ranked = rank_groups(group, weighted, score)
    discount = np.where(ranked.within(k), 1.0 / np.log2(ranked.position + 2.0), 0.0)
    return (
        ranked.per_group_sum(ranked.label * discount),
        ranked.per_group_sum(ranked.ideal_label * discount),
    )

"""Position bias of logged clicks: examination propensities estimated from the logs themselves.

Logged clicks favour the top of the list whatever the items are, so the order that produced the
impressions looks better on naive click metrics than it is. The position-based click model
(PBM: P(click) = P(examined | position) x P(attractive | item)) is fitted by EM over the logged
impressions (Chuklin, Markov and de Rijke, *Click Models for Web Search*, 2015, section 4.2);
inverse-propensity weights then correct offline metrics for the examination of each position.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def estimate_examination(
    position: npt.ArrayLike,
    item: npt.ArrayLike,
    click: npt.ArrayLike,
    *,
    min_impressions: int = 20,
    iterations: int = 200,
    tolerance: float = 1e-7,
) -> FloatArray:
    """Return P(examined | position) for positions 0..max, scaled so that position 1 is 1.

    Only items shown at least ``min_impressions`` times take part: an item seen once would
    explain its own click and flatten the curve. Index 0 is unused (positions start at 1).

    Raises:
        ValueError: inputs of different lengths, positions below 1, or no item shown often
            enough to estimate anything.
    """
    pos = np.asarray(position, dtype=np.int64)
    items = np.asarray(item)
    clicked = np.asarray(click, dtype=bool)
    if not len(pos) == len(items) == len(clicked):
        raise ValueError("position, item and click must have the same length")
    if len(pos) and pos.min() < 1:
        raise ValueError("positions start at 1")
    codes, counts = np.unique(items, return_inverse=True, return_counts=True)[1:]
    keep = counts[codes] >= min_impressions
    if not keep.any():
        raise ValueError(
            f"no item was shown {min_impressions} times: cannot estimate position bias"
        )
    pos, clicked = pos[keep], clicked[keep]
    codes = np.unique(codes[keep], return_inverse=True)[1]
    slots = int(pos.max()) + 1
    shown_at = np.bincount(pos, minlength=slots).astype(np.float64)
    shown = np.bincount(codes).astype(np.float64)
    examine = np.full(slots, 0.5)
    attract = np.full(len(shown), max(float(clicked.mean()), 1e-3))
    for _ in range(iterations):
        e, a = examine[pos], attract[codes]
        unclicked = np.maximum(1.0 - e * a, 1e-12)
        seen = np.where(clicked, 1.0, e * (1.0 - a) / unclicked)
        liked = np.where(clicked, 1.0, (1.0 - e) * a / unclicked)
        new_examine = np.bincount(pos, weights=seen, minlength=slots) / np.maximum(shown_at, 1.0)
        attract = np.bincount(codes, weights=liked) / shown
        done = np.max(np.abs(new_examine - examine)) < tolerance
        examine = new_examine
        if done:
            break
    if examine[1] <= 0:
        raise ValueError("position 1 got no examination estimate: no clicks at the top")
    curve: FloatArray = examine / examine[1]
    curve[0] = 1.0
    return curve


def inverse_propensity(
    position: npt.ArrayLike, examination: npt.ArrayLike, *, clip: float = 20.0
) -> FloatArray:
    """Return 1 / P(examined | position) per row, capped at ``clip`` (bounds the variance)."""
    curve = np.asarray(examination, dtype=np.float64)
    pos = np.minimum(np.asarray(position, dtype=np.int64), len(curve) - 1)
    weights: FloatArray = np.minimum(1.0 / np.maximum(curve[pos], 1.0 / clip), clip)
    return weights


def as_record(examination: npt.ArrayLike) -> dict[str, Any]:
    """Return the curve as JSON-ready data keyed by position (for run records and MLflow)."""
    curve = np.asarray(examination, dtype=np.float64)
    return {str(p): round(float(curve[p]), 4) for p in range(1, len(curve))}

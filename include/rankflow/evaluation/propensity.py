"""Position bias of logged clicks: examination propensities estimated from the logs themselves.

Logged clicks favour the top of the list whatever the items are, so the order that produced the
impressions looks better on naive click metrics than it is. The position-based click model
(PBM: P(click) = P(examined | position) x P(attractive | item)) is fitted by EM over the logged
impressions (Chuklin, Markov and de Rijke, *Click Models for Web Search*, 2015, section 4.2);
inverse-propensity weights then correct offline metrics for the examination of each position.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
_LOG = logging.getLogger(__name__)


def estimate_examination(
    position: npt.ArrayLike,
    item: npt.ArrayLike,
    click: npt.ArrayLike,
    *,
    min_impressions: int = 20,
    max_iterations: int = 5000,
    tolerance: float = 1e-6,
) -> FloatArray:
    """Return P(examined | position) for positions 0..max, scaled so that position 1 is 1.

    Only items shown at least ``min_impressions`` times take part: an item seen once would
    explain its own click and flatten the curve. Index 0 is unused (positions start at 1).
    EM runs on (item, position) counts until the scaled curve moves less than ``tolerance``;
    with few clicks it converges slowly, and a curve that has not converged after
    ``max_iterations`` is returned with a warning.

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
    codes = np.unique(codes[keep], return_inverse=True)[1]
    slots = int(pos[keep].max()) + 1
    cell = codes * slots + pos[keep]  # one EM unit per (item, position): counts, not rows
    cells, inverse = np.unique(cell, return_inverse=True)
    shown = np.bincount(inverse).astype(np.float64)
    clicks = np.bincount(inverse, weights=clicked[keep].astype(np.float64))
    at, of = cells % slots, cells // slots
    shown_at = np.maximum(np.bincount(at, weights=shown, minlength=slots), 1.0)
    shown_of = np.bincount(of, weights=shown)
    examine = np.full(slots, 0.5)
    attract = np.full(len(shown_of), max(float(clicked.mean()), 1e-3))
    curve: FloatArray = examine / examine[1]
    for _ in range(max_iterations):
        e, a = examine[at], attract[of]
        unclicked = np.maximum(1.0 - e * a, 1e-12)
        quiet = shown - clicks
        examine = (
            np.bincount(at, weights=clicks + quiet * e * (1.0 - a) / unclicked, minlength=slots)
            / shown_at
        )
        attract = np.bincount(of, weights=clicks + quiet * (1.0 - e) * a / unclicked) / shown_of
        if examine[1] <= 0:
            raise ValueError("no examination estimate: nothing shown or clicked at position 1")
        previous, curve = curve, examine / examine[1]
        if np.max(np.abs(curve - previous)) < tolerance:
            break
    else:
        _LOG.warning(
            "position-bias EM did not converge in %d iterations; the curve is approximate",
            max_iterations,
        )
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

"""Daily monitoring history: one row per figure, judged against its alert thresholds.

The monitor step (``rankflow.steps.monitor``) measures each night's run: feature drift between the
serving model's training window and the scoring day, prediction-score drift, list health,
publishing figures and the offline metrics of the evaluation. Every figure becomes one row of
the ``ops/monitoring`` Delta table (long format, so a new figure needs no schema change), with
the bounds it was judged against and whether it breached them.

Thresholds start from the defaults in the ``monitoring:`` section of the configuration. Once the
history holds ``calibration.min_clean_days`` clean days (days without any breach) of a figure,
its bounds come from those days instead: median +- ``calibration.mad_multiplier`` robust standard
deviations (1.4826 x MAD), on the side(s) its default watches. Everything here is pure; reading
the table back (delta-rs, no JVM) is in :mod:`rankflow.monitoring.history`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MAD_TO_SIGMA = 1.4826  # MAD x this estimates the standard deviation of a normal sample
# a monitoring row after its (ds, surface) partition: column names and Spark SQL types
ROW_FIELDS = (
    ("group", "string"),
    ("metric", "string"),
    ("subject", "string"),
    ("value", "double"),
    ("lower", "double"),
    ("upper", "double"),
    ("threshold_source", "string"),
    ("breached", "boolean"),
    ("run_id", "string"),
    ("computed_at", "timestamp"),
)


@dataclass(frozen=True)
class Figure:
    """One measured figure of a night: ``subject`` names the feature or model it is about."""

    group: str
    metric: str
    value: float
    subject: str = ""


@dataclass(frozen=True)
class Threshold:
    """Bounds a figure must stay within (None: side not watched) and where they came from."""

    lower: float | None
    upper: float | None
    source: str

    def breached_by(self, value: float) -> bool:
        """Tell whether ``value`` is outside the bounds (NaN always is: a figure went missing)."""
        if math.isnan(value):
            return True
        return (self.lower is not None and value < self.lower) or (
            self.upper is not None and value > self.upper
        )


def psi(reference: np.ndarray, current: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index of two histograms over the same bins (0 = same shape).

    Empty bins are floored at ``floor`` so a bin that appears or vanishes counts, finitely.
    """
    p = np.maximum(_shares(reference), floor)
    q = np.maximum(_shares(current), floor)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two histograms over the same bins."""
    p, q = _shares(reference), _shares(current)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return max(0.0, (kl(p) + kl(q)) / 2)


def _shares(counts: np.ndarray) -> np.ndarray:
    """Turn bin counts into shares (all zero when there is nothing to share)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def default_threshold(config: Mapping[str, Any], metric: str) -> Threshold | None:
    """Return the configured default bounds of a metric, or None when it is not watched."""
    bounds = config["thresholds"].get(metric)
    if not bounds:
        return None
    lower, upper = bounds.get("min"), bounds.get("max")
    return Threshold(
        None if lower is None else float(lower),
        None if upper is None else float(upper),
        "fixed" if bounds.get("fixed") else "default",
    )


def calibrated_threshold(
    default: Threshold, clean_values: Sequence[float], calibration: Mapping[str, Any]
) -> Threshold:
    """Bounds from the clean days' values (median +- k robust sigmas), once there are enough.

    Only the side(s) the default watches are calibrated; a perfectly steady history keeps a
    small relative margin (``relative_floor`` x |median|) so that rounding does not alert.
    """
    values = np.asarray([v for v in clean_values if not math.isnan(v)], dtype=np.float64)
    if default.source == "fixed" or len(values) < int(calibration["min_clean_days"]):
        return default
    median = float(np.median(values))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
    margin = float(calibration["mad_multiplier"]) * max(
        sigma, float(calibration["relative_floor"]) * abs(median)
    )
    lower = None if default.lower is None else median - margin
    upper = None if default.upper is None else median + margin
    return Threshold(lower, upper, f"calibrated({len(values)}d)")


def clean_values(history: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[float]]:
    """Group the history's values by (metric, subject), keeping only days without any breach."""
    rows = list(history)
    breached_days = {row["ds"] for row in rows if row["breached"]}
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["ds"]):
        if row["ds"] not in breached_days and row["value"] is not None:
            values[(row["metric"], row["subject"])].append(float(row["value"]))
    return values


def judge(
    figures: Sequence[Figure],
    config: Mapping[str, Any],
    history: Iterable[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Attach each figure's bounds (default or calibrated from clean history) and the verdict."""
    clean = clean_values(history)
    judged = []
    for figure in figures:
        row: dict[str, Any] = {**asdict(figure), "lower": None, "upper": None}
        row.update(threshold_source="none", breached=False)
        default = default_threshold(config, figure.metric)
        if default is not None:
            past = clean.get((figure.metric, figure.subject), [])
            threshold = calibrated_threshold(default, past, config["calibration"])
            row.update(
                lower=threshold.lower,
                upper=threshold.upper,
                threshold_source=threshold.source,
                breached=threshold.breached_by(figure.value),
            )
        judged.append(row)
    return judged


def breaches(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return the breached rows, as plain dicts (what alerts and ``rankflow health`` show)."""
    keys = ("group", "metric", "subject", "value", "lower", "upper", "threshold_source")
    return [{k: row[k] for k in keys} for row in rows if row["breached"]]


def finite(value: float | None) -> float:
    """Return a figure as a float, NaN for a missing one (judged as breached when watched)."""
    return float("nan") if value is None else float(value)

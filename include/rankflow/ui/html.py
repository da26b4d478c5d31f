"""Small HTML helpers of the pages: escaping, URL redaction, number and bound formatting."""

from __future__ import annotations

import html
import math
from datetime import date, datetime
from typing import Any, Literal

Format = Literal["number", "percent", "bytes", "seconds"]


# --------------------------------------------------------------------------- small helpers


def esc(value: Any) -> str:
    """HTML-escape the text of any value (``None`` becomes an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def as_day(value: Any) -> date:
    """Return a ``ds`` value (date, datetime or ISO text) as a date."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def as_float(value: Any) -> float | None:
    """Return a figure as a float, or None when it is missing or not finite."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_value(value: Any, kind: Format = "number") -> str:
    """Format a figure for people: 0.1234 -> ``0.123``, 12345 -> ``12.3k``, percent, bytes."""
    number = as_float(value)
    if number is None:
        return "–"
    if kind == "percent":
        scaled = number * 100
        return f"{scaled:.3g}%" if abs(scaled) < 10 else f"{scaled:.1f}%"
    if kind == "bytes":
        size = abs(number)
        for unit, step in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if size >= step:
                return f"{number / step:.1f} {unit}"
        return f"{number:.0f} B"
    if kind == "seconds":
        return f"{number:.2g} s" if abs(number) < 10 else f"{number:.0f} s"
    size = abs(number)
    if size >= 1e9:
        return f"{number / 1e9:.3g}G"
    if size >= 1e6:
        return f"{number / 1e6:.3g}M"
    if size >= 1e4:
        return f"{number / 1e3:.3g}k"
    if size >= 100 or number == int(number):
        return f"{number:.0f}"
    return f"{number:.3g}"


def bounds_text(lower: Any, upper: Any, kind: Format = "number") -> str:
    """Describe a threshold: ``≥ 0.99``, ``≤ 0.25``, ``0.1 – 0.2`` or ``–`` (not watched)."""
    low, high = as_float(lower), as_float(upper)
    if low is not None and high is not None:
        return f"{format_value(low, kind)} – {format_value(high, kind)}"
    if low is not None:
        return f"≥ {format_value(low, kind)}"
    if high is not None:
        return f"≤ {format_value(high, kind)}"
    return "–"

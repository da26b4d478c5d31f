"""Validation of the nightly DAG's trigger parameters (pure; runs inside the first task)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from rankflow.config import SURFACES

MAX_TOP_K = 500


class InvalidParamsError(ValueError):
    """A trigger parameter is invalid; nothing has been started."""


def resolve_run_date(
    params: dict[str, Any], data_interval_start: datetime | None, today: date | None = None
) -> str:
    """Return the day to process (``ds`` param, else the data interval start), validated."""
    today = today or datetime.now(UTC).date()
    raw = params.get("ds")
    if raw:
        try:
            day = date.fromisoformat(str(raw))
        except ValueError as error:
            raise InvalidParamsError(f"ds={raw!r} is not a date (YYYY-MM-DD)") from error
    elif data_interval_start is not None:
        day = data_interval_start.date()
    else:
        raise InvalidParamsError("this run has no data interval: pass the day as the ds param")
    if day >= today:
        raise InvalidParamsError(
            f"ds={day} is not over yet (today is {today} UTC): its data is incomplete"
        )
    if params.get("surface") not in SURFACES:
        raise InvalidParamsError(f"surface={params.get('surface')!r} is not one of {SURFACES}")
    top_k = params.get("top_k")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidParamsError(f"top_k={top_k!r} must be an integer in 1..{MAX_TOP_K}")
    if not isinstance(params.get("retrain"), bool):
        raise InvalidParamsError(f"retrain={params.get('retrain')!r} must be true or false")
    return day.isoformat()

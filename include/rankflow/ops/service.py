"""The ranking service as ``rankflow serve`` runs it: the app with its event log wired in.

The app (``rankflow.serving``) sits above the event log (``rankflow.stream``) in the library's
layers, so the two meet here: ``uvicorn --factory rankflow.ops.service:create_service``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette


def create_service() -> Starlette:
    """The ranking service, appending ``POST /v1/events`` to the configured event log."""
    from rankflow.config import load_settings
    from rankflow.serving.app import create_app
    from rankflow.stream.log import event_log

    settings = load_settings()
    return create_app(settings, event_log=lambda: event_log(settings, url=settings.redis.log_url))

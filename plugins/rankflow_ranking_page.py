"""Airflow plugin: the Ranking page, a "Ranking" entry in the Airflow UI's navigation bar.

A FastAPI app mounted on the API server at ``/ranking`` and shown by the UI in an iframe at
``/plugin/ranking``. Its routes only route and authenticate; the reads are
:mod:`rankflow.ui.page_sources` and the HTML :mod:`rankflow.ui.ranking_page`:

- ``GET /ranking/?surface=home&days=90&user=1042``: monitoring history charts, the current and
  previous Redis versions, the champion model and, with ``user``, that user's served list.
- ``GET /ranking/report/<model version>``: the run report (``report.html``) of a model version's
  MLflow run.

Access. Airflow does not authenticate plugin apps, so every route requires a logged-in Airflow
user allowed to see the website (the auth manager's ``is_authorized_view(WEBSITE)``: every role,
viewer included), read from the UI's session cookie or a bearer token; a browser without a
session is sent to the login page. Looking up one user's list shows personal data, so it needs the
Op role or higher: the auth manager's ``is_authorized_connection(method="GET")``, the permission
that separates Op from User under both FAB (``can_read`` on Connections: Op and Admin) and
SimpleAuthManager (connections need the op role). Editing DAG runs would not do: the User role
may. Others get the page without the lookup form, and a lookup answers 403. Every lookup, allowed
or refused, is logged on the ``rankflow.ranking_page.lookups`` logger with the Airflow user's name,
the looked-up user id and the surface (never a token or a cookie).

Loading this module stays cheap: plugins are loaded by schedulers, DAG processors and every task
runner, so the FastAPI app (and fastapi, redis, deltalake, mlflow) is only built on the first
request the API server passes to it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from fastapi import FastAPI

URL_PREFIX = "/ranking"
MAX_DAYS = 730
LOOKUP_ROLE = "Op"  # the least role that may look a user up (see the module docstring)
# the lookups' audit trail (see audit_to_stderr)
audit_log = logging.getLogger("rankflow.ranking_page.lookups")
# the menu icon: three bars, inline so the UI needs no static route for it
ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' "
    "fill='%23718096'%3E%3Crect x='3' y='12' width='4' height='9' rx='1'/%3E%3Crect x='10' "
    "y='7' width='4' height='14' rx='1'/%3E%3Crect x='17' y='3' width='4' height='18' rx='1'/%3E"
    "%3C/svg%3E"
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class LazyApp:
    """An ASGI app that builds the real one (``factory()``) on its first request."""

    def __init__(self, factory: Callable[[], FastAPI]) -> None:
        self._factory = factory
        self._app: FastAPI | None = None
        self._lock = threading.Lock()

    def get(self) -> FastAPI:
        """Return the app, building it once."""
        with self._lock:
            if self._app is None:
                self._app = self._factory()
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request with the real app."""
        app = self._app or self.get()
        await app(scope, receive, send)

    def __repr__(self) -> str:
        return "rankflow Ranking page (FastAPI app, built on first request)"


# --------------------------------------------------------------------------- access


def audit_to_stderr() -> None:
    """Send the lookups' audit lines to the API server's stderr at INFO, whatever its log level.

    Airflow's logging drops INFO when ``[logging] logging_level`` is WARNING, and an audit trail
    must not depend on that; the lines go to stderr (the container's log) on their own handler.
    """
    if audit_log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    audit_log.addHandler(handler)
    audit_log.setLevel(logging.INFO)
    audit_log.propagate = False


def may_look_up(user: Any) -> bool:
    """Whether an Airflow user may look up a user's list: Op or higher (connections readable)."""
    from airflow.api_fastapi.app import get_auth_manager

    return bool(get_auth_manager().is_authorized_connection(method="GET", user=user))


def record_lookup(user: Any, looked_up: str, surface: str, *, allowed: bool) -> None:
    """Log who looked up whom (the Airflow user's name and the user id; no credentials)."""
    if allowed:
        audit_log.info("lookup by %r of user %s on %s", user.get_name(), looked_up, surface)
    else:
        audit_log.warning(
            "lookup refused: %r (not %s or higher) asked for user %s on %s",
            user.get_name(),
            LOOKUP_ROLE,
            looked_up,
            surface,
        )


# --------------------------------------------------------------------------- the app


def create_app() -> FastAPI:
    """Build the FastAPI app of the page (called on the API server's first request to it)."""
    from datetime import UTC, datetime

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user, requires_access_view
    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import HTMLResponse, RedirectResponse, Response

    from rankflow.config import SURFACES, load_settings
    from rankflow.store.client import redact_url
    from rankflow.ui.page_sources import (
        ITEM_FEATURES,
        parse_user_id,
        read_champion,
        read_history,
        read_lookup,
        read_report,
        read_status,
        read_stream,
    )
    from rankflow.ui.ranking_page import LOOKUP_NOT_ALLOWED, PageData, message_page, render_page

    audit_to_stderr()
    app = FastAPI(
        title="rankflow Ranking page",
        dependencies=[Depends(requires_access_view(AccessView.WEBSITE))],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    headers = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        # the page has no script and loads nothing: forbid both; only the Airflow UI may frame it
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:; form-action 'self'; frame-ancestors 'self'",
    }

    @app.exception_handler(HTTPException)
    async def login_redirect(request: Request, error: HTTPException) -> Response:
        """Send a browser without an Airflow session to the login page, and back after it."""
        wants_html = "text/html" in request.headers.get("accept", "")
        if error.status_code == 401 and request.method == "GET" and wants_html:
            back = request.url.path  # the full path, mount prefix included
            if request.url.query:
                back += f"?{request.url.query}"
            return RedirectResponse(get_auth_manager().get_url_login(next_url=back), 303)
        return await http_exception_handler(request, error)

    @app.get("/", response_class=HTMLResponse)
    def page(
        viewer: Any = Depends(get_user),  # noqa: B008 (FastAPI's idiom; annotations are strings)
        surface: str | None = None,
        user: str | None = None,
        days: int = Query(90, ge=1, le=MAX_DAYS),
    ) -> HTMLResponse:
        settings = load_settings()
        chosen = surface or settings.default_surface
        if chosen not in SURFACES:
            text = f"Unknown surface {chosen!r}: one of {', '.join(SURFACES)}."
            return HTMLResponse(message_page("Ranking", text), 404, headers=headers)
        asked = user if user and user.strip() else None
        if asked is not None:
            try:
                asked = str(parse_user_id(asked))
            except ValueError as error:
                return HTMLResponse(message_page("Ranking", str(error)), 400, headers=headers)
        allowed = may_look_up(viewer)
        if asked is not None:
            record_lookup(viewer, asked, chosen, allowed=allowed)
            if not allowed:
                page = message_page("Ranking", LOOKUP_NOT_ALLOWED)
                return HTMLResponse(page, 403, headers=headers)
        data = PageData(
            surface=chosen,
            surfaces=SURFACES,
            history=read_history(settings, chosen),
            status=read_status(settings, chosen),
            champion=read_champion(settings),
            stream=read_stream(settings),
            user=asked,
            lookup=read_lookup(settings, chosen, asked) if asked else None,
            lookup_allowed=allowed,
            days=days,
            sources={
                "monitoring": settings.paths.table("ops/monitoring"),
                "item attributes": settings.paths.table(ITEM_FEATURES),
                "Redis": (
                    f"{redact_url(settings.redis.lookup_url)} (prefix {settings.redis.key_prefix})"
                ),
                "MLflow": f"{redact_url(settings.mlflow_tracking_uri)} ({settings.model_name})",
            },
            generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        return HTMLResponse(render_page(data), headers=headers)

    @app.get("/report/{model_version}", response_class=HTMLResponse)
    def report(model_version: str) -> HTMLResponse:
        if not model_version.isdigit():
            text = f"Not a model version: {model_version!r}."
            return HTMLResponse(message_page("Run report", text), 404, headers=headers)
        page = read_report(load_settings(), model_version)
        if page is None:
            text = f"Model version {model_version} has no run report (report.html) in MLflow."
            return HTMLResponse(message_page("Run report", text), 404, headers=headers)
        return HTMLResponse(page, headers=headers)

    return app


ranking_app = LazyApp(create_app)


class RankflowRankingPagePlugin(AirflowPlugin):
    """Mounts the Ranking page on the API server and adds it to the UI's navigation bar."""

    name = "rankflow_ranking_page"
    fastapi_apps = [  # noqa: RUF012 (AirflowPlugin's own attributes are plain lists)
        {"app": ranking_app, "url_prefix": URL_PREFIX, "name": "rankflow Ranking page"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Ranking",
            # relative: the UI resolves it against its <base href>, so a base_url path works
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "url_route": "ranking",
            "destination": "nav",
            "nav_top_level": True,  # beside Dags and Assets: the health of ranking at a glance
            "icon": ICON,
        }
    ]

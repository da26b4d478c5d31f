"""Airflow plugin: the Ranking page, a "Ranking" entry in the Airflow UI's navigation bar.

A FastAPI app mounted on the API server at ``/ranking`` and shown by the UI in an iframe at
``/plugin/ranking``. Its routes read the sources and leave the HTML to the library
(:mod:`rankflow.ui.ranking_page`):

- ``GET /ranking/?surface=home&days=90&user=1042``: monitoring history charts, the current and
  previous Redis versions, the champion model and, with ``user``, that user's served list.
- ``GET /ranking/report/<model version>``: the run report (``report.html``) of a model version's
  MLflow run.

Access: the same as the Airflow UI. Airflow does not authenticate plugin apps, so every route
requires a logged-in Airflow user allowed to see the website (the auth manager's
``is_authorized_view(WEBSITE)``), read from the UI's session cookie or a bearer token: the page
shows users' lists and model details. A browser without a session is sent to the login page.

Loading this module stays cheap: plugins are loaded by schedulers, DAG processors and every task
runner, so the FastAPI app (and fastapi, redis, deltalake, mlflow) is only built on the first
request the API server passes to it.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from fastapi import FastAPI

    from rankflow.config import Settings
    from rankflow.ui.ranking_page import Champion, Notice, UserList

URL_PREFIX = "/ranking"
ITEM_FEATURES = "silver/item_features"
MAX_DAYS = 730
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


# --------------------------------------------------------------------------- data access


def _settings() -> Settings:
    """The API server's rankflow settings (RANKFLOW_HOME, RANKFLOW_REDIS_URL, ...)."""
    from rankflow.config import load_settings

    return load_settings()


def _failure(what: str, error: Exception) -> Notice:
    """A section's read failure, logged (traceback at debug level) and shown in one line."""
    import logging

    from rankflow.ui.ranking_page import Notice

    log = logging.getLogger(__name__)
    log.warning("Ranking page: reading %s failed: %r", what, error)
    log.debug("Ranking page: reading %s failed", what, exc_info=True)
    return Notice(f"Could not read {what}: {type(error).__name__}: {error}", error=True)


def _redis(settings: Settings) -> Any:
    """A binary-safe Redis client with short timeouts (a page must not hang on a dead server)."""
    import redis

    return redis.Redis.from_url(
        settings.redis.url, socket_connect_timeout=3, socket_timeout=10, decode_responses=False
    )


def read_history(settings: Settings, surface: str) -> list[dict[str, Any]] | Notice:
    """The surface's rows of the ops/monitoring Delta table (empty before the first run)."""
    from rankflow.monitoring.history import history_rows

    try:
        return history_rows(settings, surface)
    except Exception as error:
        return _failure("the monitoring history", error)


def read_status(settings: Settings, surface: str) -> Any:
    """The surface's current and previous Redis versions with their size."""
    from rankflow.store.versions import surface_status
    from rankflow.ui.html import redact_url

    try:
        client = _redis(settings)
        try:
            return surface_status(client, settings.redis.key_prefix, surface, sample=200)
        finally:
            client.close()
    except Exception as error:
        return _failure(f"Redis at {redact_url(settings.redis.url)}", error)


def read_champion(settings: Settings) -> Champion | Notice:
    """The model version with the champion alias, its run's tags and metrics."""
    from pathlib import Path

    from rankflow.model.registry import CHAMPION
    from rankflow.ui.html import redact_url
    from rankflow.ui.ranking_page import Champion, Notice

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return Notice(f"No champion yet: the MLflow store {uri} does not exist (no model trained).")
    try:
        from datetime import UTC, datetime

        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        try:
            version = client.get_model_version_by_alias(settings.model_name, CHAMPION)
        except MlflowException as error:
            return Notice(
                f"No champion yet: no version of model “{settings.model_name}” carries the alias "
                f"“{CHAMPION}” ({error.message.splitlines()[0]})."
            )
        run_id = version.run_id or ""  # a version registered from outside a run has none
        run = client.get_run(run_id) if run_id else None
        artifacts = {a.path for a in client.list_artifacts(run_id)} if run_id else set()
        created = (
            datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(
                timespec="seconds"
            )
            if version.creation_timestamp
            else None
        )
        return Champion(
            name=settings.model_name,
            version=str(version.version),
            run_id=run_id,
            created_at=created,
            tags=dict(run.data.tags) if run else {},
            metrics=dict(run.data.metrics) if run else {},
            has_report="report.html" in artifacts,
        )
    except Exception as error:
        return _failure(f"MLflow at {redact_url(uri)}", error)


def item_attributes(
    settings: Settings, ds: str, item_ids: list[int]
) -> tuple[dict[int, dict[str, Any]], str | None]:
    """Attributes of the listed items in the ``ds`` partition of silver/item_features."""
    from datetime import date

    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from rankflow.ui.ranking_page import ITEM_COLUMNS

    if not item_ids:
        return {}, None
    try:
        table = DeltaTable(settings.paths.table(ITEM_FEATURES))
    except TableNotFoundError:
        return {}, f"No item attributes: the {ITEM_FEATURES} table does not exist."
    names = {f.name for f in table.schema().fields}
    columns = ["item_id", *[c for c in ITEM_COLUMNS if c in names]]
    rows = table.to_pyarrow_table(
        columns=columns,
        filters=[("ds", "=", date.fromisoformat(ds)), ("item_id", "in", sorted(set(item_ids)))],
    ).to_pylist()
    found = {int(row.pop("item_id")): row for row in rows}
    if not found:
        return {}, f"No item attributes: {ITEM_FEATURES} has none of these items for ds={ds}."
    return found, None


def read_lookup(settings: Settings, surface: str, user: str) -> UserList | Notice:
    """What the reader serves ``user`` on ``surface``, with the items' attributes."""
    from rankflow.store.errors import NoCurrentVersionError
    from rankflow.store.reader import RankingReader
    from rankflow.store.versions import version_meta
    from rankflow.ui.html import redact_url
    from rankflow.ui.ranking_page import Notice, UserList

    text = user.strip()
    if not text or len(text) > 128 or any(c in text for c in "*?[]: \t"):
        return Notice(f"Not a user id: {user!r}", error=True)
    user_id: int | str = int(text) if text.isdigit() else text
    try:
        client = _redis(settings)
        try:
            reader = RankingReader(client, settings.redis.key_prefix)
            answer = reader.lookup(user_id, surface)
            meta = version_meta(client, settings.redis.key_prefix, surface, answer.version)
        finally:
            client.close()
    except NoCurrentVersionError:
        return Notice(f"Nothing is published for surface “{surface}”: no list to look up.")
    except Exception as error:
        return _failure(f"the list from Redis at {redact_url(settings.redis.url)}", error)
    ds = meta.get("ds")
    try:
        attributes, note = item_attributes(settings, ds, answer.items) if ds else ({}, None)
    except Exception as error:
        attributes, note = {}, _failure("the item attributes", error).message
    if not ds:
        note = "The version's meta has no ds: item attributes cannot be matched."
    return UserList(
        user=answer.user,
        version=answer.version,
        fallback=answer.fallback,
        ds=ds,
        model_version=meta.get("model_version"),
        items=answer.items,
        attributes=attributes,
        note=note,
    )


def read_report(settings: Settings, model_version: str) -> str | None:
    """The run report logged in a model version's MLflow run, or None if there is none."""
    import tempfile
    from pathlib import Path

    import mlflow.artifacts
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        run_id = client.get_model_version(settings.model_name, model_version).run_id
        if not run_id or "report.html" not in {a.path for a in client.list_artifacts(run_id)}:
            return None
        with tempfile.TemporaryDirectory() as folder:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="report.html", dst_path=folder, tracking_uri=uri
            )
            return Path(path).read_text()
    except MlflowException:
        return None


# --------------------------------------------------------------------------- the app


def create_app() -> FastAPI:
    """Build the FastAPI app of the page (called on the API server's first request to it)."""
    from datetime import UTC, datetime

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view
    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import HTMLResponse, RedirectResponse, Response

    from rankflow.config import SURFACES
    from rankflow.ui.html import redact_url
    from rankflow.ui.ranking_page import PageData, message_page, render_page

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
        surface: str | None = None,
        user: str | None = None,
        days: int = Query(90, ge=1, le=MAX_DAYS),
    ) -> HTMLResponse:
        settings = _settings()
        chosen = surface or settings.default_surface
        if chosen not in SURFACES:
            text = f"Unknown surface {chosen!r}: one of {', '.join(SURFACES)}."
            return HTMLResponse(message_page("Ranking", text), 404, headers=headers)
        asked = user if user and user.strip() else None
        data = PageData(
            surface=chosen,
            surfaces=SURFACES,
            history=read_history(settings, chosen),
            status=read_status(settings, chosen),
            champion=read_champion(settings),
            user=asked,
            lookup=read_lookup(settings, chosen, asked) if asked else None,
            days=days,
            sources={
                "monitoring": settings.paths.table("ops/monitoring"),
                "item attributes": settings.paths.table(ITEM_FEATURES),
                "Redis": f"{redact_url(settings.redis.url)} (prefix {settings.redis.key_prefix})",
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
        page = read_report(_settings(), model_version)
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

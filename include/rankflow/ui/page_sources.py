"""What the Ranking page reads: the monitoring history, Redis versions and lists, the champion.

Each reader returns the data or a :class:`~rankflow.ui.ranking_page.Notice` saying, in one line,
what could not be read, so one dead source never takes the page down. The Airflow plugin
(``plugins/rankflow_ranking_page.py``) only routes and authenticates; everything here is testable
without Airflow.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from rankflow.config import Settings
from rankflow.model.registry import (
    CHAMPION,
    ModelNotFoundError,
    find_model_version,
    mlflow_client,
)
from rankflow.monitoring.freshness import StreamFreshness, read_freshness
from rankflow.monitoring.history import history_rows
from rankflow.quality.raw import MAX_ID
from rankflow.store.client import redact_url, redis_client
from rankflow.store.errors import NoCurrentVersionError
from rankflow.store.reader import RankingReader
from rankflow.store.versions import surface_status, version_meta
from rankflow.ui.ranking_page import ITEM_COLUMNS, Champion, Notice, UserList

ITEM_FEATURES = "silver/item_features"  # the lake table of item attributes (lake.tables)
READ_TIMEOUT_SECONDS = 10  # a page must not hang on a dead server

log = logging.getLogger(__name__)


def failure(what: str, error: Exception) -> Notice:
    """A section's read failure, logged (traceback at debug level) and shown in one line."""
    log.warning("Ranking page: reading %s failed: %r", what, error)
    log.debug("Ranking page: reading %s failed", what, exc_info=True)
    return Notice(f"Could not read {what}: {type(error).__name__}: {error}", error=True)


def mlflow_store_missing(settings: Settings) -> bool:
    """Whether the embedded MLflow store has not been created yet (no model was ever trained)."""
    uri = settings.mlflow_tracking_uri
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()


def read_history(settings: Settings, surface: str) -> list[dict[str, Any]] | Notice:
    """The surface's rows of the ops/monitoring Delta table (empty before the first run)."""
    try:
        return history_rows(settings, surface)
    except Exception as error:
        return failure("the monitoring history", error)


def read_status(settings: Settings, surface: str) -> Any:
    """The surface's current and previous Redis versions with their size."""
    try:
        client = redis_client(settings.redis.lookup_url, socket_timeout=READ_TIMEOUT_SECONDS)
        try:
            return surface_status(client, settings.redis.key_prefix, surface, sample=200)
        finally:
            client.close()
    except Exception as error:
        return failure(f"Redis at {redact_url(settings.redis.lookup_url)}", error)


def read_stream(settings: Settings) -> StreamFreshness | Notice:
    """The event stream's freshness per partition (the updaters' progress in Redis)."""
    try:
        client = redis_client(settings.redis.lookup_url, socket_timeout=READ_TIMEOUT_SECONDS)
        try:
            return read_freshness(client, settings)
        finally:
            client.close()
    except Exception as error:
        return failure(
            f"the stream's progress in Redis at {redact_url(settings.redis.lookup_url)}", error
        )


def read_champion(settings: Settings) -> Champion | Notice:
    """The model version with the champion alias, its run's tags and metrics."""
    uri = settings.mlflow_tracking_uri
    if mlflow_store_missing(settings):
        return Notice(f"No champion yet: the MLflow store {uri} does not exist (no model trained).")
    try:
        client = mlflow_client(settings)
        try:
            version = find_model_version(settings, client, CHAMPION)
        except ModelNotFoundError:
            return Notice(
                f"No champion yet: no version of model “{settings.model_name}” carries the alias "
                f"“{CHAMPION}”."
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
        return failure(f"MLflow at {redact_url(uri)}", error)


def item_attributes(
    settings: Settings, ds: str, item_ids: list[int]
) -> tuple[dict[int, dict[str, Any]], str | None]:
    """Attributes of the listed items in the ``ds`` partition of silver/item_features."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

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


def parse_user_id(user: str) -> int:
    """A user id typed into the page: ASCII digits in 1..2^32-1 (``²`` is a digit, not an id).

    Raises:
        ValueError: with the message the page answers a malformed id with (HTTP 400).
    """
    text = user.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or not 1 <= int(text) <= MAX_ID:
        raise ValueError(f"Not a user id: {user[:40]!r} (a whole number from 1 to {MAX_ID}).")
    return int(text)


def read_lookup(settings: Settings, surface: str, user: str) -> UserList | Notice:
    """What the reader serves ``user`` on ``surface``, with the items' attributes."""
    try:
        user_id = parse_user_id(user)
    except ValueError as error:
        return Notice(str(error), error=True)
    try:
        client = redis_client(settings.redis.lookup_url, socket_timeout=READ_TIMEOUT_SECONDS)
        try:
            reader = RankingReader(client, settings.redis.key_prefix)
            answer = reader.lookup(user_id, surface)
            meta = version_meta(client, settings.redis.key_prefix, surface, answer.version)
        finally:
            client.close()
    except NoCurrentVersionError:
        return Notice(f"Nothing is published for surface “{surface}”: no list to look up.")
    except Exception as error:
        return failure(f"the list from Redis at {redact_url(settings.redis.lookup_url)}", error)
    ds = meta.get("ds")
    try:
        attributes, note = item_attributes(settings, ds, answer.items) if ds else ({}, None)
    except Exception as error:
        attributes, note = {}, failure("the item attributes", error).message
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
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    if mlflow_store_missing(settings):
        return None
    try:
        client = mlflow_client(settings)  # inside: a server refusing the credentials raises here
        run_id = client.get_model_version(settings.model_name, model_version).run_id
        if not run_id or "report.html" not in {a.path for a in client.list_artifacts(run_id)}:
            return None
        with tempfile.TemporaryDirectory() as folder:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path="report.html",
                dst_path=folder,
                tracking_uri=settings.mlflow_tracking_uri,
            )
            return Path(path).read_text()
    except MlflowException as error:
        log.warning(
            "Ranking page: reading the run report of version %s failed: %r", model_version, error
        )
        return None

"""The one Redis client factory: every library module opens its clients here.

The URL carries everything a deployment chooses: host, port and database, the ACL user and its
password (``redis://user:password@host:6379/0``), and TLS (``rediss://``). It comes from
``RANKFLOW_REDIS_URL`` or the ``redis_rankflow`` Airflow connection, never from code. Clients are
binary-safe (replies are bytes; :mod:`rankflow.store.commands` decodes them) and time out, so a
dead server fails a step with a clear message instead of hanging it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import redis

CONNECT_TIMEOUT_SECONDS = 5.0


def redact_url(url: str) -> str:
    """Return a URL without its password (``redis://:secret@host`` -> ``redis://:***@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisUnreachableError(ConnectionError):
    """The Redis server named by the settings does not answer."""


def redis_client(url: str, *, socket_timeout: float | None = None) -> redis.Redis:
    """Open a binary-safe client of ``url`` (``socket_timeout`` bounds each reply, if given)."""
    import redis

    return redis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=socket_timeout,
    )


def checked_client(
    url: str, consequence: str, *, socket_timeout: float | None = None
) -> redis.Redis:
    """Open a client and ping it; an unreachable server says what to fix and what was not done."""
    import redis

    client = redis_client(url, socket_timeout=socket_timeout)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        raise RedisUnreachableError(
            f"Redis at {redact_url(url)} is unreachable ({error}); check the redis_rankflow "
            f"connection or RANKFLOW_REDIS_URL. {consequence}"
        ) from error
    return client

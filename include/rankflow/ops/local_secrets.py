"""The embedded default's secrets: one random password per Redis ACL user, made once per home.

``make`` writes ``$RANKFLOW_HOME/local-secrets.mk`` (mode 0600) the first time it runs and
includes it, so every target sees the writer's, the reader's and the admin's URLs of the local
Redis that ``make up`` starts with those users (:mod:`rankflow.store.acl`). A deployment sets
the same variables (or the ``redis_rankflow`` connection) to its own server instead; the file is
then not read. ``make clean`` deletes it with the rest of the home.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

from rankflow.config import DEFAULT_REDIS_URL, Settings

LOCAL_SECRETS_FILE = "local-secrets.mk"  # pragma: allowlist secret (a file name; Makefile too)
REDIS_USERS = {
    "RANKFLOW_REDIS_URL": "rankflow-writer",
    "RANKFLOW_REDIS_READER_URL": "rankflow-reader",
    "RANKFLOW_REDIS_ADMIN_URL": "rankflow-admin",
}


def user_url(base_url: str, username: str, password: str) -> str:
    """``base_url`` (``redis://host:port/db``) with an ACL user and password in it."""
    parsed = urlparse(base_url)
    return parsed._replace(netloc=f"{username}:{password}@{parsed.netloc}").geturl()


def local_secrets_text(base_url: str = DEFAULT_REDIS_URL) -> str:
    """The Make fragment exporting a fresh URL (random password) for each local Redis user."""
    lines = [
        "# rankflow's local secrets, written once by make (mode 0600); never commit or share it.",
        "# The embedded Redis's ACL users (docs/security.md); `make clean` deletes this file.",
    ]
    for variable, username in REDIS_USERS.items():
        password = secrets.token_urlsafe(24)  # URL- and Make-safe: [A-Za-z0-9_-]
        lines.append(f"export {variable} := {user_url(base_url, username, password)}")
    return "\n".join(lines) + "\n"


def local_secrets_path(settings: Settings) -> Path:
    """Where ``make`` keeps the local secrets of this home."""
    return settings.paths.home / LOCAL_SECRETS_FILE


def write_local_secrets(path: Path) -> bool:
    """Create the secrets file unless it exists (its passwords never change under a server)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        handle.write(local_secrets_text())
    return True

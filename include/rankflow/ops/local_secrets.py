"""The embedded default's secrets: one random password per Redis ACL user and for Postgres.

``make`` writes ``$RANKFLOW_HOME/local-secrets.mk`` (mode 0600) the first time it runs and
includes it, so every target sees the writer's, the reader's and the admin's URLs of the local
Redis that ``make up`` starts with those users (:mod:`rankflow.store.acl`), and the URL of the
local PostgreSQL server that holds ``make airflow``'s metadata database. A file written before a
variable existed gains it (the others keep their passwords). A deployment sets the same variables
(or the ``redis_rankflow`` connection) to its own servers instead; the file is then not read.
``make clean`` deletes it with the rest of the home.
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
    "RANKFLOW_REDIS_LOGGER_URL": "rankflow-logger",
}
POSTGRES_VARIABLE = "RANKFLOW_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://127.0.0.1:5439/airflow"  # make airflow's metadata database
POSTGRES_USER = "rankflow"
API_KEYS_VARIABLE = "RANKFLOW_API_KEYS"  # pragma: allowlist secret (a variable name)
API_KEY_FILE = "api-key"  # pragma: allowlist secret (a file name: the local caller key)


def user_url(base_url: str, username: str, password: str) -> str:
    """``base_url`` (``redis://host:port/db``) with an ACL user and password in it."""
    parsed = urlparse(base_url)
    return parsed._replace(netloc=f"{username}:{password}@{parsed.netloc}").geturl()


def local_secrets_lines(base_url: str = DEFAULT_REDIS_URL) -> dict[str, str]:
    """One ``export`` line per local secret variable, each with a fresh random password."""
    users = {**REDIS_USERS, POSTGRES_VARIABLE: POSTGRES_USER}
    bases = {**dict.fromkeys(REDIS_USERS, base_url), POSTGRES_VARIABLE: DEFAULT_POSTGRES_URL}
    lines = {
        variable: f"export {variable} := "
        # URL- and Make-safe: [A-Za-z0-9_-]
        f"{user_url(bases[variable], username, secrets.token_urlsafe(24))}"
        for variable, username in users.items()
    }
    lines[API_KEYS_VARIABLE] = f"export {API_KEYS_VARIABLE} := {secrets.token_urlsafe(32)}"
    return lines


def local_secrets_text(base_url: str = DEFAULT_REDIS_URL) -> str:
    """The Make fragment exporting a fresh URL (random password) for each local user."""
    lines = [
        "# rankflow's local secrets, written once by make (mode 0600); never commit or share it.",
        "# The embedded Redis's ACL users (docs/security.md) and make airflow's Postgres user;",
        "# `make clean` deletes this file.",
        *local_secrets_lines(base_url).values(),
    ]
    return "\n".join(lines) + "\n"


def defined_variables(text: str) -> set[str]:
    """The variables a secrets file already exports."""
    return {
        line.split()[1]
        for line in text.splitlines()
        if line.startswith("export ") and " := " in line
    }


def local_secrets_path(settings: Settings) -> Path:
    """Where ``make`` keeps the local secrets of this home."""
    return settings.paths.home / LOCAL_SECRETS_FILE


def write_local_secrets(path: Path) -> bool:
    """Create the secrets file, or add the variables it lacks; never change a password in it.

    Returns whether anything was written. The file's modification time is renewed either way
    (``make`` rebuilds it when this module is newer).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        missing = [
            line
            for variable, line in local_secrets_lines().items()
            if variable not in defined_variables(path.read_text())
        ]
        if missing:
            with path.open("a") as handle:
                handle.write("\n".join(missing) + "\n")
        path.touch()
        return bool(missing)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(local_secrets_text())
    return True


def write_api_key(path: Path, secrets_file: Path) -> bool:
    """Write the local caller's key (the first of ``RANKFLOW_API_KEYS``) to ``path`` (0600).

    Returns whether it was (re)written; an existing file holding that key is left alone.
    """
    key = ""
    for line in secrets_file.read_text().splitlines():
        if line.startswith(f"export {API_KEYS_VARIABLE} := "):
            key = line.split(" := ", 1)[1].split(",")[0].strip()
    if not key:
        raise RuntimeError(f"{secrets_file} exports no {API_KEYS_VARIABLE}")
    if path.exists() and path.read_text().strip() == key:
        return False
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return True

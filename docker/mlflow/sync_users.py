"""Create or update rankflow's MLflow users through the basic-auth app's REST API, as its admin.

The ``mlflow-users`` one-shot runs it once the server is healthy (idempotent, so on every start):

- ``rankflow-pipeline`` (MLFLOW_PIPELINE_PASSWORD): the Airflow tasks and CLI. It creates the
  experiment, the runs and the registered model, so MLflow makes it their manager: it trains,
  uploads reports and moves the ``champion`` alias.
- ``rankflow-reader`` (MLFLOW_READER_PASSWORD): the Airflow API server (the Ranking page reads
  the champion and its report). It has the server's default permission, READ: it cannot move
  an alias, register a version or upload anything to rankflow's runs.

The admin's credentials come from MLflow's standard client variables MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD, the server from MLFLOW_TRACKING_URI. A missing user is created, an
existing one gets the password of the environment (rotation = change ``.env``, restart). No
password is printed.
"""

from __future__ import annotations

import os
import sys

USERS = {
    "rankflow-pipeline": "MLFLOW_PIPELINE_PASSWORD",
    "rankflow-reader": "MLFLOW_READER_PASSWORD",
}


def wanted_users(env: dict[str, str]) -> dict[str, str]:
    """Return ``{username: password}`` from the environment; every password is required."""
    missing = [variable for variable in USERS.values() if not env.get(variable)]
    if missing:
        raise SystemExit(f"set {', '.join(missing)}: every MLflow user needs a password")
    return {username: env[variable] for username, variable in USERS.items()}


def sync(tracking_uri: str, users: dict[str, str]) -> None:
    """Create each user, or set its password, as the admin."""
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient

    client = AuthServiceClient(tracking_uri)
    for username, password in users.items():
        try:
            client.get_user(username)
        except RestException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            client.create_user(username, password)
            print(f"created MLflow user {username!r}")
            continue
        client.update_user_password(username, password)
        print(f"updated MLflow user {username!r}: password from the environment")


def main() -> int:
    """Sync the users against the server of MLFLOW_TRACKING_URI."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        raise SystemExit("MLFLOW_TRACKING_URI must be the MLflow server's http(s) URL")
    sync(uri, wanted_users(dict(os.environ)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Create or update the Airflow users of the FAB auth manager from the environment.

airflow-init runs it after the metadata database is migrated: one user per role, named and
authenticated by ``.env``::

    AIRFLOW_ADMIN_USERNAME / AIRFLOW_ADMIN_PASSWORD     role Admin  (everything, users and roles)
    AIRFLOW_OP_USERNAME / AIRFLOW_OP_PASSWORD           role Op     (runs, backfills, connections,
                                                                     the Ranking page's lookups)
    AIRFLOW_VIEWER_USERNAME / AIRFLOW_VIEWER_PASSWORD   role Viewer (reads DAGs, runs, the page)

Idempotent, so it runs on every start: a missing user is created, an existing one gets the
password and exactly the role of the environment (rotating a password = change ``.env``, run
airflow-init again). Passwords are read from the environment, never from the command line, and
never printed. Uses the same FAB security manager calls as ``airflow users create``.
"""

from __future__ import annotations

import os
import sys

ROLES = {"ADMIN": "Admin", "OP": "Op", "VIEWER": "Viewer"}


def wanted_users(env: dict[str, str]) -> list[tuple[str, str, str]]:
    """Return ``(username, password, role)`` for each role whose username is set."""
    users = []
    for key, role in ROLES.items():
        username = env.get(f"AIRFLOW_{key}_USERNAME", "").strip()
        if not username:
            continue
        password = env.get(f"AIRFLOW_{key}_PASSWORD", "")
        if not password:
            raise SystemExit(f"AIRFLOW_{key}_PASSWORD is empty: every user needs a password")
        users.append((username, password, role))
    return users


def sync(users: list[tuple[str, str, str]]) -> None:
    """Create each user, or reset its password and role, in the FAB tables."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        manager = appbuilder.sm
        for username, password, role_name in users:
            role = manager.find_role(role_name)
            if role is None:
                raise SystemExit(f"role {role_name} does not exist (is the FAB DB migrated?)")
            user = manager.find_user(username=username)
            if user is None:
                email = f"{username}@rankflow.invalid"
                manager.add_user(username, username, "rankflow", email, role, password)
                print(f"created Airflow user {username!r} with role {role_name}")
                continue
            user.roles = [role]
            user.active = True
            if not manager.update_user(user) or not manager.reset_password(user.id, password):
                raise SystemExit(f"could not update Airflow user {username!r}")
            print(f"updated Airflow user {username!r}: role {role_name}, password from .env")


def main() -> int:
    """Sync the users the environment names."""
    users = wanted_users(dict(os.environ))
    if not users:
        print("no AIRFLOW_*_USERNAME set: no Airflow users to create", file=sys.stderr)
        return 1
    sync(users)
    return 0


if __name__ == "__main__":
    sys.exit(main())

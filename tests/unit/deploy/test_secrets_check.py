"""The compose stack refuses placeholder secrets: docker/check-secrets.sh, run for real.

The script gets the environment compose would give the ``secrets-check`` one-shot (the
``x-env-secrets`` block interpolated with a ``.env``), once with ``.env.example``'s placeholders
and once with real values, and must refuse the first (naming the variables, never printing
their values) and accept the second.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_compose import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    SECRET_NAME,
    depends_on_targets,
    environment_of,
    interpolate,
    map_strings,
    read_env_file,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "docker" / "check-secrets.sh"
PLACEHOLDER = "change-me"
# services that keep a secret in a volume or serve with it: they start only after the check
GUARDED = ("postgres", "redis", "minio", "ranking")


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the check with exactly ``env`` (plus PATH), as the one-shot container does."""
    return subprocess.run(
        ["sh", str(SCRIPT)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def real_values(example: dict[str, str]) -> dict[str, str]:
    """``.env.example`` with every placeholder replaced by a fresh random secret."""
    return {
        name: secrets.token_hex(32) if value.startswith(PLACEHOLDER) else value
        for name, value in example.items()
    }


def compose_with(env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml interpolated with ``env`` (what ``docker compose`` would run)."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    resolved: dict[str, Any] = map_strings(raw, lambda s: interpolate(s, env))
    return resolved


def placeholder_secrets(example: dict[str, str]) -> set[str]:
    """The variables of ``.env.example`` that hold a placeholder secret."""
    return {name for name, value in example.items() if value.startswith(PLACEHOLDER)}


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


def test_placeholders_are_refused_by_name_without_values(example: dict[str, str]) -> None:
    env = environment_of(compose_with(example)["services"]["secrets-check"])
    result = run_check(env)
    assert result.returncode == 1
    named = set(re.findall(r"^  (\S+)$", result.stderr, re.M))
    assert named == placeholder_secrets(example)
    for name in named:
        value = example[name]
        assert value.removeprefix(PLACEHOLDER) not in result.stderr + result.stdout, name


def test_real_values_pass(example: dict[str, str]) -> None:
    env = environment_of(compose_with(real_values(example))["services"]["secrets-check"])
    result = run_check(env)
    assert result.returncode == 0, result.stderr
    assert "no placeholder secrets" in result.stdout


def test_one_placeholder_anywhere_in_a_value_is_refused(example: dict[str, str]) -> None:
    """A placeholder pasted into a URL is caught under the URL's variable name."""
    env = environment_of(compose_with(real_values(example))["services"]["secrets-check"])
    url = "postgresql://airflow:change-me-x@postgres/airflow"  # pragma: allowlist secret
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url
    result = run_check(env)
    assert result.returncode == 1
    assert re.findall(r"^  (\S+)$", result.stderr, re.M) == ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_a_short_jwt_secret_is_refused(example: dict[str, str]) -> None:
    env = environment_of(compose_with(real_values(example))["services"]["secrets-check"])
    env["AIRFLOW__API_AUTH__JWT_SECRET"] = "0123456789abcdef"  # pragma: allowlist secret
    result = run_check(env)
    assert result.returncode == 1
    assert "AIRFLOW__API_AUTH__JWT_SECRET is shorter than 32" in result.stderr
    assert "0123456789abcdef" not in result.stderr


def test_every_secret_of_env_example_is_checked(example: dict[str, str]) -> None:
    """secrets-check and airflow-init see every secret of .env (a new one cannot be forgotten)."""
    secret_names = {name for name in example if SECRET_NAME.search(name)}
    assert placeholder_secrets(example) <= secret_names | {"FERNET_KEY"}
    services = compose_with(example)["services"]
    for name in ("secrets-check", "airflow-init"):
        missing = secret_names - environment_of(services[name]).keys()
        assert not missing, f"{name} does not check {sorted(missing)}"


def test_the_check_runs_before_anything_keeps_a_secret(example: dict[str, str]) -> None:
    services = compose_with(example)["services"]
    assert services["secrets-check"].get("restart") == "no"
    for name in GUARDED:
        condition = depends_on_targets(services[name]).get("secrets-check")
        assert condition == "service_completed_successfully", name
    init = services["airflow-init"]["command"][1]
    assert init.lstrip().startswith("sh /opt/rankflow/docker/check-secrets.sh || exit 1")


def test_published_ports_bind_to_loopback_unless_configured(example: dict[str, str]) -> None:
    services = compose_with(example)["services"]
    published = {
        (name, port) for name, service in services.items() for port in service.get("ports", [])
    }
    assert ("airflow-apiserver", "127.0.0.1:8080:8080") in published
    wide_open = [entry for entry in published if not entry[1].startswith("127.0.0.1:")]
    assert not wide_open, f"ports published beyond loopback by default: {wide_open}"
    opened = compose_with({**example, "AIRFLOW_API_HOST_IP": "10.0.0.5"})["services"]
    assert opened["airflow-apiserver"]["ports"] == ["10.0.0.5:8080:8080"]

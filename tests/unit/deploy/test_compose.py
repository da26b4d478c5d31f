"""Static checks of the Docker deployment: docker-compose.yml, Dockerfile and .env.example.

No Docker engine is needed: the compose file is parsed with PyYAML (which resolves the YAML anchors
and ``<<`` merge keys as Compose does), validated against the Compose Specification's JSON Schema,
and checked for the project's own rules: every referenced path exists, the Airflow components
share the common definition, every dependency is a defined service, and no secret is written
literally. Variables are interpolated the way ``docker compose`` does, with the placeholder values
of ``.env.example``.

The schema is ``compose-spec.json`` in ``shared/schemas`` beside the checkout (override with
``RANKFLOW_COMPOSE_SCHEMA``); a missing schema fails the test rather than skipping it.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
REQUIREMENTS = REPO_ROOT / "requirements.txt"
SCHEMA_ENV_VAR = "RANKFLOW_COMPOSE_SCHEMA"
DEFAULT_SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"

COMMON_KEY = "x-airflow-common"
AIRFLOW_COMPONENTS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
# Components that only read Redis and MLflow get the readers' credentials in these variables.
READER_ONLY = {
    "airflow-apiserver": (
        "RANKFLOW_REDIS_URL",
        "AIRFLOW_CONN_REDIS_RANKFLOW",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    )
}
SUPPORT_SERVICES = ("postgres", "redis", "minio", "mlflow")
SOURCE_MOUNTS = {
    "dags": "/opt/airflow/dags",
    "jobs": "/opt/airflow/jobs",
    "include": "/opt/airflow/include",
    "plugins": "/opt/airflow/plugins",
}
EXPECTED_CONNECTIONS = {
    "AIRFLOW_CONN_SPARK_RANKFLOW": "spark",
    "AIRFLOW_CONN_REDIS_RANKFLOW": "redis",
    "AIRFLOW_CONN_S3_RANKFLOW": "aws",
}

# Names of variables / keys / flags that hold secrets. *_FILE names hold a path, not a secret.
SECRET_NAME = re.compile(r"(?i)PASSWORD|SECRET|TOKEN|(?:FERNET|ACCESS|API)_KEY|_AUTH$|REQUIREPASS")
INTERPOLATED = "__INTERPOLATED__"  # stands for any ${...} when looking for literal secrets

_DOLLAR_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_EXPRESSION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", re.S)
_URL_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://([^/@\s\"']*)@", re.I)


# --- helpers ----------------------------------------------------------------------------------


class MissingVariableError(ValueError):
    """A ``${VAR:?message}`` / ``${VAR?message}`` whose variable is missing."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$$``, ``$VAR`` and ``${VAR[:-|-|:?|?|:+|+]arg}`` as ``docker compose`` does."""

    def expand(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        expression = match.group(1) if match.group(1) is not None else match.group(2)
        parsed = _EXPRESSION.fullmatch(expression)
        if parsed is None:
            raise ValueError(f"invalid interpolation {match.group(0)!r}")
        name, operator, argument = parsed.groups()
        value = env.get(name)
        is_set = value is not None
        is_non_empty = bool(value)
        if operator in (":-", "-"):
            use_default = not is_non_empty if operator == ":-" else not is_set
            return interpolate(argument, env) if use_default else str(value)
        if operator in (":?", "?"):
            missing = not is_non_empty if operator == ":?" else not is_set
            if missing:
                raise MissingVariableError(f"{name}: {argument}")
            return str(value)
        if operator in (":+", "+"):
            present = is_non_empty if operator == ":+" else is_set
            return interpolate(argument, env) if present else ""
        return value or ""

    return _DOLLAR_TOKEN.sub(expand, text)


def variable_references(text: str) -> Iterator[tuple[str, str | None]]:
    """Yield ``(name, operator)`` for every variable referenced in ``text`` (``$$`` excluded)."""
    for match in _DOLLAR_TOKEN.finditer(text):
        if match.group(0) == "$$":
            continue
        expression = match.group(1) if match.group(1) is not None else match.group(2)
        parsed = _EXPRESSION.fullmatch(expression)
        assert parsed is not None, f"invalid interpolation {match.group(0)!r}"
        yield parsed.group(1), parsed.group(2)
        if parsed.group(3):
            yield from variable_references(parsed.group(3))


def mask_interpolations(text: str) -> str:
    """Replace every ``${...}`` / ``$VAR`` with :data:`INTERPOLATED` (``$$`` becomes ``$``)."""
    return _DOLLAR_TOKEN.sub(lambda m: "$" if m.group(0) == "$$" else INTERPOLATED, text)


def map_strings(node: Any, function: Any) -> Any:
    """Return a copy of a YAML tree with ``function`` applied to every string value."""
    if isinstance(node, str):
        return function(node)
    if isinstance(node, dict):
        return {key: map_strings(value, function) for key, value in node.items()}
    if isinstance(node, list):
        return [map_strings(value, function) for value in node]
    return node


def iter_strings(node: Any) -> Iterator[str]:
    """Yield every string value of a YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from iter_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from iter_strings(value)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``KEY=value`` file (comments and blank lines ignored)."""
    env: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, separator, value = stripped.partition("=")
        assert separator, f"{path.name}:{number}: expected KEY=value, got {line!r}"
        env[key.strip()] = value.strip()
    return env


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """Return a service's ``environment`` as a mapping (list form ``KEY=value`` accepted)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def depends_on_targets(service: Mapping[str, Any]) -> dict[str, str]:
    """Return ``{target: condition}`` of a service's ``depends_on`` (list or mapping form)."""
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        return dict.fromkeys(depends_on, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends_on.items()}


def bind_mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return ``(source, target)`` of the bind mounts of a service (short and long syntax)."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            if source.startswith((".", "/", "~")):
                mounts.append((source, rest.split(":")[0]))
        elif volume.get("type") == "bind":
            mounts.append((volume["source"], volume["target"]))
    return mounts


def named_volumes(service: Mapping[str, Any]) -> list[str]:
    """Return the named volumes a service mounts."""
    names = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, separator, _ = volume.partition(":")
            if separator and not source.startswith((".", "/", "~")):
                names.append(source)
        elif volume.get("type") == "volume" and volume.get("source"):
            names.append(volume["source"])
    return names


def schema_errors(validator: jsonschema.Draft7Validator, document: Any) -> list[str]:
    """Return readable messages for every schema violation of ``document``."""
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]


def pinned_version(requirements: Path, package: str) -> str:
    """Return the ``==`` pin of ``package`` in a requirements file."""
    pattern = re.compile(rf"^{re.escape(package)}(?:\[[^\]]*\])?==([^\s;#]+)", re.I | re.M)
    match = pattern.search(requirements.read_text())
    assert match, f"{package} is not pinned with == in {requirements.name}"
    return match.group(1)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    """The Compose Specification JSON Schema (draft-07); a missing file fails the test."""
    path = Path(os.environ.get(SCHEMA_ENV_VAR) or DEFAULT_SCHEMA)
    if not path.is_file():
        pytest.fail(
            f"Compose Specification schema not found at {path}. It lives in shared/schemas/ "
            f"beside the checkout; set {SCHEMA_ENV_VAR}=/path/to/compose-spec.json to point "
            "elsewhere. This test does not skip: without the schema the compose file goes "
            "unchecked."
        )
    schema: dict[str, Any] = json.loads(path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="module")
def validator(compose_schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(compose_schema)


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    """docker-compose.yml as written (anchors and merge keys resolved, variables not)."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], example_env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml interpolated with the placeholder values of .env.example."""
    resolved: dict[str, Any] = map_strings(raw_compose, lambda s: interpolate(s, example_env))
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


# --- schema -----------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec(
    validator: jsonschema.Draft7Validator, raw_compose: dict[str, Any], compose: dict[str, Any]
) -> None:
    errors = schema_errors(validator, raw_compose) + schema_errors(validator, compose)
    assert not errors, "docker-compose.yml violates the Compose Specification:\n" + "\n".join(
        errors
    )


BREAKAGES = {
    "unknown service key": lambda c: c["services"]["postgres"].update(imagee="postgres:16"),
    "unknown depends_on condition": lambda c: c["services"]["mlflow"]["depends_on"][
        "postgres"
    ].update(condition="service_ready"),
    "ports given as a mapping": lambda c: c["services"]["redis"].update(ports={"a": 1}),
    "unknown top-level key": lambda c: c.update(service={}),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_validation_rejects_a_broken_copy(
    validator: jsonschema.Draft7Validator, compose: dict[str, Any], breakage: str
) -> None:
    """The schema check can fail: each deliberately broken copy is rejected."""
    broken = copy.deepcopy(compose)
    BREAKAGES[breakage](broken)
    assert schema_errors(validator, compose) == []
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("$${HOSTNAME} $$1", env) == "${HOSTNAME} $1"
    assert interpolate("${SET} $SET ${UNSET}", env) == "v v "
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d  d"
    assert interpolate("${SET:+r}${UNSET:+r}", env) == "r"
    with pytest.raises(MissingVariableError, match="set it"):
        interpolate("${EMPTY:?set it}", env)
    assert list(variable_references("$${X} ${A:-d} $C")) == [("A", ":-"), ("C", None)]


# --- paths ------------------------------------------------------------------------------------


def test_referenced_paths_exist(compose: dict[str, Any], services: dict[str, Any]) -> None:
    base = COMPOSE_FILE.parent
    missing = []
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            if not (base / context).is_dir():
                missing.append(f"{name}: build context {context}")
            dockerfile = build.get("dockerfile") if isinstance(build, dict) else None
            if dockerfile and not (base / context / dockerfile).is_file():
                missing.append(f"{name}: dockerfile {dockerfile}")
        env_files = service.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, str) else env_files:
            spec = {"path": entry} if isinstance(entry, str) else entry
            if spec.get("required", True) and not (base / spec["path"]).is_file():
                missing.append(f"{name}: env_file {spec['path']}")
        for source, _ in bind_mounts(service):
            if not source.startswith("/") and not (base / source).exists():
                missing.append(f"{name}: bind mount source {source}")
        for volume in named_volumes(service):
            if volume not in (compose.get("volumes") or {}):
                missing.append(f"{name}: named volume {volume} is not declared under volumes:")
    assert not missing, "docker-compose.yml references what the repository lacks:\n" + "\n".join(
        missing
    )


def test_dockerfile_copy_sources_exist() -> None:
    missing = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        arguments = [word for word in words[1:] if not word.startswith("--")]
        if any(word.startswith("--from") for word in words):
            continue
        for source in arguments[:-1]:
            if not any(char in source for char in "*?[") and not (REPO_ROOT / source).exists():
                missing.append(source)
    assert not missing, f"the Dockerfile copies paths that do not exist: {missing}"


# --- services ---------------------------------------------------------------------------------


def test_airflow_components_use_the_common_definition(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    common = compose[COMMON_KEY]
    assert common.get("build"), f"{COMMON_KEY} must build the project's image"
    for name, command in AIRFLOW_COMPONENTS.items():
        assert name in services, f"service {name} is missing"
        service = services[name]
        assert service.get("command") == command, f"{name} must run `airflow {command}`"
        assert service.get("image") == common["image"], f"{name} does not use the common image"
        assert service.get("build") == common["build"], f"{name} does not build the common image"
        own = environment_of(service)
        for variable in READER_ONLY.get(name, ()):
            own.pop(variable)  # the reader's credentials instead of the writer's
        expected = environment_of(common)
        for variable in READER_ONLY.get(name, ()):
            expected.pop(variable)
        assert own == expected, f"{name} environment drifted"
        assert depends_on_targets(service).get("postgres") == "service_healthy", name
        assert depends_on_targets(service).get("airflow-init") == (
            "service_completed_successfully"
        ), f"{name} must wait for airflow-init"


def test_source_folders_are_mounted(compose: dict[str, Any], services: dict[str, Any]) -> None:
    for name in (COMMON_KEY, *AIRFLOW_COMPONENTS, "airflow-init"):
        definition = compose[COMMON_KEY] if name == COMMON_KEY else services[name]
        mounts = {os.path.normpath(source): target for source, target in bind_mounts(definition)}
        for folder, target in SOURCE_MOUNTS.items():
            assert mounts.get(folder) == target, f"{name} does not mount ./{folder} at {target}"


def test_supporting_services_exist_with_health_checks(services: dict[str, Any]) -> None:
    for name in (*SUPPORT_SERVICES, *AIRFLOW_COMPONENTS):
        assert name in services, f"service {name} is missing"
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for one_shot in ("airflow-init", "minio-init"):
        assert one_shot in services, f"one-shot service {one_shot} is missing"


def test_depends_on_targets_are_defined_services(services: dict[str, Any]) -> None:
    problems = []
    for name, service in services.items():
        for target, condition in depends_on_targets(service).items():
            if target not in services:
                problems.append(f"{name} depends on undefined service {target}")
                continue
            dependency = services[target]
            if condition == "service_healthy" and not dependency.get("healthcheck"):
                problems.append(f"{name} waits for {target} to be healthy; it has no healthcheck")
            if condition == "service_completed_successfully" and dependency.get(
                "restart", "no"
            ) not in ("no", False):
                problems.append(f"{name} waits for {target} to complete; it restarts forever")
    assert not problems, "\n".join(problems)


def test_connections_are_json_with_the_expected_types(compose: dict[str, Any]) -> None:
    environment = environment_of(compose[COMMON_KEY])
    for variable, conn_type in EXPECTED_CONNECTIONS.items():
        assert variable in environment, f"{variable} is not set in {COMMON_KEY}"
        connection = json.loads(environment[variable])
        assert connection["conn_type"] == conn_type, variable


def test_mlflow_artifact_bucket_is_created(services: dict[str, Any]) -> None:
    destination = next(
        arg.partition("=")[2]
        for arg in services["mlflow"]["command"]
        if arg.startswith("--artifacts-destination=")
    )
    bucket = destination.removeprefix("s3://").split("/")[0]
    assert environment_of(services["minio-init"]).get("MLFLOW_ARTIFACTS_BUCKET") == bucket


# --- secrets and variables ---------------------------------------------------------------------


def _literal_secrets(name: str, node: Any, where: str) -> Iterator[str]:
    """Yield a description of every literal secret under ``node`` (a masked YAML tree)."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}"
            if (
                SECRET_NAME.search(str(key))
                and not str(key).upper().endswith("_FILE")
                and isinstance(value, str | int)
                and str(value) != INTERPOLATED
            ):
                yield f"{path} = {value!r}"
            yield from _literal_secrets(name, value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if (
                isinstance(value, str)
                and SECRET_NAME.search(value)
                and value.startswith("-")
                and index + 1 < len(node)
                and "=" not in value
                and node[index + 1] != INTERPOLATED
            ):
                yield f"{where}[{index + 1}] (after {value}) = {node[index + 1]!r}"
            yield from _literal_secrets(name, value, f"{where}[{index}]")
    elif isinstance(node, str):
        for match in _URL_USERINFO.finditer(node):
            _, has_password, password = match.group(1).partition(":")
            if has_password and password != INTERPOLATED:
                yield f"{where}: password {password!r} in URL"
        stripped = node.strip()
        if stripped.startswith("{") and stripped.endswith("}"):
            try:
                parsed = json.loads(stripped)
            except json.JSONDecodeError:
                return
            yield from _literal_secrets(name, parsed, f"{where}<json>")
        flag, equals, value = stripped.partition("=")
        if equals and flag.startswith("-") and SECRET_NAME.search(flag) and value != INTERPOLATED:
            yield f"{where}: {flag}={value!r}"


def test_no_literal_secrets(raw_compose: dict[str, Any]) -> None:
    masked = map_strings(raw_compose, mask_interpolations)
    found = [
        problem
        for name, service in {COMMON_KEY: masked[COMMON_KEY], **masked["services"]}.items()
        for problem in _literal_secrets(name, service, name)
    ]
    assert not found, "secrets must come from ${VAR} interpolation:\n" + "\n".join(found)


def test_literal_secret_detection_catches_each_form() -> None:
    service = {
        "environment": {"POSTGRES_PASSWORD": "airflow", "AIRFLOW__CORE__AUTH_MANAGER": "x.Y"},
        "command": ["redis-server", "--requirepass", "hunter2"],
        "entrypoint": ["tool", "--password=hunter2"],
        "healthcheck": {"test": "postgresql://airflow:airflow@postgres/airflow"},
        "labels": {"conn": '{"conn_type": "redis", "password": "hunter2"}'},
    }
    found = list(_literal_secrets("svc", service, "svc"))
    assert len(found) == 5, found
    masked = map_strings(
        {"environment": {"REDIS_PASSWORD": "${REDIS_PASSWORD:?x}"}}, mask_interpolations
    )
    assert not list(_literal_secrets("svc", masked, "svc"))


def test_secret_variables_have_no_defaults(raw_compose: dict[str, Any]) -> None:
    offenders = sorted(
        {
            f"{name} (operator {operator})"
            for text in iter_strings(raw_compose)
            for name, operator in variable_references(text)
            if SECRET_NAME.search(name) and operator != ":?"
        }
    )
    assert not offenders, f"secret variables must be required with ${{VAR:?...}}: {offenders}"


def test_env_example_lists_exactly_the_compose_variables(
    raw_compose: dict[str, Any], example_env: dict[str, str]
) -> None:
    used = {name for text in iter_strings(raw_compose) for name, _ in variable_references(text)}
    assert sorted(used - example_env.keys()) == [], ".env.example lacks variables"
    assert sorted(example_env.keys() - used) == [], ".env.example has unused variables"


def test_env_example_holds_only_placeholder_secrets(example_env: dict[str, str]) -> None:
    real_looking = [
        name
        for name, value in example_env.items()
        if re.search(r"PASSWORD|SECRET|FERNET_KEY|API_KEY", name)
        and not value.startswith("change-me")
    ]
    assert not real_looking, f"give these a change-me placeholder: {real_looking}"


def test_every_required_variable_stops_compose_when_missing(raw_compose: dict[str, Any]) -> None:
    required = {
        name
        for text in iter_strings(raw_compose)
        for name, operator in variable_references(text)
        if operator == ":?"
    }
    assert {"POSTGRES_PASSWORD", "REDIS_WRITER_PASSWORD", "FERNET_KEY"} <= required
    with pytest.raises(MissingVariableError):
        map_strings(raw_compose, lambda s: interpolate(s, {}))


# --- versions kept in step with requirements.txt ------------------------------------------------


def test_images_match_the_pinned_versions(services: dict[str, Any]) -> None:
    base = re.search(r"^FROM\s+apache/airflow:(\S+)-python(\S+)", DOCKERFILE.read_text(), re.M)
    assert base, "the Dockerfile must extend apache/airflow:<version>-python<x.y>"
    assert base.group(1) == pinned_version(REQUIREMENTS, "apache-airflow")
    assert base.group(2) == "3.11"
    mlflow_tag = services["mlflow"]["image"].rpartition(":")[2]
    assert mlflow_tag.removeprefix("v").removesuffix("-full") == pinned_version(
        REQUIREMENTS, "mlflow"
    )


def test_the_compose_redis_acl_matches_the_library_rules(services: dict[str, Any]) -> None:
    """The compose entrypoint writes the users of rankflow.store.acl, rule for rule."""
    from rankflow.store.acl import (
        ADMIN_RULES,
        DEFAULT_USER_LINE,
        LOGGER_RULES,
        READER_RULES,
        WRITER_RULES,
    )

    redis = services["redis"]
    script_path = REPO_ROOT / "docker" / "redis" / "acl-entrypoint.sh"
    assert f"./docker/redis/acl-entrypoint.sh:{redis['entrypoint'][1]}:ro" in redis["volumes"]
    script = script_path.read_text()
    prefix = "${prefix}"
    for user, rules in (
        ("rankflow-writer", WRITER_RULES),
        ("rankflow-reader", READER_RULES),
        ("rankflow-admin", ADMIN_RULES),
        ("rankflow-logger", LOGGER_RULES),
    ):
        variable = f"REDIS_{user.split('-')[1].upper()}_PASSWORD"
        line = f'user {user} on #$(hash "${variable}") '
        assert line + rules.format(prefix=prefix) + '"' in script, user
        assert redis["environment"][variable].startswith("change-me"), variable
        assert variable in script.partition("unset ")[2].splitlines()[0].split(), variable
    assert DEFAULT_USER_LINE in script
    assert "--requirepass" not in redis["command"]
    assert redis["environment"]["RANKFLOW_REDIS_KEY_PREFIX"] == "rf"


def test_the_compose_redis_entrypoint_writes_the_library_acl_file(tmp_path: Path) -> None:
    """Run for real: the file it hands to redis-server is ``acl_file_text`` byte for byte.

    A copy of the script writes its file under ``tmp_path`` (the one change); stubs on ``PATH``
    stand in for the image's ``docker-entrypoint.sh`` (printing what redis-server would get) and
    for ``id`` (not root: no ``chown redis``).
    """
    import subprocess

    from rankflow.store.acl import Credentials, acl_file_text

    script = (REPO_ROOT / "docker" / "redis" / "acl-entrypoint.sh").read_text()
    acl = tmp_path / "users.acl"
    assert script.count("acl=/tmp/rankflow-users.acl\n") == 1
    copy_path = tmp_path / "acl-entrypoint.sh"
    copy_path.write_text(script.replace("acl=/tmp/rankflow-users.acl\n", f"acl={acl}\n"))
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "id").write_text("#!/bin/sh\necho 999\n")
    (stubs / "docker-entrypoint.sh").write_text(
        '#!/bin/sh\necho "args: $*"\nenv | grep "^REDIS_" || echo "no REDIS_ variables"\n'
    )
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    users = {
        role: Credentials(f"rankflow-{role}", f"{role}-{os.urandom(8).hex()}")
        for role in ("writer", "reader", "admin", "logger")
    }
    env = {f"REDIS_{role.upper()}_PASSWORD": user.password for role, user in users.items()}
    result = subprocess.run(
        ["sh", str(copy_path), "redis-server", "--appendonly", "yes"],
        env={"PATH": f"{stubs}:{os.environ['PATH']}", "RANKFLOW_REDIS_KEY_PREFIX": "rf", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"args: redis-server --appendonly yes --aclfile {acl}" in result.stdout
    assert "no REDIS_ variables" in result.stdout  # the passwords do not reach redis-server
    assert acl.read_text() == acl_file_text("rf", **users)
    assert acl.stat().st_mode & 0o077 == 0
    for password in env.values():
        assert password not in acl.read_text() + result.stdout + result.stderr
    missing = subprocess.run(
        ["sh", str(copy_path), "redis-server"],
        env={"PATH": f"{stubs}:{os.environ['PATH']}", **env, "REDIS_LOGGER_PASSWORD": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert missing.returncode != 0
    assert "REDIS_LOGGER_PASSWORD" in missing.stderr


def test_the_api_server_gets_no_redis_writer_credentials(services: dict[str, Any]) -> None:
    env = services["airflow-apiserver"]["environment"]
    assert "rankflow-reader" in env["RANKFLOW_REDIS_URL"]
    assert "WRITER" not in env["RANKFLOW_REDIS_URL"] + env["AIRFLOW_CONN_REDIS_RANKFLOW"]


# --- authentication (docs/security.md) ----------------------------------------------------------

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def test_airflow_uses_the_fab_auth_manager_with_users_from_env(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """FAB users and roles in Postgres, one user per role created by airflow-init from .env."""
    common = environment_of(compose[COMMON_KEY])
    assert common["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    assert not [name for name in common if "SIMPLE_AUTH_MANAGER" in name]
    init = services["airflow-init"]
    script = "/opt/rankflow/docker/airflow/sync_users.py"
    assert f"/entrypoint python {script}" in init["command"][1]
    assert (REPO_ROOT / "docker" / "airflow" / "sync_users.py").is_file()
    mounts = dict(bind_mounts(compose[COMMON_KEY]))
    assert mounts.get("./docker") == "/opt/rankflow/docker"
    env = environment_of(init)
    for role in ("ADMIN", "OP", "VIEWER"):
        assert env[f"AIRFLOW_{role}_USERNAME"], role
        assert env[f"AIRFLOW_{role}_PASSWORD"].startswith("change-me"), role
    for name in AIRFLOW_COMPONENTS:
        assert not any(
            key.startswith("AIRFLOW_") and key.endswith("_PASSWORD")
            for key in environment_of(services[name])
        ), f"{name} must not see the Airflow users' passwords"


def test_mlflow_runs_its_basic_auth_app(services: dict[str, Any]) -> None:
    mlflow = services["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    entrypoint = mlflow["entrypoint"][1]
    assert f"./docker/mlflow/auth-entrypoint.sh:{entrypoint}:ro" in mlflow["volumes"]
    env = environment_of(mlflow)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("change-me")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("change-me")
    users = services["mlflow-users"]
    assert depends_on_targets(users) == {"mlflow": "service_healthy"}
    assert f"./docker/mlflow/sync_users.py:{users['command'][1]}:ro" in users["volumes"]
    for name in ("airflow-scheduler", "airflow-apiserver"):
        condition = depends_on_targets(services[name]).get("mlflow-users")
        assert condition == "service_completed_successfully", name


def test_mlflow_clients_authenticate_least_privileged(services: dict[str, Any]) -> None:
    """Tasks write as rankflow-pipeline; the API server (the page) only reads as rankflow-reader."""
    example = read_env_file(ENV_EXAMPLE)
    for name in AIRFLOW_COMPONENTS:
        env = environment_of(services[name])
        reader = name == "airflow-apiserver"
        user, variable = (
            ("rankflow-reader", "MLFLOW_READER_PASSWORD")
            if reader
            else ("rankflow-pipeline", "MLFLOW_PIPELINE_PASSWORD")
        )
        assert env["MLFLOW_TRACKING_USERNAME"] == user, name
        assert env["MLFLOW_TRACKING_PASSWORD"] == example[variable], name


# --- the ranking service (docs/feature-store.md, docs/security.md) --------------------------------

RANKING = "ranking"
RANKING_PORT = "8800"
# Every secret the ranking service may see: the readers' passwords, the logger's and its callers'
# keys. No writer, admin, S3, pipeline or Airflow secret.
RANKING_SECRETS = {
    "REDIS_READER_PASSWORD",
    "REDIS_LOGGER_PASSWORD",
    "MLFLOW_READER_PASSWORD",
    "RANKFLOW_API_KEYS",
}


def test_the_ranking_service_matches_the_compose_spec(
    validator: jsonschema.Draft7Validator, raw_compose: dict[str, Any], compose: dict[str, Any]
) -> None:
    for document in (raw_compose, compose):
        alone = {"services": {RANKING: document["services"][RANKING]}}
        assert schema_errors(validator, alone) == []


def test_the_ranking_service_runs_rankflow_serve_from_the_airflow_image(
    compose: dict[str, Any], services: dict[str, Any], example_env: dict[str, str]
) -> None:
    common, ranking = compose[COMMON_KEY], services[RANKING]
    assert ranking.get("image") == common["image"], "ranking does not use the common image"
    assert ranking.get("build") == common["build"], "ranking does not build the common image"
    assert ranking.get("user") == common["user"]
    # the image's entrypoint runs `bash -c` as given, once its database check is off
    assert "entrypoint" not in ranking
    assert environment_of(ranking)["CONNECTION_CHECK_MAX_COUNT"] == "0"
    shell, flag, line = ranking["command"]
    assert (shell, flag) == ("bash", "-c")
    workers = example_env["RANKING_WORKERS"]
    assert line.split() == [
        "exec", "rankflow", "serve", "--host", "0.0.0.0", "--port", RANKING_PORT,
        "--workers", workers,
    ]  # fmt: skip
    assert ranking.get("restart") == services["airflow-apiserver"]["restart"] == "always"


def test_the_ranking_service_gets_the_readers_and_the_loggers_credentials_only(
    raw_compose: dict[str, Any],
    compose: dict[str, Any],
    services: dict[str, Any],
    example_env: dict[str, str],
) -> None:
    """Redis as rankflow-reader (even RANKFLOW_REDIS_URL), the log as rankflow-logger."""
    from rankflow.config import load_settings
    from rankflow.store.acl import Credentials, url_credentials

    env = environment_of(services[RANKING])
    reader_url = environment_of(compose[COMMON_KEY])["RANKFLOW_REDIS_READER_URL"]
    assert env["RANKFLOW_REDIS_URL"] == env["RANKFLOW_REDIS_READER_URL"] == reader_url
    logger = url_credentials(env["RANKFLOW_REDIS_LOGGER_URL"])
    assert logger == Credentials("rankflow-logger", example_env["REDIS_LOGGER_PASSWORD"])
    assert env["RANKFLOW_REDIS_LOGGER_URL"].endswith("@redis:6379/0")
    # what the library makes of them: lookups as the reader, the serving log as the logger
    redis = load_settings(env).redis
    assert redis.lookup_url == redis.url == reader_url
    assert redis.log_url == env["RANKFLOW_REDIS_LOGGER_URL"]
    raw = raw_compose["services"][RANKING]
    referenced = {name for text in iter_strings(raw) for name, _ in variable_references(text)}
    assert {name for name in referenced if SECRET_NAME.search(name)} == RANKING_SECRETS
    assert "WRITER" not in json.dumps(raw)
    resolved = json.dumps(services[RANKING])
    for name, value in example_env.items():
        if SECRET_NAME.search(name) and name not in RANKING_SECRETS:
            assert value not in resolved, f"ranking sees {name}"


def test_the_ranking_service_reads_mlflow_as_the_reader(
    compose: dict[str, Any], services: dict[str, Any], example_env: dict[str, str]
) -> None:
    env = environment_of(services[RANKING])
    common = environment_of(compose[COMMON_KEY])
    assert env["MLFLOW_TRACKING_URI"] == common["MLFLOW_TRACKING_URI"]
    api_server = environment_of(services["airflow-apiserver"])
    for variable in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert env[variable] == api_server[variable], variable
    assert env["MLFLOW_TRACKING_USERNAME"] == "rankflow-reader"
    assert env["MLFLOW_TRACKING_PASSWORD"] == example_env["MLFLOW_READER_PASSWORD"]


def test_the_ranking_service_requires_its_keys_and_logger_password_from_env(
    raw_compose: dict[str, Any], services: dict[str, Any], example_env: dict[str, str]
) -> None:
    raw = environment_of(raw_compose["services"][RANKING])
    assert raw["RANKFLOW_API_KEYS"] == "${RANKFLOW_API_KEYS:?set RANKFLOW_API_KEYS in .env}"
    assert (
        "${REDIS_LOGGER_PASSWORD:?set REDIS_LOGGER_PASSWORD in .env}"
        in (raw["RANKFLOW_REDIS_LOGGER_URL"])
    )
    assert example_env["RANKFLOW_API_KEYS"].startswith("change-me")
    for variable in ("RANKFLOW_API_KEYS", "REDIS_LOGGER_PASSWORD"):
        for unset in ({}, {variable: ""}):
            env = {**{k: v for k, v in example_env.items() if k != variable}, **unset}
            with pytest.raises(MissingVariableError, match=variable):
                map_strings(raw_compose["services"][RANKING], lambda s, e=env: interpolate(s, e))
    # it never serves with a placeholder key: secrets-check refuses them first
    assert depends_on_targets(services[RANKING])["secrets-check"] == (
        "service_completed_successfully"
    )
    checked = environment_of(services["secrets-check"])
    assert {"RANKFLOW_API_KEYS", "REDIS_LOGGER_PASSWORD"} <= checked.keys()


def test_the_ranking_service_reads_the_lake_read_only(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """The snapshot path the tasks record in Redis resolves inside the service's mount."""
    from rankflow.config import load_settings

    common, ranking = compose[COMMON_KEY], services[RANKING]
    env = environment_of(ranking)
    assert env["RANKFLOW_HOME"] == environment_of(common)["RANKFLOW_HOME"]
    # short syntax, source:target:mode
    mounts = {source: rest for source, *rest in (v.split(":") for v in ranking["volumes"])}
    assert all(options[-1] == "ro" for options in mounts.values()), ranking["volumes"]
    data_target = next(v.split(":")[1] for v in common["volumes"] if v.startswith("rankflow-data:"))
    assert mounts["rankflow-data"][0] == data_target
    snapshot = load_settings(env).paths.table("online/feature_versions/fv/items.arrow")
    tasks_snapshot = load_settings(environment_of(services["airflow-scheduler"])).paths.table(
        "online/feature_versions/fv/items.arrow"
    )
    assert snapshot == tasks_snapshot
    assert snapshot.startswith(data_target + "/")
    # the same library source as the tasks (the bind-mounted include/ shadows the image's copy)
    assert mounts["./include"][0] == SOURCE_MOUNTS["include"]
    assert env["PYTHONPATH"] == environment_of(common)["PYTHONPATH"]
    # what the workers write (their metrics) goes to a tmpfs, not under RANKFLOW_HOME
    assert env["PROMETHEUS_MULTIPROC_DIR"] in ranking["tmpfs"]


def test_the_ranking_service_has_a_health_check_and_waits_for_its_stores(
    services: dict[str, Any],
) -> None:
    ranking = services[RANKING]
    check = ranking["healthcheck"]
    assert {"interval", "timeout", "retries", "start_period"} <= check.keys()
    kind, tool, *arguments = check["test"]
    assert kind == "CMD"
    # a tool the image has: the API server's check (same image) uses curl
    assert tool == services["airflow-apiserver"]["healthcheck"]["test"][1] == "curl"
    url = arguments[-1]
    assert url in (
        f"http://localhost:{RANKING_PORT}/healthz",
        f"http://localhost:{RANKING_PORT}/readyz",
    )
    assert "--fail" in arguments
    assert depends_on_targets(ranking) == {
        "secrets-check": "service_completed_successfully",
        "redis": "service_healthy",
        "mlflow-users": "service_completed_successfully",  # the MLflow reader exists
        "kafka-init": "service_completed_successfully",  # with the kafka profile only
    }


def test_the_ranking_port_binds_to_loopback_unless_configured(
    raw_compose: dict[str, Any], services: dict[str, Any], example_env: dict[str, str]
) -> None:
    assert raw_compose["services"][RANKING]["ports"] == [
        "${RANKING_HOST_IP:-127.0.0.1}:${RANKING_PORT:-8800}:" + RANKING_PORT
    ]
    assert example_env["RANKING_HOST_IP"] == "127.0.0.1"
    assert services[RANKING]["ports"] == [f"127.0.0.1:{example_env['RANKING_PORT']}:8800"]
    unset = {k: v for k, v in example_env.items() if not k.startswith("RANKING_")}
    for env, address in (
        (unset, "127.0.0.1"),
        ({**example_env, "RANKING_HOST_IP": "10.0.0.5"}, "10.0.0.5"),
    ):
        ports = map_strings(
            raw_compose["services"][RANKING]["ports"], lambda s, e=env: interpolate(s, e)
        )
        assert ports == [f"{address}:8800:8800"]


@pytest.mark.parametrize("name", ["stream", "stream-landing"])
def test_the_stream_services_run_rankflow_stream_as_the_writer_only(
    raw_compose: dict[str, Any], services: dict[str, Any], example_env: dict[str, str], name: str
) -> None:
    """`rankflow stream` (and `--land`) from the Airflow image, Redis's writer, no other secret."""
    from rankflow.store.acl import Credentials, url_credentials

    stream = services[name]
    assert stream["image"] == services[RANKING]["image"]
    assert stream["command"][-1].split()[:3] == ["exec", "rankflow", "stream"]
    assert ("--land" in stream["command"][-1]) == (name == "stream-landing")
    env = environment_of(stream)
    writer = url_credentials(env["RANKFLOW_REDIS_URL"])
    assert writer == Credentials("rankflow-writer", example_env["REDIS_WRITER_PASSWORD"])
    raw = raw_compose["services"][name]
    referenced = {name for text in iter_strings(raw) for name, _ in variable_references(text)}
    assert {name for name in referenced if SECRET_NAME.search(name)} == {"REDIS_WRITER_PASSWORD"}
    assert "redis" in stream["depends_on"]


def test_kafka_is_a_profile_whose_topic_an_init_creates_before_the_log_users_start(
    raw_compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """`--profile kafka`: one KRaft node, its topic made once; the default stays Redis Streams."""
    raw = raw_compose["services"]
    kafka, init = raw["kafka"], raw["kafka-init"]
    assert kafka["profiles"] == init["profiles"] == ["kafka"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"])  # pinned
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # kafka-init makes it
    assert "ports" not in kafka  # inside the compose network only
    assert "kafka-data" in raw_compose["volumes"]
    assert init["command"][-1] == "exec rankflow kafka topic"
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in (RANKING, "stream", "stream-landing"):
        environment = raw[name]["environment"]
        assert environment["RANKFLOW_STREAM_BACKEND"] == "${RANKFLOW_STREAM_BACKEND:-redis}"
        assert environment["RANKFLOW_KAFKA_BOOTSTRAP"] == "${RANKFLOW_KAFKA_BOOTSTRAP:-kafka:9092}"
        needs = raw[name]["depends_on"]["kafka-init"]
        assert needs == {**needs, "condition": "service_completed_successfully", "required": False}
    assert environment_of(services["stream"])["RANKFLOW_STREAM_BACKEND"] == "redis"


def test_the_stream_backend_setting_follows_its_environment_variable() -> None:
    from rankflow.config import load_pipeline_config

    assert load_pipeline_config(None, {})["stream"]["backend"] == "redis"
    kafka = load_pipeline_config(None, {"RANKFLOW_STREAM_BACKEND": "kafka"})["stream"]
    assert kafka["backend"] == "kafka"

"""The one configuration module: paths, service endpoints and pipeline parameters.

Everything is built once by :func:`load_settings` from environment variables and the versioned
YAML file (``defaults.yaml`` deep-merged with ``$RANKFLOW_CONFIG``), then passed explicitly.
Nothing here touches the network or the file system beyond reading that YAML.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# the surfaces a marketplace app shows ranked lists on (one Redis namespace each)
SURFACES = ("home", "search", "similar")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6390/0"
DEFAULT_S3_ENDPOINT = "http://127.0.0.1:9010"
DEFAULT_PUBLICATION_DEADLINE = time(6, 0)  # lists out by 06:00 UTC the morning after their day
DEFAULT_STREAM_WATCH_RETRY = timedelta(minutes=1)  # the watch's second look: a restart's time


def repo_root() -> Path:
    """Return the project checkout root (``RANKFLOW_ROOT`` or the folder holding ``include/``)."""
    if "RANKFLOW_ROOT" in os.environ:
        return Path(os.environ["RANKFLOW_ROOT"]).resolve()
    return Path(__file__).resolve().parents[2]


def expand_env(value: Any, env: Mapping[str, str]) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree."""
    if isinstance(value, str):
        return ENV_PATTERN.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    return value


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in, recursing into nested mappings."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_pipeline_config(
    path: str | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Load the default pipeline YAML, merged with the override file at ``path`` if given."""
    env = os.environ if env is None else env
    text = resources.files("rankflow").joinpath("defaults.yaml").read_text()
    config: dict[str, Any] = yaml.safe_load(text)
    if path:
        override = yaml.safe_load(Path(path).read_text()) or {}
        config = deep_merge(config, override)
    expanded: dict[str, Any] = expand_env(config, env)
    return expanded


def config_hash(config: Mapping[str, Any]) -> str:
    """Return a stable short hash of a configuration tree (logged with every model)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Paths:
    """Where the deployment keeps its state: under ``home``, the lake wherever it is told.

    ``lake`` is an absolute local path or an ``s3a://bucket/prefix`` URI (``RANKFLOW_LAKE``):
    on a cluster the executors read and write it there, never the driver's disk.
    """

    home: Path
    raw: Path
    lake: str
    mlflow: Path
    jars: Path  # jars rankflow fetched once (hadoop-aws for an S3 lake): RANKFLOW_JARS

    def table(self, name: str) -> str:
        """Return the location of a Delta table such as ``bronze/events``."""
        return f"{self.lake.rstrip('/')}/{name}"

    @property
    def lake_on_s3(self) -> bool:
        """Whether the lake is on S3 (Spark reads it through ``s3a``, pyarrow through ``s3``)."""
        return self.lake.startswith("s3a://")


LAKE_SCHEMES = ("s3a://", "file://")


def lake_location(text: str) -> str:
    """Normalise ``RANKFLOW_LAKE``: an ``s3a://bucket/prefix`` URI or an absolute local path.

    Raises:
        ValueError: another scheme (``s3://`` is not Hadoop's name for S3: use ``s3a://``), or
            an S3 URI without a bucket.
    """
    if "://" not in text:
        return str(Path(text).expanduser().resolve())
    if not text.startswith(LAKE_SCHEMES):
        raise ValueError(
            f"RANKFLOW_LAKE={text!r}: use a local path, file:///path or s3a://bucket/prefix "
            "(Spark's Hadoop file system names S3 s3a)"
        )
    if text.startswith("file://"):
        return str(Path(text.removeprefix("file://")).resolve())
    bucket = text.removeprefix("s3a://").split("/", 1)[0]
    if not bucket:
        raise ValueError(f"RANKFLOW_LAKE={text!r} names no bucket")
    return text.rstrip("/")


@dataclass(frozen=True)
class RedisSettings:
    """Connection and key layout of the serving store.

    ``url`` is the writer's (publish, repair, monitoring); ``reader_url`` the read-only user's
    (lookups, the Ranking page, the ranking service); ``logger_url`` the serving log's (``XADD``
    to the ``log:`` streams only); ``admin_url`` an operator's, used only to start the embedded
    server with its ACL users and by the tests to clean up. Each carries its ACL user and
    password in the URL's user-info part and TLS (``rediss://`` with
    ``?ssl_ca_certs=/path/ca.pem``); see docs/security.md.
    """

    url: str
    key_prefix: str
    old_version_ttl_seconds: int
    mset_batch: int
    abandoned_after_seconds: int = (
        3600  # a version still `writing` this long after begin is reclaimed
    )
    embedded_maxmemory: str = "4gb"  # `maxmemory` of the redis-server `make up` starts (noeviction)
    reader_url: str = ""  # empty: the writer's URL
    admin_url: str = ""
    logger_url: str = ""  # the ranking service's serving log (XADD only); empty: the writer's

    @property
    def log_url(self) -> str:
        """The URL the ranking service appends its serving log with."""
        return self.logger_url or self.url

    @property
    def lookup_url(self) -> str:
        """The URL readers connect with: the read-only user's when one is configured."""
        return self.reader_url or self.url


@dataclass(frozen=True)
class S3Settings:
    """Endpoint and layout of the ranked-list exports."""

    endpoint_url: str | None
    bucket: str
    region: str
    prefix: str


@dataclass(frozen=True)
class SparkSettings:
    """How jobs open their Spark session."""

    master: str
    shuffle_partitions: int
    connect_url: str | None = None  # a Spark Connect server `make up` runs locally, if set
    conf: dict[str, str] = field(default_factory=dict)  # more --conf for every step


def spark_conf(text: str) -> dict[str, str]:
    """Parse ``RANKFLOW_SPARK_CONF``: a JSON object of Spark settings (``{"spark.x": "1g"}``).

    Raises:
        ValueError: the text is not a JSON object of ``spark.*`` names.
    """
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"RANKFLOW_SPARK_CONF is not JSON: {error.msg}") from None
    if not isinstance(parsed, dict) or not all(str(k).startswith("spark.") for k in parsed):
        raise ValueError("RANKFLOW_SPARK_CONF must be a JSON object of spark.* settings")
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in parsed.items()}


@dataclass(frozen=True)
class Settings:
    """Everything a job, task or command needs to know, built once."""

    paths: Paths
    redis: RedisSettings
    s3: S3Settings
    spark: SparkSettings
    mlflow_tracking_uri: str
    model_name: str
    pipeline: dict[str, Any] = field(repr=False)

    @property
    def pipeline_hash(self) -> str:
        """Hash of the pipeline configuration, recorded with every model."""
        return config_hash(self.pipeline)

    @property
    def default_surface(self) -> str:
        """The surface a command or step works on when none is given."""
        return str(self.pipeline["scoring"]["surface"])

    @property
    def default_top_k(self) -> int:
        """The length of each ranked list when none is given."""
        return int(self.pipeline["scoring"]["top_k"])


def s3_endpoint(env: Mapping[str, str]) -> str | None:
    """The S3 endpoint (``RANKFLOW_S3_ENDPOINT``): unset means the local one, empty AWS's."""
    return env.get("RANKFLOW_S3_ENDPOINT", DEFAULT_S3_ENDPOINT) or None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from environment variables and the pipeline YAML."""
    env = os.environ if env is None else env
    home = Path(env.get("RANKFLOW_HOME", str(repo_root() / ".rankflow"))).resolve()
    data = home / "data"
    pipeline = load_pipeline_config(env.get("RANKFLOW_CONFIG"), env)
    publish = pipeline["publish"]
    mlflow_dir = home / "mlflow"
    return Settings(
        paths=Paths(
            home=home,
            raw=data / "raw",
            lake=lake_location(env.get("RANKFLOW_LAKE") or str(data / "lake")),
            mlflow=mlflow_dir,
            jars=Path(env.get("RANKFLOW_JARS") or home / "jars").resolve(),
        ),
        redis=RedisSettings(
            url=env.get("RANKFLOW_REDIS_URL", DEFAULT_REDIS_URL),
            key_prefix=publish["redis_key_prefix"],
            old_version_ttl_seconds=int(publish["old_version_ttl_seconds"]),
            mset_batch=int(publish["mset_batch"]),
            abandoned_after_seconds=int(publish["abandoned_after_seconds"]),
            embedded_maxmemory=env.get("RANKFLOW_REDIS_MAXMEMORY", "4gb"),
            reader_url=env.get("RANKFLOW_REDIS_READER_URL", ""),
            admin_url=env.get("RANKFLOW_REDIS_ADMIN_URL", ""),
            logger_url=env.get("RANKFLOW_REDIS_LOGGER_URL", ""),
        ),
        s3=S3Settings(
            endpoint_url=s3_endpoint(env),
            bucket=env.get("RANKFLOW_S3_BUCKET", "rankflow"),
            region=env.get("AWS_DEFAULT_REGION", "us-east-1"),
            prefix=publish["s3_prefix"],
        ),
        spark=SparkSettings(
            master=env.get("RANKFLOW_SPARK_MASTER", "local[*]"),
            shuffle_partitions=int(env.get("RANKFLOW_SHUFFLE_PARTITIONS", "8")),
            connect_url=env.get("RANKFLOW_SPARK_CONNECT") or None,
            conf=spark_conf(env.get("RANKFLOW_SPARK_CONF", "")),
        ),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir / 'mlflow.db'}"),
        model_name=env.get("RANKFLOW_MODEL_NAME", "rankflow-ranker"),
        pipeline=pipeline,
    )


def stream_watch_retry_delay(env: Mapping[str, str] | None = None) -> timedelta:
    """How long the stream watch waits before its second look (``..._WATCH_RETRY_SECONDS``).

    A partition found behind is looked at once more after this delay before anyone is alerted:
    an updater restarting is not an incident. ``RANKFLOW_STREAM_WATCH_RETRY_SECONDS`` sets it;
    unset means 60 s. Read by the DAG processor when it parses the DAG.
    """
    env = os.environ if env is None else env
    value = env.get("RANKFLOW_STREAM_WATCH_RETRY_SECONDS", "").strip()
    if not value:
        return DEFAULT_STREAM_WATCH_RETRY
    if not value.isdecimal() or int(value) == 0:  # isdigit() passes '²'
        name = "RANKFLOW_STREAM_WATCH_RETRY_SECONDS"
        raise ValueError(f"{name}={value!r}: give a whole number of seconds, at least 1")
    return timedelta(seconds=int(value))


def publication_deadline(env: Mapping[str, str] | None = None) -> time | None:
    """The UTC time of day the nightly lists must be out by (``RANKFLOW_PUBLICATION_DEADLINE``).

    ``HH:MM`` sets it, ``off`` removes the deadline (a DAG parsed with ``off`` has none: what a
    one-off ``airflow dags test`` of a past day needs); unset means 06:00.
    """
    env = os.environ if env is None else env
    value = env.get("RANKFLOW_PUBLICATION_DEADLINE", "").strip()
    if not value:
        return DEFAULT_PUBLICATION_DEADLINE
    if value.lower() == "off":
        return None
    try:
        return time.fromisoformat(value)
    except ValueError as error:
        raise ValueError(
            f"RANKFLOW_PUBLICATION_DEADLINE={value!r}: give a UTC time as HH:MM, or off"
        ) from error

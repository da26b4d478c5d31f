"""The Spark session every job opens: Delta, session conf, Spark Connect or spark-submit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from rankflow.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
SESSION_CONF = {
    **DELTA_CONF,
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "50000",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # the local training engine collects the training window to the driver by design (2.5 GB
    # at 300k users); the driver's memory bounds it, not Spark's 1 GB default for results
    "spark.driver.maxResultSize": "0",
}


def delta_package() -> str:
    """Return the Maven coordinate of the Delta jar matching the installed pyspark/delta-spark."""
    spark_minor = ".".join(version("pyspark").split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{version('delta-spark')}"


def spark_submit_conf(settings: Settings) -> dict[str, str]:
    """Return the ``--conf`` pairs every spark-submit of a rankflow job needs.

    ``RANKFLOW_SPARK_CONF`` (``settings.spark.conf``) adds to them and wins: memory for a bigger
    night, event logs for a benchmark, a cluster's settings.
    """
    partitions = str(settings.spark.shuffle_partitions)
    # Delta replays its log with 50 tasks by default; size that like the shuffles
    return {
        **SESSION_CONF,
        "spark.sql.shuffle.partitions": partitions,
        "spark.databricks.delta.snapshotPartitions": partitions,
        **s3a_conf(settings),
        **settings.spark.conf,
    }


def spark_home() -> Path:
    """Spark's home: ``SPARK_HOME`` (spark-submit sets it), else the pinned pyspark's folder."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"])
    import pyspark

    return Path(pyspark.__file__).parent


def hadoop_version() -> str:
    """The Hadoop version pyspark bundles (its ``hadoop-client-api`` jar): hadoop-aws must match."""
    jars = spark_home() / "jars"
    for jar in jars.glob("hadoop-client-api-*.jar"):
        return jar.stem.removeprefix("hadoop-client-api-")
    raise RuntimeError(f"no hadoop-client-api jar in {jars}: is pyspark installed whole?")


def s3a_jars(settings: Settings) -> Path:
    """The folder of hadoop-aws and its AWS SDK jars (``make setup`` fetches them from Maven).

    They go on the driver's and executors' class path from this local folder, as a cluster's
    image would hold them, rather than through ``--packages``, which would copy the SDK's
    700 MB bundle to every executor of every step.
    """
    return settings.paths.jars / f"hadoop-aws-{hadoop_version()}"


def s3a_conf(settings: Settings) -> dict[str, str]:
    """Spark settings for a lake on ``s3a://``: endpoint, region, class path; none otherwise.

    Credentials are not settings: hadoop-aws reads the standard AWS chain (environment, profile,
    instance role) on the driver and on every executor.
    """
    if not settings.paths.lake_on_s3:
        return {}
    classpath = f"{s3a_jars(settings)}/*"
    conf = {
        "spark.driver.extraClassPath": classpath,
        "spark.executor.extraClassPath": classpath,
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3.region,
        "spark.executorEnv.AWS_DEFAULT_REGION": settings.s3.region,
        # executors' pyarrow reads the lake's files at rankflow's endpoint too (empty: AWS)
        "spark.executorEnv.RANKFLOW_S3_ENDPOINT": settings.s3.endpoint_url or "",
    }
    if settings.s3.endpoint_url:
        conf["spark.hadoop.fs.s3a.endpoint"] = settings.s3.endpoint_url
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        secure = settings.s3.endpoint_url.startswith("https://")
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(secure).lower()
    return conf


# what a Connect client may set for its own session (the rest is the server's, fixed at start)
RUNTIME_CONF_PREFIXES = ("spark.sql.", "spark.databricks.")


def connect_url() -> str | None:
    """The Spark Connect server to run on (``SPARK_REMOTE``, pyspark's convention), if any."""
    return os.environ.get("SPARK_REMOTE") or None


def listening(url: str, timeout: float = 1.0) -> bool:
    """Whether a Spark Connect URL's (``sc://host:port/...``) server accepts a TCP connection."""
    import socket
    from urllib.parse import urlparse

    where = urlparse(url)
    address = (where.hostname or "localhost", where.port or 15002)
    try:
        with socket.create_connection(address, timeout):
            return True
    except OSError:
        return False


def is_connect(spark: SparkSession) -> bool:
    """Tell whether a session is a Spark Connect client (no SparkContext, no JVM here)."""
    from pyspark.sql.utils import is_remote

    return bool(is_remote()) or type(spark).__module__.startswith("pyspark.sql.connect")


def get_session(
    settings: Settings, app_name: str, remote: str | None = None, *, classic: bool = False
) -> SparkSession:
    """Open a Delta-enabled session: a Connect client (``remote`` or ``SPARK_REMOTE``), or local.

    A Connect server holds the static conf (Delta's extension and catalog, memory); a client
    only sets the runtime SQL conf of its own session. Under spark-submit the submit-time conf
    wins. ``classic`` opens a session with a SparkContext on ``RANKFLOW_SPARK_MASTER`` whatever
    Connect server is configured (what xgboost.spark's barrier jobs need).
    """
    from pyspark.sql import SparkSession

    remote = None if classic else remote or connect_url()
    if remote:
        builder = SparkSession.builder.remote(remote).appName(app_name)
        for key, value in spark_submit_conf(settings).items():
            if key not in DELTA_CONF and key.startswith(RUNTIME_CONF_PREFIXES):
                builder = builder.config(key, value)
        return builder.getOrCreate()
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # under spark-submit its --master wins
        builder = builder.master(settings.spark.master)
    builder = builder.config("spark.driver.memory", "4g").config("spark.ui.enabled", "false")
    for key, value in spark_submit_conf(settings).items():
        builder = builder.config(key, value)
    builder = builder.config("spark.jars.packages", delta_package())
    # Python workers must import rankflow: unless told otherwise, use this interpreter
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")  # a Connect server sets its own log level
    return spark


def task_slots(spark: SparkSession) -> int:
    """How many tasks run at once: the context's parallelism, or (Connect) the shuffle width."""
    if not is_connect(spark):
        return max(int(spark.sparkContext.defaultParallelism), 1)
    conf = spark.conf.get("spark.default.parallelism", None)
    return max(int(conf or spark.conf.get("spark.sql.shuffle.partitions") or 1), 1)


# Candidate rows a partition placed by user holds at most, so the sort of the join with the
# user features stays in memory and the scorer's lists of a partition stay small (at 1M users,
# 4 partitions of 23 M rows spilled 8 GB to disk and took 902 of the step's 1,059 seconds)
ROWS_PER_USER_PARTITION = 2_000_000


def user_partitions(spark: SparkSession, rows: int = 0) -> int:
    """How many partitions ``rows`` hashed by user go to: two per task slot, or more when many."""
    return max(task_slots(spark) * 2, 2, -(-rows // ROWS_PER_USER_PARTITION))


def fetch_s3a_jars(settings: Settings) -> str:
    """Fetch hadoop-aws and the AWS SDK it names from Maven Central into :func:`s3a_jars`, once."""
    target = s3a_jars(settings)
    if any(target.glob("*hadoop-aws-*.jar")):
        return f"hadoop-aws jars: {target} (already fetched)"
    fetch_packages(settings, [f"org.apache.hadoop:hadoop-aws:{hadoop_version()}"], target)
    names = sorted(jar.name for jar in target.glob("*.jar"))
    return f"hadoop-aws jars: {target} ({', '.join(names)})"


def fetch_packages(
    settings: Settings,
    packages: list[str],
    target: Path,
    extra: Callable[[Path], None] | None = None,
) -> None:
    """Resolve Maven ``packages`` and their dependencies with Ivy into the folder ``target``.

    Ivy resolves them (``--packages`` of an empty application, with an Ivy home of its own);
    the jars land in a temporary folder (``extra`` may add to it) renamed into place, so a half
    fetch is never used.
    """
    import shutil
    import subprocess

    work = settings.paths.home / "tmp" / f"fetch-{target.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "empty.py").write_text("")
    command = [str(spark_home() / "bin" / "spark-submit"), "--master", "local[1]"]
    command += ["--conf", f"spark.jars.ivy={work / 'ivy'}", "--packages", ",".join(packages)]
    done = subprocess.run([*command, str(work / "empty.py")], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"could not fetch {packages[0]}: {done.stderr.strip()[-2000:]}")
    fetched = work / "ivy" / "jars"
    if extra is not None:
        extra(fetched)
    target.parent.mkdir(parents=True, exist_ok=True)
    fetched.rename(target)
    shutil.rmtree(work, ignore_errors=True)


def warm_spark(settings: Settings) -> str:
    """Resolve Delta's jars into the Ivy cache and round-trip a tiny Delta table."""
    import shutil

    probe = settings.paths.home / "tmp" / "delta-probe"
    shutil.rmtree(probe, ignore_errors=True)
    spark = get_session(settings, "rankflow-warm")
    try:
        spark.range(3).write.format("delta").mode("overwrite").save(str(probe))
        rows = spark.read.format("delta").load(str(probe)).count()
    finally:
        spark.stop()
    shutil.rmtree(probe, ignore_errors=True)
    return f"Spark {version('pyspark')} with {delta_package()}: Delta round trip of {rows} rows ok"


def connect_server_command(settings: Settings, port: int) -> list[str]:
    """Return the command line of a local Spark Connect server with Delta and rankflow's conf."""
    import shutil

    command = [
        shutil.which("spark-submit") or "spark-submit",
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--name",
        "rankflow-connect",
        "--master",
        settings.spark.master,
        "--packages",
        delta_package(),
    ]
    server = {
        "spark.driver.memory": "4g",
        "spark.ui.enabled": "false",
        **spark_submit_conf(settings),
        "spark.log.level": "WARN",
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
    }
    for key, value in server.items():
        command += ["--conf", f"{key}={value}"]
    return command


def job_command(settings: Settings, job: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Command line and extra environment of ``jobs/<job>.py`` on the configured Spark.

    A client of the Spark Connect server when ``RANKFLOW_SPARK_CONNECT`` is set, else a
    spark-submit to the master.
    """
    from rankflow.config import repo_root

    if settings.spark.connect_url:
        script = str(repo_root() / "jobs" / f"{job}.py")
        return [sys.executable, script, *args], {"SPARK_REMOTE": settings.spark.connect_url}
    return spark_submit_command(settings, job, args), {}


def spark_submit_command(settings: Settings, job: str, args: list[str]) -> list[str]:
    """Return the spark-submit command line of ``jobs/<job>.py`` (what the DAG's operator runs)."""
    import shutil

    from rankflow.config import repo_root

    command = [shutil.which("spark-submit") or "spark-submit", "--master", settings.spark.master]
    command += ["--packages", delta_package()]
    for key, value in spark_submit_conf(settings).items():
        command += ["--conf", f"{key}={value}"]
    return [*command, str(repo_root() / "jobs" / f"{job}.py"), *args]

"""The Spark session every job opens: Delta, session conf, Spark Connect or spark-submit."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
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
        **settings.spark.conf,
    }


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


def get_session(settings: Settings, app_name: str, remote: str | None = None) -> SparkSession:
    """Open a Delta-enabled session: a Connect client (``remote`` or ``SPARK_REMOTE``), or local.

    A Connect server holds the static conf (Delta's extension and catalog, memory); a client
    only sets the runtime SQL conf of its own session. Under spark-submit the submit-time conf
    wins.
    """
    from pyspark.sql import SparkSession

    remote = remote or connect_url()
    if remote:
        builder = SparkSession.builder.remote(remote).appName(app_name)
        for key, value in spark_submit_conf(settings).items():
            if key not in DELTA_CONF and key.startswith(RUNTIME_CONF_PREFIXES):
                builder = builder.config(key, value)
        return builder.getOrCreate()
    builder = SparkSession.builder.appName(app_name).master(settings.spark.master)
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

"""A Spark standalone cluster on 127.0.0.1 from the pinned pyspark, with the lake on S3.

``make cluster-up`` starts a master and two workers (``spark-class ...deploy.master.Master`` and
``...deploy.worker.Worker``, each with its web UI), creates the lake's bucket on the S3 endpoint
and writes ``$RANKFLOW_HOME/cluster.mk``: the Makefile reads it, so every later target points
the ``spark_rankflow`` connection at ``spark://127.0.0.1:7077`` and the lake at
``s3a://rankflow-lake/lake``, each Spark step being a spark-submit in client mode whose
executors run in the workers' JVMs. ``make cluster-down`` stops them and removes the file.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from dataclasses import dataclass

from rankflow.config import Settings
from rankflow.ops.services import Service, ServiceError, run_dir, start, stop

HOST = "127.0.0.1"
MASTER_PORT = 7077
MASTER_UI_PORT = 8090  # Spark's default 8080 is Airflow's
WORKER_PORTS = (7078, 7079)
WORKER_UI_PORTS = (8091, 8092)
LAKE = "s3a://rankflow-lake/lake"
CONNECT_PORT = 15003  # the local Connect server of `make up` is on 15002
CLUSTER_FILE = "cluster.mk"


@dataclass(frozen=True)
class ClusterShape:
    """How big the workers are and how much of them one application takes.

    Each worker offers two task slots, and an application takes one executor of one core on each
    worker: the Connect server's application holds its executors for as long as it runs, and a
    step's spark-submit must still find a slot and the memory for its own on every worker.
    """

    workers: int = 2
    cores: int = 2  # task slots a worker offers (more than the machine's cores is fine)
    memory: str = "5g"  # what a worker offers its executors: two of executor_memory
    executor_cores: int = 1
    executor_memory: str = "2g"


def master_url() -> str:
    """The master's URL (what ``--master`` and the ``spark_rankflow`` connection name)."""
    return f"spark://{HOST}:{MASTER_PORT}"


def spark_class() -> str:
    """The pinned pyspark's ``bin/spark-class`` (pyspark ships Spark's launch scripts)."""
    from rankflow.lake.session import spark_home

    return str(spark_home() / "bin" / "spark-class")


def alive_workers() -> int:
    """How many workers the master's JSON status page reports ALIVE."""
    with urllib.request.urlopen(f"http://{HOST}:{MASTER_UI_PORT}/json/", timeout=5) as page:
        status = json.load(page)
    return sum(1 for worker in status.get("workers", []) if worker.get("state") == "ALIVE")


def wait_for_workers(count: int, seconds: float = 60) -> None:
    """Wait until ``count`` workers registered with the master, or raise."""
    deadline = time.monotonic() + seconds
    seen = 0
    while time.monotonic() < deadline:
        seen = alive_workers()
        if seen >= count:
            return
        time.sleep(0.5)
    raise ServiceError(f"only {seen} of {count} Spark workers registered with {master_url()}")


def cluster_services(settings: Settings, shape: ClusterShape) -> list[Service]:
    """The master and the workers as local services (logs and pid files under ``run/``)."""
    from rankflow.lake.session import spark_home

    env = {"SPARK_HOME": str(spark_home()), "PYSPARK_PYTHON": sys.executable}
    master = Service(
        "spark-master",
        HOST,
        MASTER_PORT,
        [
            spark_class(),
            "org.apache.spark.deploy.master.Master",
            *("--host", HOST, "--port", str(MASTER_PORT), "--webui-port", str(MASTER_UI_PORT)),
        ],
        env=env,
        wait_seconds=90.0,
    )
    workers = []
    for n, (port, ui) in enumerate(zip(WORKER_PORTS, WORKER_UI_PORTS, strict=True)):
        if n >= shape.workers:
            break
        work_dir = run_dir(settings) / f"spark-worker-{n + 1}" / "work"
        command = [spark_class(), "org.apache.spark.deploy.worker.Worker", master_url()]
        command += ["--host", HOST, "--port", str(port), "--webui-port", str(ui)]
        command += ["--cores", str(shape.cores), "--memory", shape.memory]
        command += ["--work-dir", str(work_dir)]
        # finished applications' folders (logs, fetched files) are cleaned up after a day
        opts = "-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.appDataTtl=86400"
        workers.append(
            Service(
                f"spark-worker-{n + 1}",
                HOST,
                port,
                command,
                env={**env, "SPARK_WORKER_OPTS": opts},
                wait_seconds=90.0,
            )
        )
    return [master, *workers]


def cluster_spark_conf(shape: ClusterShape) -> dict[str, str]:
    """The steps' Spark settings on the cluster: executor size, and all executors before work.

    Standalone mode starts a job as soon as one executor registered; waiting for all of them
    keeps ``defaultParallelism`` (how publishers deal their files) the cluster's cores.
    """
    return {
        "spark.driver.host": HOST,  # everything on the loopback interface
        "spark.driver.bindAddress": HOST,
        "spark.executor.cores": str(shape.executor_cores),
        "spark.executor.memory": shape.executor_memory,
        "spark.cores.max": str(shape.executor_cores * shape.workers),
        "spark.default.parallelism": str(shape.executor_cores * shape.workers),
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "60s",
    }


def cluster_environment(shape: ClusterShape) -> dict[str, str]:
    """The variables that point rankflow at the cluster, the S3 lake and the cluster's Connect."""
    connection = {"conn_type": "spark", "host": f"spark://{HOST}", "port": MASTER_PORT}
    return {
        "RANKFLOW_SPARK_MASTER": master_url(),
        "AIRFLOW_CONN_SPARK_RANKFLOW": json.dumps(connection),
        "RANKFLOW_LAKE": LAKE,
        "RANKFLOW_SPARK_CONNECT": f"sc://{HOST}:{CONNECT_PORT}",
        "RANKFLOW_SPARK_CONF": json.dumps(cluster_spark_conf(shape)),
    }


def cluster_file_text(shape: ClusterShape) -> str:
    """The Makefile fragment that points every target at the cluster and the S3 lake."""
    lines = [
        "# written by `make cluster-up`, removed by `make cluster-down`: the spark_rankflow",
        "# connection submits each step to the local standalone cluster (client mode), the demo's",
        "# steps attach to a Connect server whose executors run there, and the lake is on S3",
    ]
    for name, value in cluster_environment(shape).items():
        lines.append(f"export {name} := {value}")
    return "\n".join(lines) + "\n"


def connect_service(settings: Settings, shape: ClusterShape) -> Service:
    """A Spark Connect server whose application runs on the cluster (its driver stays warm)."""
    import os

    from rankflow.config import load_settings
    from rankflow.ops.services import spark_connect_service

    on_cluster = load_settings({**os.environ, **cluster_environment(shape)})
    return spark_connect_service(on_cluster, CONNECT_PORT, name="spark-connect-cluster")


def create_lake_bucket(settings: Settings, lake: str) -> str:
    """Create the lake's bucket on the S3 endpoint unless it exists (S3A never creates one)."""
    from rankflow.lake.storage import ensure_bucket, lake_bucket, s3_client

    bucket = lake_bucket(lake)
    ensure_bucket(s3_client(settings.s3), bucket)
    return f"lake: {lake} (bucket {bucket} on {settings.s3.endpoint_url or 'AWS'})"


def up(settings: Settings, shape: ClusterShape | None = None) -> list[str]:
    """Start the master and workers, wait for the workers, create the bucket, write the file."""
    from rankflow.lake.session import s3a_jars

    shape = shape or ClusterShape()
    if not any(s3a_jars(settings).glob("*hadoop-aws-*.jar")):
        raise ServiceError(f"no hadoop-aws jars in {s3a_jars(settings)}: run `make setup`")
    folder = run_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [start(service, folder) for service in cluster_services(settings, shape)]
    wait_for_workers(shape.workers)
    lines.append(
        f"spark: {master_url()}, {shape.workers} workers (UI http://{HOST}:{MASTER_UI_PORT})"
    )
    lines.append(create_lake_bucket(settings, LAKE))
    lines.append(start(connect_service(settings, shape), folder))
    path = settings.paths.home / CLUSTER_FILE
    path.write_text(cluster_file_text(shape))
    lines.append(f"wrote {path}: make's targets now run on the cluster (make cluster-down undoes)")
    return lines


def down(settings: Settings) -> list[str]:
    """Stop the workers, then the master, and remove the Makefile fragment."""
    folder = run_dir(settings)
    shape = ClusterShape()
    services = [*cluster_services(settings, shape), connect_service(settings, shape)]
    lines = [stop(service, folder) for service in reversed(services)]
    (settings.paths.home / CLUSTER_FILE).unlink(missing_ok=True)
    return lines

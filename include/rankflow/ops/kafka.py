"""A single-node Kafka broker (KRaft: broker and controller in one JVM) for tests and demos.

``make kafka-up`` fetches the broker's jars from Maven Central once (Ivy, like hadoop-aws's),
formats the data folder, starts ``kafka.Kafka`` and creates the event topic with
``stream.partitions`` partitions; ``make kafka-down`` stops it. Loopback only and PLAINTEXT:
a production cluster adds SASL/TLS listeners and replication (docs/stream.md).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

from rankflow.config import Settings
from rankflow.ops.services import Service, ServiceError, run_dir, start, stop

KAFKA_VERSION = "4.4.0"
SCALA = "2.13"
HOST = "127.0.0.1"
BROKER_PORT = 9092
CONTROLLER_PORT = 9093
PACKAGES = (
    f"org.apache.kafka:kafka_{SCALA}:{KAFKA_VERSION}",
    "org.apache.logging.log4j:log4j-slf4j2-impl:2.25.5",  # the log4j-core Kafka brings
)
LOG4J = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
"""


def kafka_jars(settings: Settings) -> Path:
    """The folder of the broker's jars (fetched once from Maven Central)."""
    return settings.paths.jars / f"kafka-{KAFKA_VERSION}"


def fetch_kafka_jars(settings: Settings) -> str:
    """Fetch the broker and its dependencies with Ivy into :func:`kafka_jars`, once."""
    from rankflow.lake.session import fetch_packages, spark_home

    target = kafka_jars(settings)
    if any(target.glob(f"*kafka_{SCALA}-{KAFKA_VERSION}.jar")):
        return f"kafka jars: {target} (already fetched)"

    def add_scala_library(fetched: Path) -> None:
        # Spark's Ivy leaves out the Scala library Spark ships itself: take that one (the
        # pinned pyspark's is the 2.13 line Kafka is built for)
        library = sorted((spark_home() / "jars").glob("scala-library-2.13.*.jar"))
        if not library:
            raise RuntimeError(f"no scala-library-2.13 jar in {spark_home() / 'jars'}")
        shutil.copy2(library[-1], fetched / library[-1].name)

    fetch_packages(settings, list(PACKAGES), target, add_scala_library)
    return f"kafka jars: {target} ({len(list(target.glob('*.jar')))} jars)"


def server_properties(data: Path, partitions: int) -> str:
    """The broker's configuration: one node, both roles, loopback listeners."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{CONTROLLER_PORT}",
            f"listeners=PLAINTEXT://{HOST}:{BROKER_PORT},CONTROLLER://{HOST}:{CONTROLLER_PORT}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{BROKER_PORT}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}",
            f"num.partitions={partitions}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
    )


def java_command(jars: Path, main: str, *args: str, logs: Path | None = None) -> list[str]:
    """``java`` with the broker's class path running ``main``."""
    java = shutil.which("java") or "java"
    options = ["-Xmx768m", "-XX:+UseG1GC"]
    if logs is not None:
        options += [
            f"-Dkafka.logs.dir={logs}",
            f"-Dlog4j2.configurationFile={logs / 'log4j2.properties'}",
        ]
    return [java, *options, "-cp", f"{jars}/*", main, *args]


def kafka_service(settings: Settings) -> Service:
    """The broker as a local service: formatted on first start, the topic created once up."""
    folder = run_dir(settings) / "kafka"
    data = folder / "data"
    config = folder / "server.properties"
    partitions = int(settings.pipeline["stream"]["partitions"])
    jars = kafka_jars(settings)

    def prepare() -> None:
        if not any(jars.glob(f"*kafka_{SCALA}-{KAFKA_VERSION}.jar")):
            raise ServiceError(f"the Kafka jars are not in {jars}: run `make kafka-up`")
        folder.mkdir(parents=True, exist_ok=True)
        config.write_text(server_properties(data, partitions))
        (folder / "log4j2.properties").write_text(LOG4J)
        if not (data / "meta.properties").exists():
            cluster = uuid.uuid4().hex[:22]
            formatted = subprocess.run(
                java_command(jars, "kafka.tools.StorageTool", "format", "-t", cluster,
                             "-c", str(config)),
                capture_output=True, text=True,
            )  # fmt: skip
            if formatted.returncode != 0:
                raise ServiceError(f"kafka storage format failed: {formatted.stderr[-2000:]}")

    return Service(
        "kafka",
        HOST,
        BROKER_PORT,
        java_command(jars, "kafka.Kafka", str(config), logs=folder),
        wait_seconds=90.0,
        prepare=prepare,
        ready=lambda: create_topic(settings),
    )


def create_topic(settings: Settings, timeout: float = 60.0) -> None:
    """Create the event topic with ``stream.partitions`` partitions, unless it exists."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from rankflow.stream.kafka import kafka_config

    stream = settings.pipeline["stream"]
    topic = str(stream["kafka"]["topic"])
    admin = AdminClient(kafka_config(settings))
    deadline = time.monotonic() + timeout
    while True:
        existing = admin.list_topics(timeout=10).topics
        if topic in existing:
            return
        futures = admin.create_topics([NewTopic(topic, int(stream["partitions"]), 1)])
        try:
            futures[topic].result(timeout=20)
            return
        except Exception as problem:  # the controller may still be electing itself
            if "TOPIC_ALREADY_EXISTS" in str(problem):
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"could not create the Kafka topic {topic}: {problem}") from None
            time.sleep(1.0)


def kafka_up(settings: Settings) -> list[str]:
    """Fetch the jars (once) and start the broker."""
    fetched = fetch_kafka_jars(settings)
    folder = run_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    return [fetched, start(kafka_service(settings), folder)]


def kafka_down(settings: Settings) -> list[str]:
    """Stop the broker (its data stays for the next start)."""
    return [stop(kafka_service(settings), run_dir(settings))]

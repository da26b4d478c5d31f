"""The event log's backends as one fixture: every stream test runs on Redis Streams and on Kafka.

Kafka is the broker ``make kafka-up`` starts (``RANKFLOW_KAFKA_BOOTSTRAP``, 127.0.0.1:9092);
each test gets a topic of its own.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from rankflow.stream.log import EventLog, PartitionReader, RedisStreamsLog, RedisStreamsReader

KAFKA_BOOTSTRAP = os.environ.get("RANKFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = 2


@dataclass
class Backend:
    """One backend's log and readers for a test, and its name in settings."""

    name: str
    client: Any  # the admin Redis client (the fresh state lives in Redis on both)
    topic: str = ""

    def log(self, prefix: str) -> EventLog:
        if self.name == "redis":
            return RedisStreamsLog(self.client, prefix, PARTITIONS, max_length=1_000_000)
        from rankflow.stream.kafka import KafkaLog

        return KafkaLog(KAFKA_BOOTSTRAP, self.topic_of(prefix))

    def reader(self, prefix: str, consumer: str = "t", group: str = "rankflow") -> PartitionReader:
        """A reader of every partition in ``group`` (Kafka: a group of its own per topic)."""
        if self.name == "redis":
            return RedisStreamsReader(self.client, prefix, range(PARTITIONS), group, consumer)
        from rankflow.stream.kafka import KafkaReader

        topic = self.topic_of(prefix)
        return KafkaReader(KAFKA_BOOTSTRAP, topic, f"{group}-{topic}", None)

    def append_at(self, prefix: str, records: list[Any], appended_ms: list[int]) -> None:
        """Append records as if the log had taken them at ``appended_ms`` (increasing)."""
        from rankflow.quality.live import encode_record
        from rankflow.stream.log import record_key

        if self.name == "redis":
            from rankflow.store.fresh import events_log_key

            for record, at in zip(records, appended_ms, strict=True):
                stream = events_log_key(prefix, record_key(record) % PARTITIONS)
                self.client.xadd(stream, {b"r": encode_record(record)}, id=f"{at}-*")
            return
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP, "partitioner": "murmur2_random"})
        for record, at in zip(records, appended_ms, strict=True):
            producer.produce(self.topic_of(prefix), key=str(record_key(record)).encode(),
                             value=encode_record(record), timestamp=at)  # fmt: skip
        producer.flush(10)

    def append_raw(self, prefix: str, payload: bytes) -> None:
        """Append bytes that are not a record (a broken producer)."""
        if self.name == "redis":
            from rankflow.store.fresh import events_log_key

            self.client.xadd(events_log_key(prefix, 0), {b"r": payload})
            return
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP})
        producer.produce(self.topic_of(prefix), key=b"0", value=payload)
        producer.flush(10)

    def topic_of(self, prefix: str) -> str:
        return f"{self.topic}-{prefix}"

    def settings_yaml(self, prefix: str) -> str:
        """The ``stream:`` section a ``rankflow stream`` process of this test reads."""
        text = f"stream:\n  backend: {self.name}\n  partitions: {PARTITIONS}\n  batch: 200\n"
        text += "  block_ms: 20\n"
        if self.name == "kafka":
            text += f"  kafka:\n    bootstrap_servers: {KAFKA_BOOTSTRAP}\n"
            text += f"    topic: {self.topic_of(prefix)}\n"
            text += f"  group: rankflow-{self.topic_of(prefix)}\n"
        return text


def kafka_listening() -> bool:
    host, _, port = KAFKA_BOOTSTRAP.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), 2):
            return True
    except OSError:
        return False


def create_topics(names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP})
    futures = admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    for future in futures.values():
        future.result(timeout=30)


def delete_topics(names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP})
    for future in admin.delete_topics(names).values():
        try:
            future.result(timeout=30)
        except Exception:  # already gone
            continue


@pytest.fixture(params=["redis", "kafka"])
def backend(request: pytest.FixtureRequest, redis_client: Any) -> Iterator[Backend]:
    """Each backend in turn (Kafka: the broker of `make kafka-up`, topics of this test's own)."""
    if request.param == "redis":
        yield Backend("redis", redis_client)
        return
    if not kafka_listening():
        pytest.fail(f"Kafka is not reachable at {KAFKA_BOOTSTRAP}: start it with `make kafka-up`")
    chosen = Backend("kafka", redis_client, f"rankflow-test-{uuid.uuid4().hex[:8]}")
    topics = [chosen.topic_of(p) for p in ("rf", "rfb", "rft")]
    create_topics(topics)
    yield chosen
    delete_topics(topics)

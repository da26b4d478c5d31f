"""The event log on Kafka: one topic keyed by user id (a listing: item id), one consumer group.

Producers are idempotent (``enable.idempotence``: a retried send is not written twice) and wait
for every in-sync replica (``acks=all``); keys go through ``murmur2_random``, the Java clients'
partitioner, so services in other languages put a user's events in the same partition. The
updaters commit offsets only after the fresh state holds a batch; on a restart or a rebalance
they resume from the committed offset, and the entries between it and the state's recorded
position are skipped by position (``fresh_apply.lua``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rankflow.quality.live import LogRecord, encode_record
from rankflow.stream.log import Entry, record_key

if TYPE_CHECKING:
    from rankflow.config import Settings


class KafkaLogError(RuntimeError):
    """The broker did not take or give records (the message says which and why)."""


def kafka_config(settings: Settings) -> dict[str, Any]:
    """The client settings every rankflow Kafka client shares (``stream.kafka``)."""
    return client_config(str(settings.pipeline["stream"]["kafka"]["bootstrap_servers"]))


def client_config(bootstrap: str) -> dict[str, Any]:
    """The settings of a client of the brokers at ``bootstrap`` (``host:port,...``)."""
    return {"bootstrap.servers": bootstrap, "client.id": "rankflow"}


class KafkaLog:
    """Producers' side: append records to the topic, keyed by user (listings by item)."""

    def __init__(
        self, bootstrap: str, topic: str, *, linger_ms: int = 2, timeout: float = 10.0
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.timeout = timeout
        self.producer = Producer(
            {
                **client_config(bootstrap),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": linger_ms,
                "partitioner": "murmur2_random",
            }
        )
        metadata = self.producer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise KafkaLogError(f"Kafka topic {topic} is not there at {bootstrap}: make kafka-up")
        self.partitions = len(metadata.partitions)

    @classmethod
    def of(cls, settings: Settings) -> KafkaLog:
        """The event log the settings name (``stream.kafka``)."""
        config = settings.pipeline["stream"]["kafka"]
        return cls(
            str(config["bootstrap_servers"]),
            str(config["topic"]),
            linger_ms=int(config["linger_ms"]),
            timeout=float(config["send_timeout_seconds"]),
        )

    def append(self, records: Sequence[LogRecord]) -> None:
        """Send every record and wait until the broker acknowledged them all."""
        failures: list[str] = []

        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                failures.append(str(error))

        for record in records:
            self.producer.produce(
                self.topic,
                key=str(record_key(record)).encode(),
                value=encode_record(record),
                on_delivery=delivered,
            )
            self.producer.poll(0)
        left = self.producer.flush(self.timeout)
        if left or failures:
            raise KafkaLogError(
                f"{left} records unacknowledged after {self.timeout} s, {len(failures)} "
                f"refused ({failures[:1]}): retry (event ids deduplicate)"
            )

    def close(self) -> None:
        """Send what is queued."""
        self.producer.flush(self.timeout)


class KafkaReader:
    """One updater's consumer: assigned ``partitions``, or the group's share when none given.

    Within a partition Kafka delivers in order to one consumer of the group, and a rebalance
    hands a partition over at the committed offset: the order the fresh state's position
    check needs.
    """

    backend = "kafka"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        partitions: Sequence[int] | None,
        instance: str | None = None,
    ) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.topic = topic
        self.consumer = Consumer(
            {
                **client_config(bootstrap),
                "group.id": group,
                # a stable name (``--consumer``) makes a restart take its partitions back at
                # once (static membership) instead of after a rebalance
                **({"group.instance.id": instance} if instance else {}),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        self.assigned = tuple(partitions or ())
        if partitions:
            self.consumer.assign([TopicPartition(self.topic, p) for p in partitions])
        else:
            self.consumer.subscribe([self.topic])

    @classmethod
    def of(
        cls,
        settings: Settings,
        partitions: Sequence[int] | None,
        consumer: str | None,
        group: str | None = None,
    ) -> KafkaReader:
        """A reader of the settings' topic in ``group`` (default: ``stream.group``)."""
        stream = settings.pipeline["stream"]
        kafka = stream["kafka"]
        return cls(
            str(kafka["bootstrap_servers"]), str(kafka["topic"]), group or str(stream["group"]),
            partitions, consumer,
        )  # fmt: skip

    @property
    def partitions(self) -> tuple[int, ...]:
        """The partitions this consumer holds now (the group may move them)."""
        if self.assigned:
            return self.assigned
        return tuple(tp.partition for tp in self.consumer.assignment())

    def read(self, count: int, block_ms: int) -> list[Entry]:
        """Up to ``count`` entries (waits at most ``block_ms`` for the first)."""
        messages = self.consumer.consume(num_messages=count, timeout=block_ms / 1000)
        entries = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.retriable() or not error.fatal():
                    continue  # librdkafka retries; the next read resumes
                raise KafkaLogError(f"Kafka consumer failed: {error}")
            _, appended = message.timestamp()
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue  # not a record (an event the client reports as a message)
            entries.append(Entry(partition, (offset, 0), message.value() or b"", appended))
        return entries

    def at_end(self, short: bool) -> bool:
        """A short read, and every assigned partition's position at its high watermark."""
        from confluent_kafka import TopicPartition

        if not short:
            return False
        held = self.partitions
        if not held:
            return False
        positions = self.consumer.position([TopicPartition(self.topic, p) for p in held])
        for position in positions:
            _, high = self.consumer.get_watermark_offsets(position, timeout=2.0)
            if position.offset < 0 and high > 0:
                return False  # nothing consumed yet from a partition that holds entries
            if 0 <= position.offset < high:
                return False
        return True

    def ack(self, entries: Sequence[Entry]) -> None:
        """Commit each partition's offset after its last applied entry (synchronously)."""
        from confluent_kafka import TopicPartition

        last: dict[int, int] = {}
        for entry in entries:
            last[entry.partition] = max(last.get(entry.partition, -1), entry.position[0])
        if last:
            offsets = [TopicPartition(self.topic, p, o + 1) for p, o in last.items()]
            self.consumer.commit(offsets=offsets, asynchronous=False)

    def close(self) -> None:
        """Leave the group."""
        self.consumer.close()

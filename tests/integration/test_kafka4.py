"""Kafka 4.x: the design pins 3.9.x as the safest broker for aiokafka and asks for 4.x to be
tried. This starts a real 4.1 broker from Maven jars and runs what vidpipe needs of it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from vidpipe.bus.admin import ensure_topics
from vidpipe.dev.kafka import LocalKafka


@pytest.fixture(scope="module")
def kafka4() -> Iterator[str]:
    with LocalKafka("4.1.0") as broker:
        yield broker.bootstrap_servers


async def test_topics_produce_and_a_committing_consumer_group_work_on_kafka_4(kafka4: str) -> None:
    topic = f"k4-{uuid.uuid4().hex[:8]}"
    report = await ensure_topics(kafka4, [topic], partitions=3)
    assert report == {topic: "created"}
    producer = AIOKafkaProducer(bootstrap_servers=kafka4, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(topic, value=f"v{i}".encode(), key=f"k{i}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka4,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen: list[bytes] = []
        for _poll in range(30):
            if len(seen) >= 6:
                break
            batch = await consumer.getmany(timeout_ms=1000)
            seen.extend(r.value for records in batch.values() for r in records)
        await consumer.commit()
        committed = [await consumer.committed(TopicPartition(topic, p)) for p in range(3)]
    finally:
        await consumer.stop()
    assert sorted(seen) == [f"v{i}".encode() for i in range(6)]
    assert sum(c or 0 for c in committed) == 6

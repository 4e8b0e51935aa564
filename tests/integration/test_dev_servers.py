"""The dev stack's real servers work end to end (uses the session fixtures; starts nothing)."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from psycopg import sql

from vidpipe.bus.admin import ensure_topics


@pytest.mark.kafka
async def test_kafka_topic_produce_consume(kafka_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}devstack"

    assert await ensure_topics(kafka_bootstrap, [topic], partitions=3) == {topic: "created"}
    # Idempotent, and honest about a partition count it will not change.
    assert await ensure_topics(kafka_bootstrap, [topic], partitions=3) == {topic: "exists"}
    assert await ensure_topics(kafka_bootstrap, [topic], partitions=5) == {
        topic: "exists with 3 partitions (wanted 5)"
    }

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0
    assert len(described["partitions"]) == 3

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"hello", key=b"k1")
    finally:
        await producer.stop()

    # A consumer group, so the group coordinator (__consumer_offsets) is exercised too.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{unique_prefix}group",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k1", b"hello")
    assert (record.partition, record.offset) == (sent.partition, sent.offset)


@pytest.mark.kafka
async def test_ensure_topics_compacted(kafka_bootstrap: str, unique_prefix: str) -> None:
    plain, compacted = f"{unique_prefix}plain", f"{unique_prefix}compacted"
    report = await ensure_topics(kafka_bootstrap, [plain, compacted], 2, compacted={compacted})
    assert report == {plain: "created", compacted: "created"}


@pytest.mark.postgres
def test_postgres_roundtrip(postgres_url: str) -> None:
    # A unique table, so a shared server (VIDPIPE_TEST_DATABASE_URL) is left as found.
    table = sql.Identifier(f"devstack_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute("select version()").fetchone()
        assert row is not None and str(row[0]).startswith("PostgreSQL")
        conn.execute(
            sql.SQL("create table {} (id int primary key, note text not null)").format(table)
        )
        try:
            conn.execute(
                sql.SQL("insert into {} (id, note) values (%s, %s)").format(table), (1, "hello")
            )
            rows = conn.execute(sql.SQL("select id, note from {}").format(table)).fetchall()
            assert rows == [(1, "hello")]
        finally:
            conn.execute(sql.SQL("drop table {}").format(table))

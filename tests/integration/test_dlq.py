"""The dead-letter commands on the real broker: list with filters, redrive the original bytes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from typer.testing import CliRunner

from schemas.events import DeadLetter
from schemas.topics import Topics
from vidpipe.bus.admin import ensure_topics
from vidpipe.bus.deadletter import build_dead_letter
from vidpipe.cli import app
from vidpipe.ops.dlq import DLQ_REDRIVEN_HEADER, list_dead_letters, redrive_dead_letters
from vidpipe.ops.offsets import end_offsets

runner = CliRunner()

BROKEN = '{"request_id": "k1", "prompt": '
EMPTY_PROMPT = '{"request_id": "k2", "prompt": ""}'


def _letters(prefix: str) -> list[DeadLetter]:
    topics = Topics(prefix)
    requested = topics.generation_requested

    def letter(
        stage: str, reason: str, topic: str, offset: int, key: str, value: str
    ) -> DeadLetter:
        return DeadLetter(
            stage=stage,
            reason=reason,
            original_topic=topic,
            original_partition=0,
            original_offset=offset,
            original_key=key,
            original_value=value,
        )

    return [
        letter("submitter", "not JSON: Expecting value: line 1", requested, 5, "k1", BROKEN),
        # The recorder reads the same topic and dead-letters the same message.
        letter("recorder", "not JSON: Expecting value: line 1", requested, 5, "k1", BROKEN),
        letter(
            "submitter",
            "schema validation failed: prompt: String should have at least 1 character",
            requested,
            6,
            "k2",
            EMPTY_PROMPT,
        ),
        letter("fetcher", "refused: unknown provider 'x'", topics.job_succeeded, 3, "k3", "{}"),
        letter("submitter", "not JSON: Extra data", f"{prefix}gone", 0, "k4", "x"),
    ]


async def _publish(bootstrap_servers: str, prefix: str) -> None:
    topics = Topics(prefix)
    await ensure_topics(
        bootstrap_servers,
        [topics.deadletter, topics.generation_requested, topics.job_succeeded],
        partitions=2,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for letter in _letters(prefix):
            await producer.send_and_wait(
                topics.deadletter,
                value=letter.model_dump_json().encode(),
                key=(letter.original_key or "").encode(),
            )
            # Distinct dead_lettered_at values keep "most recent" well defined.
            await asyncio.sleep(0.002)
        await producer.send_and_wait(topics.deadletter, value=b"not a letter at all", key=b"?")
    finally:
        await producer.stop()


async def _read_from(
    bootstrap_servers: str, topic: str, start: dict[TopicPartition, int]
) -> list[Any]:
    """The records of `topic` after `start` up to its current end."""
    ends = await end_offsets(bootstrap_servers, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    try:
        consumer.assign(list(ends))
        for tp in ends:
            consumer.seek(tp, start.get(tp, 0))
        deadline = time.monotonic() + 30
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            assert time.monotonic() < deadline, "topic not read in time"
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


async def test_list_filters_by_reason_and_stage_and_keeps_the_latest(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    await _publish(kafka_bootstrap, unique_prefix)
    dlq = Topics(unique_prefix).deadletter

    everything = await list_dead_letters(kafka_bootstrap, dlq)
    assert (everything.scanned, everything.unreadable, everything.matched) == (6, 1, 5)

    not_json = await list_dead_letters(kafka_bootstrap, dlq, reason="NOT json")
    assert not_json.matched == 3
    assert {e.letter.stage for e in not_json.entries if e.letter} == {"submitter", "recorder"}

    latest = await list_dead_letters(kafka_bootstrap, dlq, reason="not json", limit=1)
    assert [e.letter.original_key for e in latest.entries if e.letter] == ["k4"]
    assert latest.matched == 3

    fetcher = await list_dead_letters(kafka_bootstrap, dlq, stage="fetcher")
    assert [e.letter.original_offset for e in fetcher.entries if e.letter] == [3]


def test_list_cli_json_and_table(kafka_bootstrap: str, unique_prefix: str) -> None:
    asyncio.run(_publish(kafka_bootstrap, unique_prefix))
    env = {"VIDPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap, "VIDPIPE_TOPIC_PREFIX": unique_prefix}
    result = runner.invoke(app, ["dlq", "list", "--reason", "schema", "--json"], env=env)
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert len(listed) == 1
    assert listed[0]["original_key"] == "k2"
    assert listed[0]["original_value"] == EMPTY_PROMPT
    assert listed[0]["stage"] == "submitter"
    assert {"dlq_partition", "dlq_offset", "reason", "dead_lettered_at"} <= set(listed[0])

    table = runner.invoke(app, ["dlq", "list"], env=env)
    assert table.exit_code == 0, table.output
    assert "5 shown of 5 matching; 6 letters" in table.stdout
    assert "1 unreadable" in table.stdout
    assert "fetcher" in table.stdout

    bad = runner.invoke(app, ["dlq", "list", "--limit", "0"], env=env)
    assert bad.exit_code != 0


async def test_redrive_sends_the_original_bytes_and_key_back_once(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    await _publish(kafka_bootstrap, unique_prefix)
    topics = Topics(unique_prefix)
    requested = topics.generation_requested
    before = await end_offsets(kafka_bootstrap, [requested, topics.job_succeeded])

    dry = await redrive_dead_letters(
        kafka_bootstrap, topics.deadletter, reason="not json", dry_run=True
    )
    assert (dry.matched, dry.sent, dry.duplicates) == (3, 0, 1)
    assert dict(dry.missing_topics) == {f"{unique_prefix}gone": 1}
    assert await end_offsets(kafka_bootstrap, [requested, topics.job_succeeded]) == before

    result = await redrive_dead_letters(kafka_bootstrap, topics.deadletter, stage="submitter")
    # The submitter's letters: k1 and k2 go back; k4's topic is gone, so it is only reported.
    assert (result.matched, result.sent) == (3, 2)
    assert result.topics[requested].sent == 2
    assert dict(result.missing_topics) == {f"{unique_prefix}gone": 1}

    sent = await _read_from(kafka_bootstrap, requested, before)
    assert sorted((r.key, r.value) for r in sent) == [
        (b"k1", BROKEN.encode()),
        (b"k2", EMPTY_PROMPT.encode()),
    ]
    origins = {dict(r.headers)[DLQ_REDRIVEN_HEADER].decode() for r in sent}
    assert len(origins) == 2 and all("/" in o for o in origins)
    # Nothing went to the other topic, and no topic was created for the gone one.
    assert await end_offsets(kafka_bootstrap, [topics.job_succeeded]) == {
        tp: o for tp, o in before.items() if tp.topic == topics.job_succeeded
    }


def test_redrive_cli_dry_run_summary(kafka_bootstrap: str, unique_prefix: str) -> None:
    asyncio.run(_publish(kafka_bootstrap, unique_prefix))
    env = {"VIDPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap, "VIDPIPE_TOPIC_PREFIX": unique_prefix}
    result = runner.invoke(app, ["dlq", "redrive", "--reason", "not json", "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    assert "dry run: 3 letters matched of 6; 1 would send" in result.stdout
    assert "1 duplicate" in result.stdout
    assert "topic gone" in result.stdout


BINARY = b"\xff\xfe\x00 not UTF-8 \x80"
HUGE = b"x" * (2 * 1024 * 1024)


async def _publish_binary_letters(kafka_bootstrap: str, prefix: str) -> None:
    """A base64 letter (bytes that are not UTF-8) and a truncated one (2 MiB, cut)."""
    topics = Topics(prefix)
    requested = topics.generation_requested
    await ensure_topics(kafka_bootstrap, [topics.deadletter, requested], partitions=1)

    def record(offset: int, key: bytes, value: bytes) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord(
            topic=requested,
            partition=0,
            offset=offset,
            timestamp=0,
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key),
            serialized_value_size=len(value),
            headers=[],
        )

    letters = [
        build_dead_letter(record(1, b"bin", BINARY), "binary", "not JSON"),
        build_dead_letter(record(2, b"huge", HUGE), "binary", "too big"),
    ]
    assert letters[0].original_value_encoding == "base64"
    assert letters[1].original_value_truncated
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for letter in letters:
            await producer.send_and_wait(topics.deadletter, value=letter.model_dump_json().encode())
    finally:
        await producer.stop()


async def test_base64_letters_redrive_byte_exact_and_truncated_ones_are_refused(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    await _publish_binary_letters(kafka_bootstrap, unique_prefix)
    topics = Topics(unique_prefix)
    requested = topics.generation_requested
    before = await end_offsets(kafka_bootstrap, [requested])

    listed = await list_dead_letters(kafka_bootstrap, topics.deadletter, stage="binary")
    assert listed.matched == 2 and listed.unreadable == 0

    result = await redrive_dead_letters(kafka_bootstrap, topics.deadletter, stage="binary")
    assert (result.matched, result.sent) == (2, 1)
    [refused] = result.refused
    assert "cut to fit the broker" in refused
    assert f"{len(HUGE)} bytes" in refused
    assert hashlib.sha256(HUGE).hexdigest() in refused
    [sent] = await _read_from(kafka_bootstrap, requested, before)
    assert (sent.key, sent.value) == (b"bin", BINARY)


def test_redrive_cli_says_which_letters_it_refused(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    asyncio.run(_publish_binary_letters(kafka_bootstrap, unique_prefix))
    env = {"VIDPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap, "VIDPIPE_TOPIC_PREFIX": unique_prefix}
    cli = runner.invoke(app, ["dlq", "redrive", "--stage", "binary", "--dry-run"], env=env)
    assert cli.exit_code == 0, cli.output
    assert "refused:" in cli.stdout and "cut to fit the broker" in cli.stdout

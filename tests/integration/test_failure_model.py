"""The failure model on the real broker: whatever a message's bytes, its partition moves on.

One stage runs in this process (the submitter's name, so it reports `JobFailed`), on topics of
one partition so every message below queues behind the one before it. Its handler fails on
purpose by request id: `bad-…` raises ValueError every time, `world-…` raises ConnectionError
while the test says the world is down.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from schemas.events import DeadLetter, GenerationRequested, JobFailed
from vidpipe.settings import Settings
from vidpipe.stage import Deps, Resources, Stage

MAX_ATTEMPTS = 3


@dataclass
class World:
    down: bool = False
    handled: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)


@dataclass
class Running:
    stage: Stage
    world: World
    publish: Callable[[bytes, bytes], Awaitable[None]]
    bootstrap: str

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.stage.health_port}{path}"


async def _wait(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _read(bootstrap: str, topic: str, want: int, timeout_s: float = 30) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < want:
            assert time.monotonic() < deadline, f"{len(out)} of {want} records on {topic}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def _request(request_id: str) -> bytes:
    return json.dumps({"request_id": request_id, "prompt": "a fox"}).encode()


@pytest.fixture
async def running(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> AsyncIterator[Running]:
    settings = Settings(
        topic_prefix=unique_prefix,
        topic_partitions=1,
        database_url=f"sqlite:///{tmp_path / 'vidpipe.db'}",
        storage_url=f"file://{tmp_path / 'videos'}",
        metrics_port=0,
        handler_max_attempts=MAX_ATTEMPTS,
        handler_backoff_first_s=0.05,
        handler_backoff_max_s=0.2,
        health_interval_s=0.2,
    )
    stage = Stage("submitter", settings, bootstrap_servers=kafka_bootstrap)
    world = World()

    @stage.dependencies
    async def build(resources: Resources) -> World:
        return world

    @stage.subscriber(stage.topics.generation_requested)
    async def on_request(event: GenerationRequested, deps: Deps[World]) -> None:
        deps.calls.append(event.request_id)
        if event.request_id.startswith("bad-"):
            raise ValueError("this request can never be carried")
        if event.request_id.startswith("world-") and deps.down:
            raise ConnectionError("database down")
        deps.handled.append(event.request_id)

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()

    async def publish(value: bytes, key: bytes) -> None:
        await producer.send_and_wait(stage.topics.generation_requested, value=value, key=key)

    try:
        async with stage.app.lifespan_context(), stage.app:
            yield Running(stage, world, publish, kafka_bootstrap)
    finally:
        await producer.stop()


async def _publish_once_the_topic_takes_it(running: Running, value: bytes) -> None:
    """A topic's new size limit reaches its partition a moment after the broker accepts it."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await running.publish(value, b"big")
            return
        except MessageSizeTooLargeError:
            assert time.monotonic() < deadline, "the topic never took the big message"
            await asyncio.sleep(0.2)


async def _letters(running: Running, want: int) -> list[DeadLetter]:
    records = await _read(running.bootstrap, running.stage.topics.deadletter, want)
    return [DeadLetter.model_validate_json(r.value) for r in records]


async def test_a_5000_deep_request_is_dead_lettered_and_the_next_one_is_processed(
    running: Running,
) -> None:
    deep = b'{"request_id": "deep", "prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    await running.publish(deep, b"deep")
    await running.publish(_request("after-deep"), b"after-deep")

    async def processed() -> bool:
        return running.world.handled == ["after-deep"]

    await _wait(processed, "the request behind the poison")
    [letter] = await _letters(running, 1)
    assert (letter.error_type, letter.attempts, letter.stage) == ("RecursionError", 1, "submitter")
    assert letter.original_value.encode() == deep
    assert running.world.calls == ["after-deep"]  # the poison never reached the handler


async def test_a_handler_that_always_raises_is_dead_lettered_after_n_attempts_with_job_failed(
    running: Running,
) -> None:
    await running.publish(_request("bad-1"), b"bad-1")
    await running.publish(_request("after-bad"), b"after-bad")

    async def processed() -> bool:
        return running.world.handled == ["after-bad"]

    await _wait(processed, "the request behind the failing one")
    assert running.world.calls.count("bad-1") == MAX_ATTEMPTS
    [letter] = await _letters(running, 1)
    assert (letter.error_type, letter.attempts) == ("ValueError", MAX_ATTEMPTS)
    assert letter.reason.startswith(f"gave up after {MAX_ATTEMPTS} attempts: ValueError")
    [record] = await _read(running.bootstrap, running.stage.topics.job_failed, 1)
    failed = JobFailed.model_validate_json(record.value)
    assert (failed.request_id, failed.stage, failed.reason_code) == (
        "bad-1",
        "submit",
        "stage_error",
    )
    assert record.key == b"bad-1"


async def test_a_world_error_keeps_retrying_while_not_ready_then_recovers(
    running: Running,
) -> None:
    async with httpx.AsyncClient(timeout=5) as client:

        def answers(status: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return (await client.get(running.url("/readyz"))).status_code == status

            return check

        await _wait(answers(200), "the stage ready")
        assert (await client.get(running.url("/healthz"))).status_code == 200
        running.world.down = True
        await running.publish(_request("world-1"), b"world-1")

        async def retried_past_the_bound() -> bool:
            return running.world.calls.count("world-1") > 2 * MAX_ATTEMPTS

        await _wait(retried_past_the_bound, "retries beyond the message bound")
        ready = await client.get(running.url("/readyz"))
        assert ready.status_code == 503
        assert "retrying a world error (ConnectionError)" in ready.json()["reasons"][0]
        assert "vidpipe_stage_ready 0.0" in (await client.get(running.url("/metrics"))).text

        running.world.down = False
        await _wait(answers(200), "the stage ready again")
        assert running.world.handled == ["world-1"]
        metrics = (await client.get(running.url("/metrics"))).text
        assert "vidpipe_world_error_waiting 0.0" in metrics


async def test_a_2_mib_poison_and_one_that_escapes_past_1_mib_are_dead_lettered_cut(
    running: Running,
) -> None:
    # The upstream topic takes big messages; the dead-letter topic keeps the broker's 1 MiB.
    admin = AIOKafkaAdminClient(bootstrap_servers=running.bootstrap)
    await admin.start()
    try:
        answer = await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    running.stage.topics.generation_requested,
                    configs={"max.message.bytes": str(8 * 1024 * 1024)},
                )
            ]
        )
        assert all(r[0] == 0 for r in answer[0].resources), answer
    finally:
        await admin.close()
    big = b"\xff" + b"x" * (2 * 1024 * 1024)  # neither UTF-8 nor JSON
    escapes = b"\x01" * 400_000  # 400 kB that JSON-escape to 2.4 MB in a letter
    await _publish_once_the_topic_takes_it(running, big)
    await running.publish(escapes, b"escapes")
    await running.publish(_request("after-big"), b"after-big")

    async def processed() -> bool:
        return running.world.handled == ["after-big"]

    await _wait(processed, "the request behind the big poison")
    letters = await _letters(running, 2)
    for letter, value in zip(letters, (big, escapes), strict=True):
        assert letter.original_value_truncated
        assert letter.original_size == len(value)
        assert letter.original_sha256 == hashlib.sha256(value).hexdigest()
        assert len(letter.model_dump_json()) < 1024 * 1024
    assert [letter.original_value_encoding for letter in letters] == ["base64", "utf-8"]

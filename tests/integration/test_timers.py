"""The durable timer relay on the real broker: order by due time, no loss across a crash."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.events import DeadLetter, Timer
from vidpipe.bus.admin import ensure_topics
from vidpipe.bus.timers import TimerRelay, TimerScheduler


class Harness:
    def __init__(self, bootstrap_servers: str, prefix: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timer_topic = f"{prefix}timers.test"
        self.target = f"{prefix}target"
        self.group = f"{prefix}relay"
        self.letters: list[DeadLetter] = []
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
        self.scheduler = TimerScheduler(self.timer_topic, self.publish_raw)

    async def publish_raw(self, topic: str, key: str, value: bytes) -> None:
        await self.producer.send_and_wait(topic, value=value, key=key.encode())

    async def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    def relay(self) -> TimerRelay:
        return TimerRelay(
            bootstrap_servers=self.bootstrap_servers,
            timer_topic=self.timer_topic,
            group_id=self.group,
            publish_raw=self.publish_raw,
            publish_dead_letter=self.dead_letter,
            stage="test",
        )

    async def received(self, want: int, timeout_s: float = 30) -> list[tuple[str, float]]:
        """(payload name, arrival time) of the first `want` messages on the target topic."""
        consumer = AIOKafkaConsumer(
            self.target, bootstrap_servers=self.bootstrap_servers, auto_offset_reset="earliest"
        )
        await consumer.start()
        out: list[tuple[str, float]] = []
        try:
            deadline = time.monotonic() + timeout_s
            while len(out) < want and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    out.extend((json.loads(r.value)["name"], r.timestamp / 1000) for r in records)
        finally:
            await consumer.stop()
        return out


@pytest.fixture
async def harness(kafka_bootstrap: str, unique_prefix: str) -> AsyncIterator[Harness]:
    h = Harness(kafka_bootstrap, unique_prefix)
    await ensure_topics(kafka_bootstrap, [h.timer_topic, h.target], partitions=1)
    await h.producer.start()
    yield h
    await h.producer.stop()


async def test_a_long_timer_does_not_hold_up_a_short_one_behind_it(harness: Harness) -> None:
    relay = harness.relay()
    await relay.start()
    try:
        start = time.time()
        await harness.scheduler.schedule(
            delay_s=4, target_topic=harness.target, key="k", payload={"name": "long"}
        )
        await harness.scheduler.schedule(
            delay_s=0.5, target_topic=harness.target, key="k", payload={"name": "short"}
        )
        got = await harness.received(2)
    finally:
        await relay.stop()
    assert [name for name, _ in got] == ["short", "long"]
    short_at, long_at = got[0][1] - start, got[1][1] - start
    assert 0.4 <= short_at < 3.0, short_at
    assert long_at >= 3.9, long_at


async def test_a_crashed_relay_loses_no_timer_and_copies_collapse(harness: Harness) -> None:
    first = harness.relay()
    await first.start()
    await harness.scheduler.schedule(
        delay_s=0.2, target_topic=harness.target, key="k", payload={"name": "early"}
    )
    chained = uuid.uuid4()
    for _copy in range(2):  # a step that ran twice scheduled its next timer twice
        await harness.scheduler.schedule(
            delay_s=3,
            target_topic=harness.target,
            key="k",
            payload={"name": "late"},
            timer_id=chained,
        )
    got = await harness.received(1)
    assert [n for n, _ in got] == ["early"]
    # Crash: the task dies without a final commit; the late timer has not fired yet.
    assert first._task is not None
    first._task.cancel()
    assert first._consumer is not None
    await first._consumer.stop()
    second = harness.relay()
    await second.start()
    try:
        got = await harness.received(3, timeout_s=6)
    finally:
        await second.stop()
    names = [n for n, _ in got]
    assert names.count("late") == 1, names
    assert names[0] == "early"


async def test_an_invalid_timer_is_dead_lettered_and_the_rest_fire(harness: Harness) -> None:
    relay = harness.relay()
    await relay.start()
    try:
        await harness.publish_raw(harness.timer_topic, "k", b"not a timer")
        await harness.scheduler.schedule(
            delay_s=0, target_topic=harness.target, key="k", payload={"name": "fine"}
        )
        got = await harness.received(1)
    finally:
        await relay.stop()
    assert [n for n, _ in got] == ["fine"]
    assert len(harness.letters) == 1
    assert "invalid timer" in harness.letters[0].reason


async def test_timers_survive_a_rebalance_to_a_second_relay(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    harness = Harness(kafka_bootstrap, unique_prefix)
    # Two partitions: when the second relay joins, each relay ends up with one of them, so the
    # first relay gives one timer away and keeps the other, reading both again from Kafka.
    await ensure_topics(kafka_bootstrap, [harness.timer_topic], partitions=2)
    await ensure_topics(kafka_bootstrap, [harness.target], partitions=1)
    await harness.producer.start()
    first = harness.relay()
    second = harness.relay()
    try:
        await first.start()
        for partition in (0, 1):
            timer = Timer(
                timer_id=uuid.uuid4(),
                due_at=datetime.now(UTC) + timedelta(seconds=8),
                target_topic=harness.target,
                key=f"k{partition}",
                payload={"name": f"p{partition}"},
            )
            await harness.producer.send_and_wait(
                harness.timer_topic, value=timer.model_dump_json().encode(), partition=partition
            )
        deadline = time.monotonic() + 10
        while first.pending < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert first.pending == 2
        await second.start()
        got = await harness.received(2, timeout_s=20)
    finally:
        await second.stop()
        await first.stop()
        await harness.producer.stop()
    assert sorted(n for n, _ in got) == ["p0", "p1"]

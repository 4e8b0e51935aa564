"""The durable timer relay on the real broker: order by due time, no loss across a crash or a
rebalance, and a restart repeats at most what was handled in the last commit interval."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.events import DeadLetter, Timer
from schemas.topics import timer_topics
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

    def relay(self, **options: Any) -> TimerRelay:
        return TimerRelay(
            bootstrap_servers=self.bootstrap_servers,
            timer_topic=self.timer_topic,
            group_id=self.group,
            publish_raw=self.publish_raw,
            publish_dead_letter=self.dead_letter,
            stage="test",
            **options,
        )

    async def target_names(self) -> list[tuple[str, float]]:
        """Every (payload name, arrival time) on the target topic (one partition), to its end."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers)
        await consumer.start()
        tp = TopicPartition(self.target, 0)
        out: list[tuple[str, float]] = []
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            deadline = time.monotonic() + 30
            while await consumer.position(tp) < end:
                assert time.monotonic() < deadline, "the target topic was not read to its end"
                batch = await consumer.getmany(tp, timeout_ms=200)
                for records in batch.values():
                    out.extend((json.loads(r.value)["name"], r.timestamp / 1000) for r in records)
        finally:
            await consumer.stop()
        return out

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
    await ensure_topics(kafka_bootstrap, [*timer_topics(h.timer_topic), h.target], partitions=1)
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


async def test_a_timer_naming_a_topic_the_relay_does_not_fire_into_is_dead_lettered(
    harness: Harness,
) -> None:
    relay = harness.relay(targets=[harness.target])
    await relay.start()
    try:
        await harness.scheduler.schedule(
            delay_s=0, target_topic=f"{harness.target}.elsewhere", key="k", payload={"name": "x"}
        )
        await harness.scheduler.schedule(
            delay_s=0, target_topic=harness.target, key="k", payload={"name": "fine"}
        )
        got = await harness.received(1)
    finally:
        await relay.stop()
    assert [n for n, _ in got] == ["fine"]
    assert [letter.reason for letter in harness.letters] == [
        "timer targets a topic this relay does not fire into"
    ]


async def test_timers_survive_a_rebalance_to_a_second_relay(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    harness = Harness(kafka_bootstrap, unique_prefix)
    # Two partitions: when the second relay joins, each relay ends up with one of them, so the
    # first relay gives one timer away and keeps the other, reading both again from Kafka.
    await ensure_topics(kafka_bootstrap, timer_topics(harness.timer_topic), partitions=2)
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


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


async def _fired(relay: TimerRelay, count: int) -> bool:
    return relay.fired >= count


async def _schedule_shorts(harness: Harness, count: int, low_s: float, high_s: float) -> None:
    rng = random.Random(8)
    await asyncio.gather(
        *(
            harness.scheduler.schedule(
                delay_s=rng.uniform(low_s, high_s),
                target_topic=harness.target,
                key=f"k{i}",
                payload={"name": f"s{i}"},
            )
            for i in range(count)
        )
    )


def _raw_timer(harness: Harness, name: str, delay_s: float) -> bytes:
    timer = Timer(
        timer_id=uuid.uuid4(),
        due_at=datetime.now(UTC) + timedelta(seconds=delay_s),
        target_topic=harness.target,
        key=name,
        payload={"name": name},
    )
    return timer.model_dump_json().encode()


@pytest.mark.parametrize("written_to", ["tiers", "base topic"])
async def test_a_clean_restart_fires_again_almost_nothing(
    harness: Harness, written_to: str
) -> None:
    # Issue 8: one 1-hour timer at the head of a timer partition and 2,000 short ones behind it;
    # with the old watermark design a clean restart fired all 2,000 again. "tiers": scheduled as
    # the stages do; "base topic": all in one partition of `timers.<stage>`, as an upgrade from
    # the old design finds them.
    shorts = 2000
    first = harness.relay()
    await first.start()
    try:
        if written_to == "tiers":
            await harness.scheduler.schedule(
                delay_s=3600, target_topic=harness.target, key="long", payload={"name": "long"}
            )
            await _schedule_shorts(harness, shorts, 0.2, 2.5)
        else:
            rng = random.Random(8)
            values = [_raw_timer(harness, "long", 3600)]
            values += [_raw_timer(harness, f"s{i}", rng.uniform(0.2, 2.5)) for i in range(shorts)]
            sends = [
                await harness.producer.send(harness.timer_topic, value=v, partition=0)
                for v in values
            ]
            await asyncio.gather(*sends)
        await _until(lambda: _fired(first, shorts), 40, "the short timers fired")
    finally:
        await first.stop()
    second = harness.relay()
    await second.start()
    try:
        await _until(second.caught_up, 30, "the restarted relay read everything")
        assert second.pending == 1  # the hour-long timer, read again and still waiting
    finally:
        await second.stop()
    counts = Counter(name for name, _ in await harness.target_names())
    twice = sum(1 for n in counts.values() if n > 1)
    print(f"{written_to}: {sum(counts.values())} on the target, {twice} of {shorts} fired twice")
    assert len(counts) == shorts and "long" not in counts
    assert twice <= shorts // 100


async def test_a_killed_relay_repeats_only_its_last_commit_interval(harness: Harness) -> None:
    # A SIGKILL-style crash: the relay's task dies and nothing more is committed. What the next
    # relay repeats is what the first handled after its last commit; nothing is lost.
    shorts, interval = 2000, 0.5
    first = harness.relay(commit_interval_s=interval)
    await first.start()
    await _until(first.caught_up, 30, "the first relay joined")  # fires spread over 5 s, no burst
    await _schedule_shorts(harness, shorts, 0.5, 5.0)
    await _until(lambda: _fired(first, shorts // 2), 40, "half the timers fired")
    assert first._task is not None and first._consumer is not None
    first._task.cancel()
    crashed_at = time.time()
    await first._consumer.stop()
    assert first._producer is not None
    await first._producer.stop()
    fired_before = first.fired
    second = harness.relay(commit_interval_s=interval)
    await second.start()
    try:
        await _until(lambda: _fired(second, shorts - fired_before), 40, "the rest fired")
        await _until(second.caught_up, 30, "the second relay read everything")
    finally:
        await second.stop()
    arrivals = await harness.target_names()
    first_fire: dict[str, float] = {}
    for name, at in arrivals:
        first_fire.setdefault(name, at)
    counts = Counter(name for name, _ in arrivals)
    repeated = [name for name, n in counts.items() if n > 1]
    window_s = interval + 0.5  # the commit interval, and the time a step takes to commit
    in_window = sum(1 for at in first_fire.values() if crashed_at - window_s <= at <= crashed_at)
    print(f"killed after {fired_before} fired: {len(repeated)} fired twice, {in_window} in window")
    assert len(counts) == shorts  # nothing lost
    assert all(first_fire[name] >= crashed_at - window_s for name in repeated), repeated[:5]
    assert len(repeated) <= in_window

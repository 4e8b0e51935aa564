"""The dead-letter middleware with FastStream's in-memory broker (fast; the real-broker proof is
tests/e2e/test_pipeline.py::test_malformed_request_is_dead_lettered_and_the_next_one_completes)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from faststream.kafka import KafkaBroker, TestKafkaBroker

from schemas.events import GenerationRequested
from schemas.topics import Topics
from vidpipe.bus import RedeliveryBackoff, make_broker


async def test_poison_goes_to_the_dead_letter_topic_with_its_reason() -> None:
    topics = Topics("u.")
    broker, _publisher = make_broker("localhost:9092", stage="unit", topics=topics)
    handled: list[str] = []
    letters: list[dict[str, Any]] = []

    @broker.subscriber(topics.generation_requested, group_id="unit")
    async def on_request(event: GenerationRequested) -> None:
        handled.append(event.request_id)

    @broker.subscriber(topics.deadletter, group_id="unit-dlq")
    async def on_letter(body: dict[str, Any]) -> None:
        letters.append(body)

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(b"{oops", topics.generation_requested, key=b"k1")
        await test_broker.publish(
            json.dumps({"request_id": "r1", "prompt": ""}).encode(),
            topics.generation_requested,
            key=b"r1",
        )
        await test_broker.publish(
            json.dumps({"request_id": "r2", "prompt": "fine"}).encode(),
            topics.generation_requested,
            key=b"r2",
        )
    assert handled == ["r2"]
    assert [letter["original_key"] for letter in letters] == ["k1", "r1"]
    assert letters[0]["original_value"] == "{oops"
    assert "prompt" in letters[1]["reason"]
    assert all(letter["stage"] == "unit" for letter in letters)


# --- failures that are not the message's own: wait, then redeliver -----------------------------


class Sleeps:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _failing_broker(
    topics: Topics, stage: str, backoff: RedeliveryBackoff, failures: int
) -> tuple[KafkaBroker, list[str]]:
    """A broker whose handler fails `failures` times (a database outage, say), then succeeds."""
    broker, _publisher = make_broker("localhost:9092", stage=stage, topics=topics, backoff=backoff)
    handled: list[str] = []

    @broker.subscriber(topics.generation_requested, group_id=stage)
    async def on_request(event: GenerationRequested) -> None:
        if failures > len(handled):
            handled.append("failed")
            raise ConnectionError("database down")
        handled.append(event.request_id)

    return broker, handled


REQUEST = json.dumps({"request_id": "r1", "prompt": "a fox"}).encode()


async def _deliver(broker: KafkaBroker, topic: str, times: int) -> None:
    async with TestKafkaBroker(broker) as test_broker:
        for _ in range(times):
            # The in-memory broker hands every delivery the same offset: a redelivery.
            with contextlib.suppress(ConnectionError):
                await test_broker.publish(REQUEST, topic, key=b"r1")


async def test_a_failing_message_waits_longer_each_time_and_success_resets_its_count() -> None:
    topics = Topics("u.")
    sleeps = Sleeps()
    backoff = RedeliveryBackoff(sleep=sleeps)
    broker, handled = _failing_broker(topics, "unit", backoff, failures=3)
    await _deliver(broker, topics.generation_requested, times=4)
    assert handled == ["failed", "failed", "failed", "r1"]
    assert sleeps.waits == [0.2, 0.4, 0.8]
    assert backoff.failures(_Record(topics.generation_requested)) == 0


async def test_each_stage_counts_its_own_failures() -> None:
    topics = Topics("u.")
    first, second = Sleeps(), Sleeps()
    broker_a, _ = _failing_broker(topics, "a", RedeliveryBackoff(sleep=first), failures=10)
    broker_b, _ = _failing_broker(topics, "b", RedeliveryBackoff(sleep=second), failures=10)
    await _deliver(broker_a, topics.generation_requested, times=3)
    await _deliver(broker_b, topics.generation_requested, times=1)
    assert first.waits == [0.2, 0.4, 0.8]
    assert second.waits == [0.2]  # the same record, but another stage's first failure


def test_the_wait_doubles_up_to_its_cap() -> None:
    backoff = RedeliveryBackoff(first_s=0.5, max_s=3.0)
    assert [backoff.delay_s(n) for n in (1, 2, 3, 4, 10)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_the_failure_table_forgets_rather_than_grows() -> None:
    backoff = RedeliveryBackoff(max_tracked=2, sleep=Sleeps())
    for offset in range(3):
        await backoff.failed(_Record("t", offset), ConnectionError())
    assert backoff.failures(_Record("t", 2)) == 1
    assert backoff.failures(_Record("t", 0)) == 0


class _Record:
    """The three fields of a ConsumerRecord the backoff keys on."""

    def __init__(self, topic: str, offset: int = 0, partition: int = 0) -> None:
        self.topic = topic
        self.offset = offset
        self.partition = partition

"""The dead-letter middleware with FastStream's in-memory broker (fast; the real-broker proof is
tests/e2e/test_pipeline.py::test_malformed_request_is_dead_lettered_and_the_next_one_completes)."""

from __future__ import annotations

import json
from typing import Any

from faststream.kafka import TestKafkaBroker

from schemas.events import GenerationRequested
from schemas.topics import Topics
from vidpipe.bus import make_broker


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

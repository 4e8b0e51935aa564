"""Bus wiring shared by every stage: the broker, publishing events, dead letters, timers.

Handlers never touch the broker: they receive a `Publisher` (an interface with one method per
concern) so tests can pass an in-memory one, the way httpx swaps transports.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Protocol

from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CollectorRegistry

from schemas.events import DeadLetter, Event
from schemas.topics import Topics
from vidpipe.bus.deadletter import DeadLetterMiddleware
from vidpipe.bus.timers import TimerRelay, TimerScheduler

__all__ = [
    "DeadLetterMiddleware",
    "KafkaPublisher",
    "Publisher",
    "TimerRelay",
    "TimerScheduler",
    "make_broker",
]

JSON_HEADERS = {"content-type": "application/json"}


class Publisher(Protocol):
    async def publish(self, event: Event) -> None: ...

    async def schedule(
        self,
        *,
        delay_s: float,
        target_topic: str,
        key: str,
        payload: dict[str, Any],
        timer_id: uuid.UUID | None = None,
    ) -> None: ...


class KafkaPublisher:
    """Publishes events (keyed by request_id) and schedules this stage's durable timers."""

    def __init__(self, broker: KafkaBroker, topics: Topics, stage: str) -> None:
        self._broker = broker
        self.topics = topics
        self.stage = stage
        self.timers = TimerScheduler(topics.timers(stage), self.publish_raw)

    async def publish(self, event: Event) -> None:
        await self._broker.publish(
            event.model_dump_json().encode(),
            topic=self.topics.for_event(event),
            key=event.request_id.encode(),
            headers={**JSON_HEADERS, "event-type": event.event_type},
        )

    async def publish_raw(self, topic: str, key: str, value: bytes) -> None:
        await self._broker.publish(value, topic=topic, key=key.encode(), headers=JSON_HEADERS)

    async def publish_dead_letter(self, letter: DeadLetter) -> None:
        await self.publish_raw(
            self.topics.deadletter, letter.original_key or "", letter.model_dump_json().encode()
        )

    async def schedule(
        self,
        *,
        delay_s: float,
        target_topic: str,
        key: str,
        payload: dict[str, Any],
        timer_id: uuid.UUID | None = None,
    ) -> None:
        await self.timers.schedule(
            delay_s=delay_s, target_topic=target_topic, key=key, payload=payload, timer_id=timer_id
        )


def make_broker(
    bootstrap: str,
    *,
    stage: str,
    topics: Topics,
    registry: CollectorRegistry | None = None,
) -> tuple[KafkaBroker, KafkaPublisher]:
    """A broker whose every subscriber dead-letters poison, plus the stage's publisher."""
    middlewares: list[Any] = []
    if registry is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=registry, app_name=stage))
    broker = KafkaBroker(
        bootstrap,
        client_id=f"vidpipe-{stage}",
        logger=logging.getLogger(f"vidpipe.{stage}.broker"),
        middlewares=middlewares,
        # A produce call returns once the broker has the record (acks=all on one node is cheap).
        acks="all",
        enable_idempotence=True,
    )
    publisher = KafkaPublisher(broker, topics, stage)
    broker.add_middleware(DeadLetterMiddleware.factory(stage, publisher.publish_dead_letter))
    return broker, publisher

"""What handlers publish through: the `Publisher` interface and its Kafka implementation.

A stage declares the event types it writes; `KafkaPublisher` makes one FastStream publisher per
type and sends every event through it, so the AsyncAPI document lists exactly the publishers
that send. An event type the stage did not declare is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from faststream.kafka import KafkaBroker
from faststream.kafka.publisher import DefaultPublisher
from pydantic import BaseModel

from schemas.events import DeadLetter, Event, JobFailed
from schemas.topics import Topics
from vidpipe.bus.timers import TimerScheduler
from vidpipe.errors import StageWiringError

__all__ = ["JSON_HEADERS", "KafkaPublisher", "Publisher"]

JSON_HEADERS = {"content-type": "application/json"}


class Publisher(Protocol):
    """What a handler may do to the bus: publish an event, schedule a timer."""

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
    """Publishes a stage's declared events (keyed by request_id), its dead letters and timers."""

    def __init__(
        self,
        broker: KafkaBroker,
        topics: Topics,
        stage: str,
        *,
        publishes: Iterable[type[Event]] = (),
        reports_job_failures: bool = False,
    ) -> None:
        self._broker = broker
        self.topics = topics
        self.stage = stage
        self.timers = TimerScheduler(topics.timers(stage), self.publish_raw)
        self._by_event: dict[type[Event], DefaultPublisher] = {
            event: self._declare(topics.for_event(event), event) for event in publishes
        }
        # Every stage can dead-letter (its middleware, its timer relay): documented like events.
        self._dead_letters = self._declare(topics.deadletter, DeadLetter)
        # A stage that reports the requests it gives up on (vidpipe.bus.deadletter) publishes
        # JobFailed on that path whether or not its handlers do.
        self.reports_job_failures = reports_job_failures
        self._job_failed: DefaultPublisher | None = None
        if reports_job_failures:
            self._job_failed = self._by_event.get(JobFailed) or self._declare(
                topics.for_event(JobFailed), JobFailed
            )

    @property
    def declared(self) -> tuple[type[Event], ...]:
        """The event types this stage may publish, in the order they were declared."""
        return tuple(self._by_event)

    def _declare(self, topic: str, schema: type[BaseModel]) -> DefaultPublisher:
        return self._broker.publisher(
            topic,
            title=f"{self.stage}:{schema.__name__}",
            schema=schema,
            description=(schema.__doc__ or schema.__name__).strip().splitlines()[0],
        )

    async def publish(self, event: Event) -> None:
        publisher = self._by_event.get(type(event))
        if publisher is None:
            declared = ", ".join(e.__name__ for e in self._by_event) or "nothing"
            raise StageWiringError(
                f"stage {self.stage!r} publishes {type(event).__name__} but declares only "
                f"{declared}: add it to the stage's `publishes=`"
            )
        await publisher.publish(
            event.model_dump_json().encode(),
            key=event.request_id.encode(),
            headers={**JSON_HEADERS, "event-type": event.event_type},
        )

    async def publish_raw(self, topic: str, key: str, value: bytes) -> None:
        """Bytes to any topic: timers, and what timers release, are not declared events."""
        # A copy: FastStream's telemetry middleware writes `traceparent` into the dict it gets.
        await self._broker.publish(value, topic=topic, key=key.encode(), headers=dict(JSON_HEADERS))

    async def publish_dead_letter(self, letter: DeadLetter) -> None:
        await self._dead_letters.publish(
            letter.model_dump_json().encode(),
            key=(letter.original_key or "").encode(),
            headers=dict(JSON_HEADERS),  # a copy, as in publish_raw
        )

    async def publish_job_failed(self, event: JobFailed) -> None:
        """The failure path's `JobFailed` (declared for it by `reports_job_failures`)."""
        if self._job_failed is None:
            raise StageWiringError(f"stage {self.stage!r} does not report job failures")
        await self._job_failed.publish(
            event.model_dump_json().encode(),
            key=event.request_id.encode(),
            headers={**JSON_HEADERS, "event-type": event.event_type},
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

"""Durable timers on Kafka: pause-until-due, no sleeping handlers, no cron.

A stage that must come back to something later (poll a job again in 5 s, retry a submission when
a quota slot frees) publishes a `Timer` to its own topic `{prefix}timers.<stage>`. The stage's
`TimerRelay` consumes that topic with its own consumer group. When the record at the head of a
partition is not yet due, the relay pauses that partition and seeks back to it; once it is due, the
relay publishes the timer's payload to its target topic and only then commits the offset. So a
killed process loses no timer: the uncommitted ones are read again by whoever owns the partition
next. A timer may fire twice around a crash (at least once); the targets are idempotent.

Timers on one partition fire in log order: a long timer ahead of a short one delays the short one.
Each stage uses one timer topic for delays of a similar size, which keeps that cost small.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from pydantic import ValidationError

from schemas.events import DeadLetter, Timer
from vidpipe.bus.deadletter import build_dead_letter

__all__ = ["TimerRelay", "TimerScheduler"]

log = structlog.get_logger("vidpipe.timers")

PublishRaw = Callable[[str, str, bytes], Awaitable[None]]


class TimerScheduler:
    """Schedules timers for one stage."""

    def __init__(self, timer_topic: str, publish_raw: PublishRaw) -> None:
        self.timer_topic = timer_topic
        self._publish_raw = publish_raw

    async def schedule(
        self, *, delay_s: float, target_topic: str, key: str, payload: dict[str, Any]
    ) -> Timer:
        timer = Timer(
            timer_id=uuid.uuid4(),
            due_at=datetime.now(UTC) + timedelta(seconds=max(0.0, delay_s)),
            target_topic=target_topic,
            key=key,
            payload=payload,
        )
        await self._publish_raw(self.timer_topic, key, timer.model_dump_json().encode())
        return timer


class _Forget(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, relay: TimerRelay) -> None:
        self._relay = relay

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self._relay._paused.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


class TimerRelay:
    """Releases due timers of one timer topic to their target topics."""

    def __init__(
        self,
        *,
        bootstrap: str,
        timer_topic: str,
        group_id: str,
        publish_raw: PublishRaw,
        publish_dead_letter: Callable[[DeadLetter], Awaitable[None]],
        stage: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = timer_topic
        self._group_id = group_id
        self._publish_raw = publish_raw
        self._publish_dead_letter = publish_dead_letter
        self._stage = stage
        self._clock = clock
        self._paused: dict[TopicPartition, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.fired = 0

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Paused partitions keep the consumer polling, so the group never times it out.
            max_poll_interval_ms=300_000,
        )
        self._consumer.subscribe([self._topic], listener=_Forget(self))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"timer-relay:{self._topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                await self._step(consumer)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The consumer position is rewound by not committing; look again shortly.
                log.exception("timer_relay_error", topic=self._topic)
                await asyncio.sleep(1.0)

    def _wait_ms(self) -> int:
        if not self._paused:
            return 500
        until = min(self._paused.values()) - self._clock()
        return int(min(500.0, max(10.0, until * 1000)))

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        self._resume_due(consumer)
        batch = await consumer.getmany(timeout_ms=self._wait_ms(), max_records=200)
        for tp, records in batch.items():
            last_done: int | None = None
            for record in records:
                due = await self._due_at(record)
                if due is not None and due > self._clock():
                    consumer.seek(tp, record.offset)
                    consumer.pause(tp)
                    self._paused[tp] = due
                    break
                last_done = record.offset
            if last_done is not None:
                await consumer.commit({tp: last_done + 1})
        self._resume_due(consumer)

    async def _due_at(self, record: Any) -> float | None:
        """Fire the timer if due; return its due time if not. None means handled."""
        try:
            timer = Timer.model_validate_json(record.value)
        except ValidationError as exc:
            await self._publish_dead_letter(
                build_dead_letter(record, self._stage, f"invalid timer: {exc.error_count()} errors")
            )
            return None
        due = timer.due_at.timestamp()
        if due > self._clock():
            return due
        await self._publish_raw(timer.target_topic, timer.key, _json_bytes(timer.payload))
        self.fired += 1
        return None

    def _resume_due(self, consumer: AIOKafkaConsumer) -> None:
        now = self._clock()
        for tp, due in list(self._paused.items()):
            if due <= now:
                consumer.resume(tp)
                del self._paused[tp]


def _json_bytes(payload: dict[str, Any]) -> bytes:
    import json

    return json.dumps(payload, separators=(",", ":"), default=str).encode()

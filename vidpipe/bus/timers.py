"""Durable timers on Kafka: no sleeping handlers, no cron.

A stage that must come back to something later (poll a job again in 5 s, retry a download in an
hour) publishes a `Timer` to its own topic `{prefix}timers.<stage>`. The stage's `TimerRelay`
consumes that topic in its own consumer group and keeps the timers it has read in a heap ordered
by due time. When one is due it publishes the timer's payload to the target topic.

Offsets are committed only up to the oldest timer of each partition that has not fired yet (the
watermark), so a killed process loses nothing: whoever owns the partition next reads again from
the watermark. Timers past the watermark that had already fired fire a second time then: delivery
is at least once, and every target is idempotent. A long timer never holds up a short one behind
it, because firing follows due time, not log order.

Memory is bounded: past `max_pending` timers in the heap the relay pauses its partitions (the
pause-until-due of the design) until enough have fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from pydantic import ValidationError

from schemas.events import DeadLetter, Timer, utcnow
from vidpipe.bus.deadletter import build_dead_letter

__all__ = ["TimerRelay", "TimerScheduler"]

log = structlog.get_logger("vidpipe.timers")

PublishRaw = Callable[[str, str, bytes], Awaitable[None]]


class TimerScheduler:
    """Schedules timers for one stage."""

    def __init__(
        self,
        timer_topic: str,
        publish_raw: PublishRaw,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.timer_topic = timer_topic
        self._publish_raw = publish_raw
        self._clock = clock

    async def schedule(
        self,
        *,
        delay_s: float,
        target_topic: str,
        key: str,
        payload: dict[str, Any],
        timer_id: uuid.UUID | None = None,
    ) -> Timer:
        """Publish a timer. Pass a deterministic `timer_id` for chains of timers (poll after
        poll): if a crash makes a step run twice, the relay keeps one copy of the next timer."""
        timer = Timer(
            timer_id=timer_id or uuid.uuid4(),
            due_at=self._clock() + timedelta(seconds=max(0.0, delay_s)),
            target_topic=target_topic,
            key=key,
            payload=payload,
        )
        await self._publish_raw(self.timer_topic, key, timer.model_dump_json().encode())
        return timer


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    tp: TopicPartition = field(compare=False)
    offset: int = field(compare=False)
    timer: Timer = field(compare=False)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, relay: TimerRelay) -> None:
        self._relay = relay

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._relay._forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


class TimerRelay:
    """Releases due timers of one timer topic to their target topics."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        timer_topic: str,
        group_id: str,
        publish_raw: PublishRaw,
        publish_dead_letter: Callable[[DeadLetter], Awaitable[None]],
        stage: str,
        clock: Callable[[], float] = time.time,
        max_pending: int = 100_000,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = timer_topic
        self._group_id = group_id
        self._publish_raw = publish_raw
        self._publish_dead_letter = publish_dead_letter
        self._stage = stage
        self._clock = clock
        self._max_pending = max_pending
        self._heap: list[_Pending] = []
        self._seq = itertools.count()
        # Per partition: offsets read but not fired yet, and the next offset to read.
        self._unfired: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._paused = False
        # Timer ids taken in, oldest first: a second timer with a known id is a copy from a step
        # that ran twice, and is dropped. Bounded, since copies arrive close together.
        self._seen: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.fired = 0

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._unfired.values())

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._consumer.subscribe([self._topic], listener=_Rebalance(self))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"timer-relay:{self._topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit()
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
                # Nothing is committed past an unfired timer, so a failed publish is retried.
                log.exception("timer_relay_error", topic=self._topic)
                await asyncio.sleep(1.0)

    def _wait_ms(self) -> int:
        if not self._heap:
            return 500
        until = self._heap[0].due - self._clock()
        return int(min(500.0, max(0.0, until * 1000)))

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        batch = await consumer.getmany(timeout_ms=self._wait_ms(), max_records=500)
        for tp, records in batch.items():
            for record in records:
                await self._take(tp, record)
        await self._fire_due()
        await self._commit()
        self._apply_backpressure(consumer)

    async def _take(self, tp: TopicPartition, record: Any) -> None:
        self._next[tp] = record.offset + 1
        try:
            timer = Timer.model_validate_json(record.value)
        except ValidationError as exc:
            await self._publish_dead_letter(
                build_dead_letter(record, self._stage, f"invalid timer: {exc.error_count()} errors")
            )
            return
        if timer.timer_id in self._seen:
            return
        self._seen[timer.timer_id] = None
        if len(self._seen) > 4 * self._max_pending:
            self._seen.popitem(last=False)
        self._unfired.setdefault(tp, set()).add(record.offset)
        heapq.heappush(
            self._heap,
            _Pending(timer.due_at.timestamp(), next(self._seq), tp, record.offset, timer),
        )

    async def _fire_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0].due <= now:
            item = heapq.heappop(self._heap)
            offsets = self._unfired.get(item.tp)
            if offsets is None or item.offset not in offsets:
                continue  # its partition was revoked: the new owner fires it
            await self._publish_raw(
                item.timer.target_topic,
                item.timer.key,
                json.dumps(item.timer.payload, separators=(",", ":"), default=str).encode(),
            )
            offsets.discard(item.offset)
            self.fired += 1

    async def _commit(self) -> None:
        if self._consumer is None:
            return
        marks: dict[TopicPartition, int] = {}
        for tp, next_offset in self._next.items():
            unfired = self._unfired.get(tp)
            mark = min(unfired) if unfired else next_offset
            if self._committed.get(tp) != mark:
                marks[tp] = mark
        if marks:
            await self._consumer.commit(marks)
            self._committed.update(marks)

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> None:
        full = self.pending >= self._max_pending
        if full and not self._paused:
            consumer.pause(*consumer.assignment())
            self._paused = True
            log.warning("timer_relay_full", topic=self._topic, pending=self.pending)
        elif not full and self._paused:
            consumer.resume(*consumer.assignment())
            self._paused = False

    async def _forget(self, revoked: set[TopicPartition]) -> None:
        # Commit our watermark for the partitions we lose, then drop their timers: the next
        # owner reads them again from that watermark.
        with contextlib.suppress(Exception):
            await self._commit()
        for tp in revoked:
            self._unfired.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
        # Unfired timers of those partitions will be read again (by us, if the partition comes
        # back): forget that we saw them, or the copy check would drop them for good.
        for pending in self._heap:
            if pending.tp in revoked:
                self._seen.pop(pending.timer.timer_id, None)
        self._heap = [p for p in self._heap if p.tp not in revoked]
        heapq.heapify(self._heap)

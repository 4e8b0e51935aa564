"""Durable timers on Kafka: no sleeping handlers, no cron.

A stage that must come back to something later (poll a job again in 5 s, retry a download in an
hour) publishes a `Timer`. The timer waits in fixed-delay tiers: topics `timers.<stage>.<tier>`
(`TIMER_TIERS_S`: 1 s, 5 s, 30 s, 2 min, 10 min, 1 h) whose every message comes out exactly
`tier` seconds after it went in, so within a partition log order is release order. The scheduler
puts a timer in the longest tier that does not overshoot its delay (under a second: the base
topic `timers.<stage>`); when it comes out, the stage's `TimerRelay` either fires it (publishes its
payload to the target topic) or moves it on to the tier that fits what is left (cascading).

The head of each partition is therefore its watermark: the relay pauses a partition until its
head comes out, handles records in log order and commits what it handled (every
`commit_interval_s`, on rebalance, on stop). A restart or a rebalance repeats at most what was
handled since the last commit, whatever long timers wait elsewhere. A head with less than the
smallest tier left waits at the head until due, so a timer behind it in the same partition may
fire up to one smallest tier (1 s) late. Memory holds one fetched batch per partition, not every
timer read.

Delivery is at least once; copies of one `timer_id` (a step that ran twice) are collapsed by the
relay that handles them, since every hop of a timer keeps its partition number.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from pydantic import ValidationError

from schemas.events import DeadLetter, Timer, utcnow
from schemas.topics import TIMER_TIERS_S, timer_tier_topic
from vidpipe.bus.deadletter import build_dead_letter
from vidpipe.bus.security import KafkaSecurity, client_kwargs
from vidpipe.bus.tracing import record_context
from vidpipe.metrics import current as current_metrics

__all__ = ["Release", "TimerRelay", "TimerScheduler", "next_release", "tier_for", "wake_at"]

log = structlog.get_logger("vidpipe.timers")

PublishRaw = Callable[[str, str, bytes], Awaitable[None]]


def tier_for(delay_s: float, tiers: Sequence[int] = TIMER_TIERS_S) -> int:
    """The longest tier not longer than `delay_s`; 0 (the base topic) below the smallest."""
    return max((tier for tier in tiers if tier <= delay_s), default=0)


def wake_at(appended_s: float, tier_s: int, due_s: float) -> float:
    """When a record of tier `tier_s`, appended at `appended_s`, comes out: never after its due
    time (a producer clock ahead of ours must not delay a timer)."""
    return min(appended_s + tier_s, due_s)


@dataclass(frozen=True)
class Release:
    """What the relay does with a record at the head of its partition, at a given time."""

    action: Literal["wait", "fire", "forward"]
    at: float = 0.0  # wait: when to look again
    tier_s: int = 0  # forward: the tier it moves on to


def next_release(
    *, due_s: float, wake_s: float, now_s: float, tiers: Sequence[int] = TIMER_TIERS_S
) -> Release:
    """The decision for the record at the head of a partition: wait (not out yet, or less than
    the smallest tier left: it waits at the head until due), fire it, or move it on to the tier
    that fits what is left."""
    if now_s < wake_s:
        return Release("wait", at=wake_s)
    left = due_s - now_s
    if left <= 0:
        return Release("fire")
    tier = tier_for(left, tiers)
    if tier == 0:
        return Release("wait", at=due_s)
    return Release("forward", tier_s=tier)


class TimerScheduler:
    """Schedules timers for one stage."""

    def __init__(
        self,
        timer_topic: str,
        publish_raw: PublishRaw,
        *,
        clock: Callable[[], datetime] = utcnow,
        tiers: Sequence[int] = TIMER_TIERS_S,
    ) -> None:
        self.timer_topic = timer_topic
        self._publish_raw = publish_raw
        self._clock = clock
        self._tiers = tuple(tiers)

    async def schedule(
        self,
        *,
        delay_s: float,
        target_topic: str,
        key: str,
        payload: dict[str, Any],
        timer_id: uuid.UUID | None = None,
    ) -> Timer:
        """Publish a timer to the tier that fits its delay. Pass a deterministic `timer_id` for
        chains of timers (poll after poll): if a crash makes a step run twice, the relay keeps
        one copy of the next timer."""
        delay_s = max(0.0, delay_s)
        timer = Timer(
            timer_id=timer_id or uuid.uuid4(),
            due_at=self._clock() + timedelta(seconds=delay_s),
            target_topic=target_topic,
            key=key,
            payload=payload,
        )
        tier = tier_for(delay_s, self._tiers)
        topic = timer_tier_topic(self.timer_topic, tier) if tier else self.timer_topic
        await self._publish_raw(topic, key, timer.model_dump_json().encode())
        return timer


@dataclass
class _Entry:
    """A record read and not handled yet (it waits at or behind the head of its partition)."""

    offset: int
    value: bytes
    timer: Timer | None  # None: not a timer, dead-lettered when its turn comes
    wake: float
    record: Any = field(repr=False)
    problem: str = ""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, relay: TimerRelay) -> None:
        self._relay = relay

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._relay._forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


class TimerRelay:
    """Releases the due timers of one stage's timer topics (the base topic and its tiers)."""

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
        remember_fired: int = 100_000,
        commit_interval_s: float = 1.0,
        tiers: Sequence[int] = TIMER_TIERS_S,
        stop_timeout_s: float = 10.0,
        targets: Collection[str] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._security = client_kwargs(security)
        # The topics a timer may fire into (None: any). A stage's timers only ever target its
        # own `.due` topic; a record on a timer topic naming another one (a forged or misrouted
        # timer) would otherwise let whoever can write timers inject into any topic.
        self._targets = frozenset(targets) if targets is not None else None
        self._topic = timer_topic
        self._tier_of = {timer_tier_topic(timer_topic, t): t for t in tiers} | {timer_topic: 0}
        self._tiers = tuple(tiers)
        self._group_id = group_id
        self._publish_raw = publish_raw
        self._publish_dead_letter = publish_dead_letter
        self._stage = stage
        self._clock = clock
        self._commit_interval_s = commit_interval_s
        self._stop_timeout_s = stop_timeout_s
        # Per partition: records read and not handled (the head first) and the next offset after
        # the last handled one, which is what gets committed.
        self._buffer: dict[TopicPartition, deque[_Entry]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        # Timer ids fired, oldest first: a copy from a step that ran twice is dropped. Bounded,
        # since copies arrive close together.
        self._fired: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._remember_fired = remember_fired
        self._partitions: dict[str, int] = {}
        # A step (fetch, release, commit) and a rebalance never interleave.
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.fired = 0
        self.forwarded = 0

    @property
    def topics(self) -> list[str]:
        """Every topic this relay reads: the base timer topic and its tiers."""
        return list(self._tier_of)

    @property
    def pending(self) -> int:
        """Timers read and not handled yet (in memory, waiting at or behind a head)."""
        return sum(len(b) for b in self._buffer.values())

    async def start(self) -> None:
        # Moves between tiers go through the relay's own idempotent producer, each to the
        # partition number it came from: with the range assignor the relay that owns partition
        # p of one tier owns p of all, so every hop of a timer stays with one relay.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            **self._security,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Range first; round robin lets a relay join a group of older relays during a
            # rolling upgrade (the group uses the strategy every member knows).
            partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
            max_partition_fetch_bytes=256 * 1024,
            **self._security,
        )
        self._consumer.subscribe(self.topics, listener=_Rebalance(self))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"timer-relay:{self._topic}")

    async def stop(self) -> None:
        """Finish the current step, commit what was handled, close."""
        if self._task is not None:
            acquired = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._stop_timeout_s):
                    acquired = await self._lock.acquire()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if acquired:
                self._lock.release()
            self._task = None
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit(force=True)
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def caught_up(self) -> bool:
        """True when every assigned partition is read to its end and nothing is due now."""
        consumer = self._consumer
        if consumer is None or not consumer.assignment():
            return False
        async with self._lock:
            now = self._clock()
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None or await consumer.position(tp) < high:
                    return False
            return self._next_wake() > now

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                async with self._lock:
                    await self._step(consumer)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing unhandled is committed, so a failed publish is retried.
                log.exception("timer_relay_error", topic=self._topic)
                await asyncio.sleep(1.0)

    def _next_wake(self) -> float:
        return min((b[0].wake for b in self._buffer.values() if b), default=float("inf"))

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        wait_s = min(0.5, max(0.0, self._next_wake() - self._clock()))
        batch = await consumer.getmany(timeout_ms=int(wait_s * 1000), max_records=1000)
        for tp, records in batch.items():
            self._take(tp, records)
        for tp in list(self._buffer):
            await self._release_heads(tp)
        await self._commit()
        # A partition with records waiting is paused: no more is read behind its head (memory
        # stays bounded) until the head comes out.
        assigned = consumer.assignment()
        waiting = {tp for tp, b in self._buffer.items() if b and tp in assigned}
        if waiting:
            consumer.pause(*waiting)
        ready = (assigned - waiting) & consumer.paused()
        if ready:
            consumer.resume(*ready)

    def _take(self, tp: TopicPartition, records: list[Any]) -> None:
        tier = self._tier_of.get(tp.topic, 0)
        buffer = self._buffer.setdefault(tp, deque())
        for record in records:
            if tp not in self._next:
                self._next[tp] = record.offset
            try:
                timer = Timer.model_validate_json(record.value)
            except ValidationError as exc:
                problem = f"invalid timer: {exc.error_count()} errors"
                buffer.append(_Entry(record.offset, record.value, None, 0.0, record, problem))
                continue
            if self._targets is not None and timer.target_topic not in self._targets:
                problem = "timer targets a topic this relay does not fire into"
                buffer.append(_Entry(record.offset, record.value, None, 0.0, record, problem))
                continue
            due = timer.due_at.timestamp()
            appended = record.timestamp / 1000 if record.timestamp >= 0 else due
            wake = wake_at(appended, tier, due)
            buffer.append(_Entry(record.offset, record.value, timer, wake, record))

    async def _release_heads(self, tp: TopicPartition) -> None:
        """Handle the records at the head of one partition that are out, in log order."""
        buffer = self._buffer[tp]
        now = self._clock()
        sends: list[Awaitable[Any]] = []
        fires: list[uuid.UUID] = []
        ids: set[uuid.UUID] = set()
        handled = 0
        for entry in buffer:
            if entry.timer is None:
                sends.append(self._dead_letter(entry.record, entry.problem))
                handled += 1
                continue
            timer_id = entry.timer.timer_id
            if timer_id in self._fired or timer_id in ids:
                handled += 1  # a copy (a step that ran twice) of a timer fired or moved on
                continue
            decision = next_release(
                due_s=entry.timer.due_at.timestamp(),
                wake_s=entry.wake,
                now_s=now,
                tiers=self._tiers,
            )
            if decision.action == "wait":
                entry.wake = decision.at
                break
            if decision.action == "fire":
                sends.append(self._fire(entry.timer, entry.record))
                fires.append(timer_id)
            else:
                sends.append(self._send(timer_tier_topic(self._topic, decision.tier_s), tp, entry))
                self.forwarded += 1
            ids.add(timer_id)
            handled += 1
        if not handled:
            return
        # Concurrently, then all or nothing: a failed publish leaves the records to be handled
        # again (at least once), in order.
        await asyncio.gather(*sends)
        for timer_id in fires:
            self._mark_fired(timer_id)
        self._next[tp] = buffer[handled - 1].offset + 1
        for _ in range(handled):
            buffer.popleft()

    async def _fire(self, timer: Timer, record: Any) -> None:
        # In the trace of whoever scheduled the timer (its record's headers), so the handler
        # of what it releases continues that trace.
        with record_context(record):
            await self._publish_raw(
                timer.target_topic,
                timer.key,
                json.dumps(timer.payload, separators=(",", ":"), default=str).encode(),
            )
        self.fired += 1
        current_metrics().timer_fired(time.time() - timer.due_at.timestamp())

    def _mark_fired(self, timer_id: uuid.UUID) -> None:
        self._fired[timer_id] = None
        if len(self._fired) > self._remember_fired:
            self._fired.popitem(last=False)

    async def _dead_letter(self, record: Any, reason: str) -> None:
        with record_context(record):
            await self._publish_dead_letter(build_dead_letter(record, self._stage, reason))
        current_metrics().dead_lettered(str(record.topic), poison=True, error_type="InvalidTimer")

    async def _send(self, topic: str, source: TopicPartition, entry: _Entry) -> None:
        """Move a timer to another of this relay's topics, keeping its partition number."""
        assert self._producer is not None and entry.timer is not None
        count = self._partitions.get(topic)
        if count is None:
            count = len(await self._producer.partitions_for(topic))
            self._partitions[topic] = count
        partition = source.partition if source.partition < count else None
        # Its headers too: they carry the trace of whoever scheduled it (vidpipe.bus.tracing).
        await self._producer.send_and_wait(
            topic,
            value=entry.value,
            key=entry.timer.key.encode(),
            partition=partition,
            headers=list(getattr(entry.record, "headers", None) or ()),
        )

    async def _commit(self, *, force: bool = False) -> None:
        now = self._clock()
        if self._consumer is None or (
            not force and now - self._last_commit < self._commit_interval_s
        ):
            return
        self._last_commit = now
        marks = {tp: n for tp, n in self._next.items() if self._committed.get(tp) != n}
        if marks:
            await self._consumer.commit(marks)
            self._committed.update(marks)

    async def _forget(self, revoked: set[TopicPartition]) -> None:
        # Commit what was handled on the partitions we lose, then drop their records: the next
        # owner reads on from there.
        async with self._lock:
            with contextlib.suppress(Exception):
                await self._commit(force=True)
            for tp in revoked:
                self._buffer.pop(tp, None)
                self._next.pop(tp, None)
                self._committed.pop(tp, None)

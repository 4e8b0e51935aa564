"""Poison messages go to `{prefix}deadletter`, whole and with the reason; the stream moves on.

A message is poison when it is not JSON, fails its schema, has an unknown `event_type`, or a
handler refuses it with `PoisonMessage`. Any other exception is not poison: it propagates, the
offset is not committed, and the message is delivered again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from faststream import ContextRepo
from faststream.message import StreamMessage
from faststream.middlewares import BaseMiddleware
from pydantic import ValidationError

from schemas.events import DeadLetter
from vidpipe.errors import PoisonMessage

__all__ = [
    "DeadLetterMiddleware",
    "RedeliveryBackoff",
    "build_dead_letter",
    "describe_poison",
]

log = structlog.get_logger("vidpipe.deadletter")

PublishDeadLetter = Callable[[DeadLetter], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


def describe_poison(exc: BaseException) -> str | None:
    """A one-paragraph reason when `exc` means the message itself is bad, else None."""
    if isinstance(exc, PoisonMessage):
        return f"refused: {exc}"
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return f"not JSON: {exc}"
    if isinstance(exc, ValidationError):
        problems = []
        for err in exc.errors(include_url=False, include_input=False)[:10]:
            where = ".".join(str(p) for p in err["loc"]) or "(message)"
            problems.append(f"{where}: {err['msg']}")
        return "schema validation failed: " + "; ".join(problems)
    return None


def build_dead_letter(record: Any, stage: str, reason: str) -> DeadLetter:
    """A DeadLetter for an aiokafka ConsumerRecord."""
    key = record.key
    value = record.value or b""
    return DeadLetter(
        stage=stage,
        reason=reason[:4000],
        original_topic=record.topic,
        original_partition=record.partition,
        original_offset=record.offset,
        original_key=key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key,
        original_value=value.decode("utf-8", "backslashreplace"),
        original_timestamp_ms=record.timestamp,
    )


class RedeliveryBackoff:
    """Consecutive failures of each message a stage could not handle, and the wait they earn.

    A message that fails for a reason that is not its own (a database or storage outage) is
    delivered again; waiting a little longer each time keeps that from becoming a hot loop,
    without giving the message up. One per stage (`make_broker` makes it), so stages and tests
    sharing a process never share counts.
    """

    def __init__(
        self,
        *,
        first_s: float = 0.2,
        max_s: float = 10.0,
        max_tracked: int = 10_000,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self._max_tracked = max_tracked
        self._sleep = sleep
        # Keyed by (topic, partition, offset): a redelivery is the same record again.
        self._failures: dict[tuple[str, int, int], int] = {}

    def failures(self, record: Any) -> int:
        """How many times in a row this record has failed so far."""
        return self._failures.get(_where(record), 0)

    def delay_s(self, failures: int) -> float:
        """The wait before the next delivery after `failures` failures in a row (doubling)."""
        return float(min(self._max_s, self._first_s * 2 ** (failures - 1)))

    async def failed(self, record: Any, exc: Exception) -> None:
        """Count one more failure of `record`, then wait before it is delivered again."""
        where = _where(record)
        count = self._failures.get(where, 0) + 1
        if len(self._failures) >= self._max_tracked:
            self._failures.clear()  # bounded: forgetting only shortens a wait
        self._failures[where] = count
        delay = self.delay_s(count)
        log.warning(
            "handler_failed_will_redeliver",
            topic=where[0],
            partition=where[1],
            offset=where[2],
            attempt=count,
            retry_in_s=delay,
            error=type(exc).__name__,
        )
        await self._sleep(delay)

    def succeeded(self, record: Any) -> None:
        self._failures.pop(_where(record), None)


def _where(record: Any) -> tuple[str, int, int]:
    if isinstance(record, tuple) or record is None:
        return ("", -1, -1)
    return (record.topic, record.partition, record.offset)


class DeadLetterMiddleware(BaseMiddleware):
    """FastStream middleware: catch poison, publish it to the dead-letter topic, ack it.

    Any other failure waits out the stage's `RedeliveryBackoff` and propagates, so the offset is
    not committed and the message comes again.
    """

    def __init__(
        self,
        msg: Any,
        /,
        *,
        context: ContextRepo,
        stage: str,
        publish: PublishDeadLetter,
        backoff: RedeliveryBackoff,
    ) -> None:
        super().__init__(msg, context=context)
        self._stage = stage
        self._publish = publish
        self._backoff = backoff

    @classmethod
    def factory(
        cls, stage: str, publish: PublishDeadLetter, backoff: RedeliveryBackoff
    ) -> Callable[..., DeadLetterMiddleware]:
        """What `broker.add_middleware` takes: FastStream builds one middleware per message."""

        def make(msg: Any, /, *, context: ContextRepo) -> DeadLetterMiddleware:
            return cls(msg, context=context, stage=stage, publish=publish, backoff=backoff)

        return make

    async def consume_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        record = msg.raw_message
        try:
            result = await call_next(msg)
        except Exception as exc:
            reason = describe_poison(exc)
            if reason is None or isinstance(record, tuple):
                await self._backoff.failed(record, exc)
                raise
            letter = build_dead_letter(record, self._stage, reason)
            # If this publish fails the exception propagates and the message is retried: the
            # poison is never acknowledged before it is safely in the dead-letter topic.
            await self._publish(letter)
            log.warning(
                "dead_lettered",
                topic=letter.original_topic,
                partition=letter.original_partition,
                offset=letter.original_offset,
                reason=reason[:300],
            )
            return None
        self._backoff.succeeded(record)
        return result

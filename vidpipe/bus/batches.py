"""One consumer batch, its messages handled side by side: one request's in order, many at once.

A stage that mostly waits (a provider call, a produce acknowledgement, a database commit) spends
a message's time waiting, one message after the other, and commits an offset per message. Here
a stage takes what the consumer fetched (up to `consumer_batch_max` records) and handles it the
way the per-message path would, but:

- the messages of one request (one `request_id`) run in log order, one after the other;
  messages of different requests run side by side, at most `handler_concurrency` at once;
- the offsets are committed once, after every message of the batch is done: a crash anywhere
  delivers the whole batch again, and the handlers are idempotent (at least once, as before);
- the failure model is the per-message one (`vidpipe.bus.deadletter`), record by record: an
  unreadable record is dead-lettered, an error of the message's own is retried in place with
  the stage's back-off up to `max_attempts` and then dead-lettered, and the world being away
  fails the batch, which comes again whole once the world answers. Letters go out only once
  the batch is otherwise done, so a batch that comes again does not letter twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from schemas.events import read_json
from vidpipe.bus.deadletter import (
    Failure,
    FailureHandling,
    classify,
    describe_poison,
    json_is_utf8,
)
from vidpipe.bus.tracing import record_context, record_span
from vidpipe.errors import PoisonMessage

__all__ = ["handle_keyed_batch", "read_record"]

log = structlog.get_logger("vidpipe.batches")

ModelT = TypeVar("ModelT", bound=BaseModel)


#: pydantic's error type for bytes that are not JSON at all.
_NOT_JSON = "json_invalid"


def read_record(record: Any, model: type[ModelT]) -> ModelT:
    """The event a consumer record holds; `PoisonMessage` (or a `ValidationError`) when none.

    Read as the per-message path reads it (FastStream's decoder and vidpipe's): a body labelled
    anything but JSON is not JSON, and JSON must be UTF-8."""
    value = record.value or b""
    for name, content_type in record.headers or ():  # a loop: a generator here cost 4 %
        if name == "content-type":
            if content_type is not None and not bytes(content_type).startswith(b"application/json"):
                raise PoisonMessage(f"not JSON: content-type {bytes(content_type)[:100]!r}")
            break
    if not json_is_utf8(value):
        raise PoisonMessage(f"undecodable: JSON must be UTF-8, not {json.detect_encoding(value)}")
    # Parsed and validated in one pass by pydantic-core, without the dict json.loads would build.
    try:
        return read_json(model, value)
    except ValidationError as exc:
        bad = [
            e for e in exc.errors(include_url=False, include_input=False) if e["type"] == _NOT_JSON
        ]
        if bad:
            raise PoisonMessage(f"undecodable: {bad[0]['msg'][:300]}") from exc
        raise  # the schema's refusal, described as the per-message path describes it
    except Exception as exc:  # MemoryError included: the bytes are the fault
        raise PoisonMessage(f"undecodable ({type(exc).__name__}): {str(exc)[:300]}") from exc


@dataclass(frozen=True)
class _Letter:
    record: Any
    reason: str
    exc: BaseException
    attempts: int
    poison: bool


async def handle_keyed_batch(
    records: Sequence[Any],
    *,
    models: Mapping[str, type[BaseModel]],
    handle: Callable[[Any], Awaitable[None]],
    failures: FailureHandling,
    concurrency: int,
) -> None:
    """Handle one consumer batch (module docstring). Raises the first world failure, after the
    other requests' messages already running have finished, so the batch comes again."""
    chains: dict[str, list[tuple[Any, BaseModel]]] = {}
    letters: list[_Letter] = []
    for record in records:
        try:
            event = read_record(record, models[record.topic])
        except Exception as exc:  # whatever reading raised, the record is what is wrong
            reason = describe_poison(exc) or f"refused: {exc}"
            attempts = failures.backoff.attempts(record) + 1
            letters.append(_Letter(record, reason, exc, attempts, True))
            continue
        chains.setdefault(str(getattr(event, "request_id", "")), []).append((record, event))

    slots = asyncio.Semaphore(max(1, concurrency))
    world: list[BaseException] = []

    async def run_chain(chain: list[tuple[Any, BaseModel]]) -> None:
        for record, event in chain:
            # Once the world failed the batch comes again whole: start nothing more of it, and
            # never a request's later message before its earlier one has succeeded.
            if world or not await run_one(record, event):
                return

    async def run_one(record: Any, event: BaseModel) -> bool:
        backoff = failures.backoff
        while True:
            try:
                async with slots:
                    # Each record in its own trace (FastStream's span covers the whole batch).
                    with record_span(
                        record,
                        stage=failures.stage,
                        request_id=str(getattr(event, "request_id", "")),
                        event_type=type(event).__name__,
                    ):
                        await handle(event)
            except Exception as exc:
                kind = classify(exc)
                if kind is Failure.WORLD:
                    world.append(exc)
                    return False
                if kind is Failure.POISON:
                    reason = describe_poison(exc) or str(exc)
                    letters.append(_Letter(record, reason, exc, backoff.attempts(record) + 1, True))
                    return True
                attempts = backoff.count(record, own=True)
                if attempts < backoff.max_attempts:
                    await backoff.wait(record, exc, kind)  # in place: the batch waits for it
                    continue
                reason = f"gave up after {attempts} attempts: {type(exc).__name__}: {exc}"
                letters.append(_Letter(record, reason, exc, attempts, False))
                return True
            backoff.succeeded(record)
            return True

    await asyncio.gather(*(run_chain(chain) for chain in chains.values()))
    if world:
        log.warning(
            "batch_waits_for_the_world",
            stage=failures.stage,
            records=len(records),
            error=type(world[0]).__name__,
        )
        raise world[0]
    for letter in letters:
        with record_context(letter.record):  # the letter stays in its record's trace
            await failures.dead_letter(
                letter.record, letter.reason, letter.exc, letter.attempts, poison=letter.poison
            )
        failures.backoff.succeeded(letter.record)

"""The failure model of every subscriber: what a failed delivery means, and what happens next.

Each exception a delivery raises falls in one of three kinds (`classify`):

- **poison**: the message cannot even be read (anything the parser or decoder raises, of any
  type, arrives wrapped in `PoisonMessage`), fails its schema, or a handler refuses it with
  `PoisonMessage`. It is dead-lettered at once.
- **message**: an error of the message's own making (a terminal `VidpipeError`, `ValueError`,
  anything unexpected). It gets `max_attempts` deliveries with back-off, then is dead-lettered
  with the reason, the exception type, the attempt count and the stage.
- **world**: the database, storage, broker or a provider is unreachable, answers 5xx or 429.
  It is retried without bound, with back-off, in place: the partition waits for the world
  (docs/guarantees.md says why) and the stage reports itself not ready meanwhile.

A dead letter is always publishable: a value too large for the broker is cut (its size and
SHA-256 kept), bytes that are not UTF-8 are kept as base64. Where the request is known, a stage
that reports job failures also publishes `JobFailed`, so the records say `failed`.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal

import httpx
import structlog
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from faststream import ContextRepo
from faststream.message import StreamMessage
from faststream.middlewares import BaseMiddleware
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError

from schemas.events import DeadLetter, JobFailed, clip_message, derive_event_id
from vidpipe.bus.health import StageHealth
from vidpipe.errors import PoisonMessage, VidpipeError
from vidpipe.logs import redact
from vidpipe.metrics import current as current_metrics

__all__ = [
    "JOB_FAILED_STAGE",
    "DeadLetterMiddleware",
    "Failure",
    "RedeliveryBackoff",
    "build_dead_letter",
    "classify",
    "decode_or_poison",
    "describe_poison",
    "job_failed_for",
    "json_is_utf8",
    "parse_leniently",
]

log = structlog.get_logger("vidpipe.deadletter")

PublishDeadLetter = Callable[[DeadLetter], Awaitable[None]]
PublishJobFailed = Callable[[JobFailed], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]

#: The stages that report a request they cannot carry as `JobFailed`, and the `stage` they name.
#: The recorder is absent (it reads `job.failed`: a failure there must not feed itself), and so
#: are the fallbacks that only add to a request (placeholder, notifier).
JOB_FAILED_STAGE: dict[str, Literal["submit", "poll", "fetch"]] = {
    "submitter": "submit",
    "poller": "poll",
    "fetcher": "fetch",
    "redownloader": "fetch",
    "failover": "submit",
}

#: Broker overhead around a letter's value (the envelope, key, headers), kept free when cutting.
_ENVELOPE_BYTES = 8_192
#: A letter smaller than any broker limit: what is sent when even a cut letter is refused.
_LAST_RESORT_BYTES = 4_096
#: The largest dead-lettered value searched for a request id (parsing it is bounded work).
_REQUEST_ID_SCAN_BYTES = 1_048_576

# OSError numbers that mean the world, not the message (a full disk, a network down); any other
# OSError (a name too long, a path refused) is the message's own and gets bounded attempts.
_WORLD_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EAGAIN",
        "EBUSY",
        "EIO",
        "ENOSPC",
        "EDQUOT",
        "ENOBUFS",
        "EMFILE",
        "ENFILE",
        "ENETDOWN",
        "ENETUNREACH",
        "ENETRESET",
        "ECONNABORTED",
        "ECONNRESET",
        "ECONNREFUSED",
        "ETIMEDOUT",
        "EHOSTDOWN",
        "EHOSTUNREACH",
        "EPIPE",
        "ESTALE",
    )
    if hasattr(errno, name)
)


class Failure(StrEnum):
    POISON = "poison"
    MESSAGE = "message"
    WORLD = "world"


def classify(exc: BaseException) -> Failure:
    """Which kind of failure `exc` is (see the module docstring); a pure function."""
    if describe_poison(exc) is not None:
        return Failure.POISON
    if isinstance(exc, BaseExceptionGroup):
        kinds = {classify(inner) for inner in exc.exceptions}
        return Failure.WORLD if kinds == {Failure.WORLD} else Failure.MESSAGE
    if isinstance(exc, VidpipeError):
        # ProviderError, StorageError and InputFetchError say themselves whether trying again
        # can help; every other VidpipeError is terminal.
        return Failure.WORLD if getattr(exc, "retryable", False) else Failure.MESSAGE
    if isinstance(
        exc,
        OperationalError
        | InterfaceError
        | KafkaConnectionError
        | KafkaTimeoutError
        | httpx.TransportError
        | TimeoutError
        | ConnectionError
        | socket.gaierror,
    ):
        return Failure.WORLD
    if isinstance(exc, OSError) and exc.errno in _WORLD_ERRNOS:
        return Failure.WORLD
    return Failure.MESSAGE


def describe_poison(exc: BaseException) -> str | None:
    """A one-paragraph reason when `exc` means the message itself is unreadable, else None."""
    if isinstance(exc, PoisonMessage):
        return f"refused: {exc}"
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return f"not JSON: {exc}"
    if isinstance(exc, ValidationError):
        # Validation is a pure function of the message: wherever it is raised, another delivery
        # fails the same way.
        problems = []
        for err in exc.errors(include_url=False, include_input=False)[:10]:
            where = ".".join(str(p) for p in err["loc"]) or "(message)"
            problems.append(f"{where}: {err['msg']}")
        return "schema validation failed: " + "; ".join(problems)
    return None


async def parse_leniently(record: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """The broker's parser: FastStream's, but a header it cannot decode never stops a partition.

    FastStream decodes every header as UTF-8 before any middleware sees the message; a
    non-UTF-8 or null header value would fail on every delivery. Such headers are kept escaped.
    """
    try:
        return await original(record)
    except Exception:
        if isinstance(record, tuple):  # a batch subscriber's records
            return await original(tuple(_with_readable_headers(r) for r in record))
        return await original(_with_readable_headers(record))


def _with_readable_headers(record: Any) -> Any:
    headers = [
        (str(name), (value or b"").decode("utf-8", "backslashreplace").encode())
        for name, value in (getattr(record, "headers", None) or ())
    ]
    return replace(record, headers=headers)


def json_is_utf8(value: bytes) -> bool:
    """Whether a body is JSON's one interchange encoding (RFC 8259: UTF-8, a BOM tolerated).

    Python's `json.loads` also reads UTF-16 and UTF-32, detected from the first bytes; every
    other consumer of the topics (and the contract) expects UTF-8, so those are refused."""
    # The common case first: an object whose second byte is not NUL is neither a BOM nor a
    # UTF-16/32 body (json.detect_encoding answers "utf-8" for it, at the cost of a Python call).
    if value[:1] == b"{" and value[1:2] != b"\x00":
        return True
    return json.detect_encoding(value) in ("utf-8", "utf-8-sig")


async def decode_or_poison(msg: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """The broker's decoder: whatever decoding a body raises (`RecursionError` on deep
    nesting, `MemoryError`, bad UTF-8, bad JSON) becomes `PoisonMessage`, told apart from a
    handler's own errors; so does a body in UTF-16 or UTF-32."""
    try:
        body = getattr(msg, "body", b"")
        if isinstance(body, bytes) and body and not json_is_utf8(body):
            raise ValueError(f"JSON must be UTF-8, not {json.detect_encoding(body)}")
        return await original(msg)
    except Exception as exc:
        raise PoisonMessage(f"undecodable ({type(exc).__name__}): {str(exc)[:300]}") from exc


def build_dead_letter(
    record: Any,
    stage: str,
    reason: str,
    *,
    error_type: str | None = None,
    attempts: int = 1,
    max_bytes: int = 900_000,
) -> DeadLetter:
    """A DeadLetter for an aiokafka ConsumerRecord that always fits `max_bytes`.

    UTF-8 values are kept as text (the common case stays readable and byte-exact); other bytes
    as base64; either is cut when too large, with the original's size and SHA-256.
    """
    key = record.key
    value: bytes = record.value or b""
    try:
        text = value.decode("utf-8")
        encoding: Literal["utf-8", "base64"] = "utf-8"
    except UnicodeDecodeError:
        text = base64.b64encode(value).decode("ascii")
        encoding = "base64"
    budget = max(0, max_bytes - _ENVELOPE_BYTES)
    # JSON escaping can grow text up to 6x (\uXXXX); cut by the escaped size, not the raw one.
    truncated = len(json.dumps(text)) > budget
    if truncated:
        text = _cut_to_escaped(text, budget)
    return DeadLetter(
        stage=stage,
        reason=redact(reason)[:4000],
        original_topic=record.topic,
        original_partition=record.partition,
        original_offset=record.offset,
        original_key=(
            key.decode("utf-8", "backslashreplace")[:4096] if isinstance(key, bytes) else key
        ),
        original_value=text,
        original_timestamp_ms=record.timestamp,
        error_type=error_type,
        attempts=max(1, attempts),
        original_value_encoding=encoding,
        original_value_truncated=truncated,
        original_size=len(value),
        original_sha256=hashlib.sha256(value).hexdigest(),
    )


def _cut_to_escaped(text: str, budget: int) -> str:
    """The longest prefix of `text` whose JSON form fits `budget` (binary search)."""
    low, high = 0, min(len(text), budget)
    while low < high:
        mid = (low + high + 1) // 2
        if len(json.dumps(text[:mid])) <= budget:
            low = mid
        else:
            high = mid - 1
    return text[:low]


def job_failed_for(
    record: Any, stage: str, *, error_type: str, attempts: int, poison: bool
) -> JobFailed | None:
    """The `JobFailed` a stage publishes for a dead-lettered message, when its request is known.

    None when the stage does not report job failures, or the message names no valid request.
    """
    failed_stage = JOB_FAILED_STAGE.get(stage)
    value = record.value or b""
    if failed_stage is None or len(value) > _REQUEST_ID_SCAN_BYTES or not json_is_utf8(value):
        return None
    try:
        body = json.loads(value)
    except Exception:  # anything, RecursionError included: the request stays unknown
        return None
    if not isinstance(body, dict) or not isinstance(body.get("request_id"), str):
        return None
    causation: uuid.UUID | None
    try:
        causation = uuid.UUID(str(body.get("event_id")))
    except ValueError:
        causation = None
    what = "could not be read" if poison else f"failed {attempts} times ({error_type})"
    try:
        return JobFailed(
            event_id=derive_event_id(
                body["request_id"],
                "stage_error",
                stage,
                record.topic,
                record.partition,
                record.offset,
            ),
            request_id=body["request_id"],
            causation_id=causation,
            stage=failed_stage,
            reason_code="poison_message" if poison else "stage_error",
            message=clip_message(
                f"The {stage} stage gave up on this request: its message on {record.topic} "
                f"{what}. It is in the dead-letter topic (vidpipe dlq list --stage {stage})."
            ),
        )
    # UnicodeEncodeError: a request id holding a lone surrogate (JSON's "\ud800") cannot even be
    # hashed into an event id; raised here, it escaped the middleware on every delivery.
    except (ValidationError, UnicodeEncodeError):
        return None


@dataclass
class _Record:
    failures: int = 0
    attempts: int = 0


class RedeliveryBackoff:
    """Consecutive failures of each message a stage could not handle, and the wait they earn.

    One per stage (`make_broker` makes it), so stages and tests sharing a process never share
    counts. `attempts` counts only failures of the message's own making (the bounded ones);
    `failures` counts every failure and sets the wait (doubling from `first_s` up to `max_s`).
    Counts live in memory: a restart begins them again.
    """

    def __init__(
        self,
        *,
        first_s: float = 0.2,
        max_s: float = 10.0,
        max_attempts: int = 5,
        max_tracked: int = 10_000,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self.max_attempts = max_attempts
        self._max_tracked = max_tracked
        self._sleep = sleep
        # Keyed by (topic, partition, offset): a redelivery is the same record again.
        self._records: dict[tuple[str, int, int], _Record] = {}

    def failures(self, record: Any) -> int:
        """How many times in a row this record has failed so far."""
        state = self._records.get(_where(record))
        return state.failures if state else 0

    def attempts(self, record: Any) -> int:
        """How many deliveries of this record failed for a reason of its own."""
        state = self._records.get(_where(record))
        return state.attempts if state else 0

    def delay_s(self, failures: int) -> float:
        """The wait before the next delivery after `failures` failures in a row (doubling)."""
        return float(min(self._max_s, self._first_s * 2 ** min(failures - 1, 60)))

    def count(self, record: Any, *, own: bool) -> int:
        """Count one more failure of `record`; the attempts so far when `own`, else failures."""
        where = _where(record)
        state = self._records.get(where)
        if state is None:
            if len(self._records) >= self._max_tracked:
                self._records.clear()  # bounded: forgetting only shortens a wait
            state = self._records[where] = _Record()
        state.failures += 1
        state.attempts += own
        return state.attempts if own else state.failures

    async def wait(self, record: Any, exc: BaseException, kind: Failure) -> None:
        """Wait before `record` is delivered again."""
        where = _where(record)
        delay = self.delay_s(self.failures(record))
        log.warning(
            "handler_failed_will_redeliver",
            topic=where[0],
            partition=where[1],
            offset=where[2],
            attempt=self.failures(record),
            kind=str(kind),
            retry_in_s=delay,
            error=type(exc).__name__,
        )
        await self._sleep(delay)

    async def failed(self, record: Any, exc: BaseException) -> None:
        """Count one more failure of `record` (not its own), then wait."""
        self.count(record, own=False)
        await self.wait(record, exc, Failure.WORLD)

    def succeeded(self, record: Any) -> None:
        self._records.pop(_where(record), None)


def _where(record: Any) -> tuple[str, int, int]:
    if isinstance(record, tuple) or record is None:
        return ("", -1, -1)
    return (record.topic, record.partition, record.offset)


@dataclass(frozen=True)
class FailureHandling:
    """What every subscriber of one stage shares: where letters go, the counts, the health."""

    stage: str
    publish_dead_letter: PublishDeadLetter
    publish_job_failed: PublishJobFailed | None
    backoff: RedeliveryBackoff
    health: StageHealth
    max_letter_bytes: int = 900_000

    async def dead_letter(
        self, record: Any, reason: str, exc: BaseException, attempts: int, *, poison: bool
    ) -> None:
        """Dead-letter `record` (and report its request failed) before it is acknowledged.

        If a publish fails the exception propagates and the message comes again: it is never
        acknowledged before it is safely in the dead-letter topic.
        """
        cause = exc.__cause__ if isinstance(exc, PoisonMessage) and exc.__cause__ else exc
        error_type = type(cause).__name__
        letter = build_dead_letter(
            record,
            self.stage,
            reason,
            error_type=error_type,
            attempts=attempts,
            max_bytes=self.max_letter_bytes,
        )
        try:
            await self.publish_dead_letter(letter)
        except MessageSizeTooLargeError:
            # The broker's limit is below ours: send the letter with its value cut to a sliver
            # (size and SHA-256 still say what it was) rather than loop on it.
            letter = build_dead_letter(
                record,
                self.stage,
                reason,
                error_type=error_type,
                attempts=attempts,
                max_bytes=_ENVELOPE_BYTES + _LAST_RESORT_BYTES,
            )
            await self.publish_dead_letter(letter)
        if self.publish_job_failed is not None:
            failed = job_failed_for(
                record, self.stage, error_type=error_type, attempts=attempts, poison=poison
            )
            if failed is not None:
                await self.publish_job_failed(failed)
        current_metrics().dead_lettered(letter.original_topic, poison=poison, error_type=error_type)
        log.warning(
            "dead_lettered",
            topic=letter.original_topic,
            partition=letter.original_partition,
            offset=letter.original_offset,
            attempts=attempts,
            error=error_type,
            truncated=letter.original_value_truncated,
            reason=letter.reason[:300],
        )


class DeadLetterMiddleware(BaseMiddleware):
    """FastStream middleware applying the failure model to each delivery (module docstring).

    Poison, and messages out of attempts, are dead-lettered and acknowledged; any other failure
    waits out the back-off and propagates, so the offset is not committed and it comes again.
    """

    def __init__(self, msg: Any, /, *, context: ContextRepo, handling: FailureHandling) -> None:
        super().__init__(msg, context=context)
        self._h = handling

    @classmethod
    def factory(cls, handling: FailureHandling) -> Callable[..., DeadLetterMiddleware]:
        """What `broker.add_middleware` takes: FastStream builds one middleware per message."""

        def make(msg: Any, /, *, context: ContextRepo) -> DeadLetterMiddleware:
            return cls(msg, context=context, handling=handling)

        return make

    async def consume_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        record = msg.raw_message
        h = self._h
        if isinstance(record, tuple):
            return await self._consume_batch(call_next, msg, record)
        try:
            result = await call_next(msg)
        except Exception as exc:
            kind = classify(exc)
            if kind is Failure.WORLD:
                h.health.waiting(_where(record), type(exc).__name__)
                await h.backoff.failed(record, exc)
                raise
            h.health.resolved(_where(record))
            if kind is Failure.MESSAGE:
                attempts = h.backoff.count(record, own=True)
                if attempts < h.backoff.max_attempts:
                    await h.backoff.wait(record, exc, kind)
                    raise
                reason = f"gave up after {attempts} attempts: {type(exc).__name__}: {exc}"
            else:
                attempts = h.backoff.attempts(record) + 1
                reason = describe_poison(exc) or str(exc)
            await h.dead_letter(record, reason, exc, attempts, poison=kind is Failure.POISON)
            h.backoff.succeeded(record)
            return None
        h.backoff.succeeded(record)
        h.health.resolved(_where(record))
        return result

    async def _consume_batch(
        self,
        call_next: Callable[[Any], Awaitable[Any]],
        msg: StreamMessage[Any],
        batch: tuple[Any, ...],
    ) -> Any:
        """A batch subscriber's delivery. Its handler deals with each record's own failures
        (as the recorder does); what still escapes it fails the whole batch, which comes again
        from its first record: without bound for the world, `max_attempts` times for anything
        else, after which every record of the batch is dead-lettered with the reason."""
        h = self._h
        if not batch:
            return await call_next(msg)
        head = batch[0]  # the batch's failures are counted on its first record
        try:
            result = await call_next(msg)
        except Exception as exc:
            kind = classify(exc)
            if kind is Failure.WORLD:
                h.health.waiting(_where(head), type(exc).__name__)
                await h.backoff.failed(head, exc)
                raise
            h.health.resolved(_where(head))
            attempts = h.backoff.count(head, own=True)
            if attempts < h.backoff.max_attempts:
                await h.backoff.wait(head, exc, kind)
                raise
            reason = f"its batch gave up after {attempts} attempts: {type(exc).__name__}: {exc}"
            for record in batch:
                await h.dead_letter(record, reason, exc, attempts, poison=False)
            h.backoff.succeeded(head)
            return None
        h.backoff.succeeded(head)
        h.health.resolved(_where(head))
        return result

"""The failure model (vidpipe.bus.deadletter) with FastStream's in-memory broker: the table of
what each exception means, poison, bounded attempts, letters that always fit, readiness. The
real-broker proofs are tests/integration/test_failure_model.py."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import socket
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker, TestKafkaBroker
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError

from schemas.events import DeadLetter, GenerationRequested
from schemas.topics import Topics
from vidpipe.bus import RedeliveryBackoff, make_broker
from vidpipe.bus.deadletter import (
    DeadLetterMiddleware,
    Failure,
    FailureHandling,
    build_dead_letter,
    classify,
    decode_or_poison,
    json_is_utf8,
    parse_leniently,
)
from vidpipe.bus.health import Readiness, StageHealth, readiness
from vidpipe.errors import (
    ContentPolicyViolation,
    IncompleteVideo,
    InputFetchError,
    InvalidRequest,
    PoisonMessage,
    ProviderUnavailable,
    RateLimited,
    StageWiringError,
    StorageError,
)


def _validation_error() -> ValidationError:
    class Model(BaseModel):
        n: int

    try:
        Model.model_validate({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


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


# --- the classification table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (PoisonMessage("unknown provider"), Failure.POISON),
        (json.JSONDecodeError("x", "{", 0), Failure.POISON),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), Failure.POISON),
        (_validation_error(), Failure.POISON),
        (ValueError("storage key refused"), Failure.MESSAGE),
        (KeyError("x"), Failure.MESSAGE),
        (RecursionError(), Failure.MESSAGE),
        (InvalidRequest("400"), Failure.MESSAGE),
        (ContentPolicyViolation("moderated"), Failure.MESSAGE),
        (StorageError("refused", retryable=False), Failure.MESSAGE),
        (InputFetchError("404", retryable=False), Failure.MESSAGE),
        (StageWiringError("bug"), Failure.MESSAGE),
        (OSError(errno.ENAMETOOLONG, "File name too long"), Failure.MESSAGE),
        (FileNotFoundError(errno.ENOENT, "gone"), Failure.MESSAGE),
        (RateLimited("429", retry_after=3), Failure.WORLD),
        (ProviderUnavailable("503"), Failure.WORLD),
        (IncompleteVideo("cut"), Failure.WORLD),
        (StorageError("503", retryable=True), Failure.WORLD),
        (InputFetchError("timeout", retryable=True), Failure.WORLD),
        (OperationalError("SELECT 1", {}, Exception("connection refused")), Failure.WORLD),
        (InterfaceError("SELECT 1", {}, Exception("closed")), Failure.WORLD),
        (KafkaConnectionError(), Failure.WORLD),
        (KafkaTimeoutError(), Failure.WORLD),
        (httpx.ConnectTimeout("slow"), Failure.WORLD),
        (httpx.ReadError("reset"), Failure.WORLD),
        (TimeoutError(), Failure.WORLD),
        (ConnectionRefusedError(), Failure.WORLD),
        (socket.gaierror(-2, "Name or service not known"), Failure.WORLD),
        (OSError(errno.ENOSPC, "No space left on device"), Failure.WORLD),
        (ExceptionGroup("all down", [TimeoutError(), ConnectionError()]), Failure.WORLD),
        (ExceptionGroup("one bug", [TimeoutError(), ValueError()]), Failure.MESSAGE),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_each_exception_has_one_kind(exc: BaseException, kind: Failure) -> None:
    assert classify(exc) is kind


@pytest.mark.parametrize(
    "raised",
    [
        RecursionError("maximum recursion depth"),
        MemoryError(),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        ValueError("odd"),
        KeyError("k"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_anything_raised_while_decoding_is_poison(raised: Exception) -> None:
    async def original(_msg: Any) -> Any:
        raise raised

    with pytest.raises(PoisonMessage) as caught:
        await decode_or_poison(object(), original)
    assert caught.value.__cause__ is raised
    assert classify(caught.value) is Failure.POISON


async def test_a_header_faststream_cannot_decode_does_not_stop_the_message() -> None:
    record = ConsumerRecord(
        topic="t",
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=b"{}",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=2,
        headers=[("bad", b"\xff\xfe"), ("null", None)],
    )
    seen: list[Any] = []

    async def original(rec: Any) -> Any:
        headers = {name: value.decode() for name, value in rec.headers}  # FastStream's rule
        seen.append(rec)
        return headers

    assert await parse_leniently(record, original) == {"bad": "\\xff\\xfe", "null": ""}
    assert seen[0].offset == 7


# --- poison and bounded attempts through the in-memory broker --------------------------------


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


@dataclass
class Recording:
    """A submitter's broker whose request handler only records, with every outcome kept."""

    broker: KafkaBroker
    topics: Topics
    sleeps: Sleeps
    handled: list[str] = field(default_factory=list)
    letters: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


def _recording() -> Recording:
    topics = Topics("u.")
    sleeps = Sleeps()
    broker, _publisher = make_broker(
        "localhost:9092", stage="submitter", topics=topics, backoff=RedeliveryBackoff(sleep=sleeps)
    )
    rec = Recording(broker, topics, sleeps)

    @broker.subscriber(topics.generation_requested, group_id="unit")
    async def on_request(event: GenerationRequested) -> None:
        rec.handled.append(event.request_id)

    @broker.subscriber(topics.deadletter, group_id="unit-dlq")
    async def on_letter(body: dict[str, Any]) -> None:
        rec.letters.append(body)

    @broker.subscriber(topics.job_failed, group_id="unit-failed")
    async def on_failed(body: dict[str, Any]) -> None:
        rec.failed.append(body)

    return rec


async def test_a_5000_deep_request_is_dead_lettered_at_once_and_the_next_one_is_handled() -> None:
    rec = _recording()
    topics, handled, letters, sleeps = rec.topics, rec.handled, rec.letters, rec.sleeps
    async with TestKafkaBroker(rec.broker) as test_broker:
        await test_broker.publish(_nested(5000), topics.generation_requested, key=b"deep")
        await test_broker.publish(b"\xff\xfe not utf-8", topics.generation_requested, key=b"b")
        await test_broker.publish(REQUEST, topics.generation_requested, key=b"r1")
    assert handled == ["r1"]
    assert sleeps.waits == []  # poison never waits
    # Bytes opening with a UTF-16 byte-order mark are not UTF-8 JSON: refused while decoding.
    assert [letter["error_type"] for letter in letters] == ["RecursionError", "ValueError"]
    assert all(letter["attempts"] == 1 for letter in letters)
    assert letters[0]["original_value"] == _nested(5000).decode()
    assert letters[1]["original_value_encoding"] == "base64"
    assert base64.b64decode(letters[1]["original_value"]) == b"\xff\xfe not utf-8"


async def test_a_handler_that_always_raises_is_dead_lettered_after_n_attempts_with_job_failed() -> (
    None
):
    topics = Topics("u.")
    sleeps = Sleeps()
    broker, _publisher = make_broker(
        "localhost:9092",
        stage="submitter",
        topics=topics,
        backoff=RedeliveryBackoff(sleep=sleeps, max_attempts=5),
    )
    calls: list[str] = []
    letters: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []

    @broker.subscriber(topics.generation_requested, group_id="unit")
    async def on_request(event: GenerationRequested) -> None:
        calls.append(event.request_id)
        raise ValueError("storage key refused")

    @broker.subscriber(topics.deadletter, group_id="unit-dlq")
    async def on_letter(body: dict[str, Any]) -> None:
        letters.append(body)

    @broker.subscriber(topics.job_failed, group_id="unit-failed")
    async def on_failed(body: dict[str, Any]) -> None:
        failed.append(body)

    async with TestKafkaBroker(broker) as test_broker:
        for _ in range(5):
            with contextlib.suppress(ValueError):
                await test_broker.publish(REQUEST, topics.generation_requested, key=b"r1")
    assert len(calls) == 5
    assert sleeps.waits == [0.2, 0.4, 0.8, 1.6]
    [letter] = letters
    assert (letter["stage"], letter["attempts"], letter["error_type"]) == (
        "submitter",
        5,
        "ValueError",
    )
    assert letter["reason"].startswith("gave up after 5 attempts: ValueError")
    [job_failed] = failed
    assert (job_failed["request_id"], job_failed["stage"], job_failed["reason_code"]) == (
        "r1",
        "submit",
        "stage_error",
    )
    assert "dead-letter topic" in job_failed["message"]


async def test_a_request_id_with_a_lone_surrogate_is_dead_lettered_once_without_job_failed() -> (
    None
):
    # Found by the hostile corpus: naming the request in a JobFailed hashed its id as UTF-8,
    # which raised UnicodeEncodeError after the letter was sent, so the message came again at
    # once, forever, a new letter each time, and its partition stopped.
    rec = _recording()
    topics, handled, letters, failed = rec.topics, rec.handled, rec.letters, rec.failed
    surrogate = json.dumps({"request_id": "a\ud800", "prompt": "p"}).encode()
    assert b"\\ud800" in surrogate  # the escape, as any JSON encoder writes it
    async with TestKafkaBroker(rec.broker) as test_broker:
        await test_broker.publish(surrogate, topics.generation_requested, key=b"s")
        await test_broker.publish(REQUEST, topics.generation_requested, key=b"r1")
    assert handled == ["r1"]
    assert [letter["error_type"] for letter in letters] == ["ValidationError"]
    assert failed == []


async def test_a_stage_that_does_not_report_job_failures_only_dead_letters() -> None:
    topics = Topics("u.")
    broker, _publisher = make_broker(
        "localhost:9092",
        stage="recorder",
        topics=topics,
        backoff=RedeliveryBackoff(sleep=Sleeps(), max_attempts=1),
    )
    failed: list[dict[str, Any]] = []

    @broker.subscriber(topics.generation_requested, group_id="unit")
    async def on_request(event: GenerationRequested) -> None:
        raise ValueError("bug")

    @broker.subscriber(topics.job_failed, group_id="unit-failed")
    async def on_failed(body: dict[str, Any]) -> None:
        failed.append(body)

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(REQUEST, topics.generation_requested, key=b"r1")
    assert failed == []


async def test_a_world_error_is_retried_without_bound_and_the_stage_is_not_ready() -> None:
    topics = Topics("u.")
    sleeps = Sleeps()
    clock = [100.0]
    health = StageHealth("unit", clock=lambda: clock[0])
    health.probed(broker_ok=True, database_ok=True)
    broker, _publisher = make_broker(
        "localhost:9092",
        stage="unit",
        topics=topics,
        health=health,
        backoff=RedeliveryBackoff(sleep=sleeps, max_attempts=2, max_s=1.0),
    )
    outcomes: list[str] = []

    @broker.subscriber(topics.generation_requested, group_id="unit")
    async def on_request(event: GenerationRequested) -> None:
        if len(outcomes) < 8:
            outcomes.append("down")
            raise ConnectionError("database down")
        outcomes.append("ok")

    async with TestKafkaBroker(broker) as test_broker:
        for _ in range(8):
            with contextlib.suppress(ConnectionError):
                await test_broker.publish(REQUEST, topics.generation_requested, key=b"r1")
        clock[0] += 5
        state = health.readiness()
        assert not state.ready
        assert state.reasons == ("retrying a world error (ConnectionError) for 5s",)
        await test_broker.publish(REQUEST, topics.generation_requested, key=b"r1")
    assert outcomes[-1] == "ok"  # 8 failures, more than max_attempts, and still not given up
    assert sleeps.waits == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert health.readiness().ready


# --- letters that always fit ------------------------------------------------------------------


def _raw(value: bytes, key: bytes | None = b"k") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="t",
        partition=1,
        offset=9,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value),
        headers=[],
    )


@pytest.mark.parametrize(
    ("value", "encoding", "truncated"),
    [
        (b'{"request_id": "r1"}', "utf-8", False),
        (b"x" * (2 * 1024 * 1024), "utf-8", True),
        (b"\x01" * 300_000, "utf-8", True),  # 6 bytes each once escaped: cut by escaped size
        (bytes(range(256)) * 10, "base64", False),
        (b"\xff" * (2 * 1024 * 1024), "base64", True),
    ],
    ids=["small", "2MiB-text", "escapes", "binary", "2MiB-binary"],
)
def test_a_dead_letter_always_fits_and_says_what_it_kept(
    value: bytes, encoding: str, truncated: bool
) -> None:
    letter = build_dead_letter(_raw(value), "unit", "why", max_bytes=100_000)
    assert len(letter.model_dump_json().encode()) <= 100_000
    assert letter.original_value_encoding == encoding
    assert letter.original_value_truncated is truncated
    assert letter.original_size == len(value)
    assert letter.original_sha256 == hashlib.sha256(value).hexdigest()
    kept = (
        base64.b64decode(letter.original_value)
        if encoding == "base64" and not truncated
        else letter.original_value.encode()
    )
    if not truncated:
        assert kept == value


def test_the_timer_relay_signature_still_builds_a_letter() -> None:
    letter = build_dead_letter(_raw(b"{}"), "poller", "not a timer")
    assert (letter.stage, letter.reason, letter.attempts) == ("poller", "not a timer", 1)


def test_old_letters_still_parse() -> None:
    old = {
        "event_type": "DeadLetter",
        "stage": "s",
        "reason": "r",
        "original_topic": "t",
        "original_partition": 0,
        "original_offset": 1,
        "original_key": None,
        "original_value": "x",
    }
    letter = DeadLetter.model_validate(old)
    assert (letter.original_value_encoding, letter.original_value_truncated) == ("utf-8", False)


async def test_a_letter_the_broker_still_refuses_is_sent_as_a_sliver_not_looped() -> None:
    sent: list[DeadLetter] = []

    async def publish(letter: DeadLetter) -> None:
        if len(letter.original_value) > 10_000:
            raise MessageSizeTooLargeError()
        sent.append(letter)

    handling = FailureHandling(
        stage="unit",
        publish_dead_letter=publish,
        publish_job_failed=None,
        backoff=RedeliveryBackoff(sleep=Sleeps()),
        health=StageHealth("unit"),
    )
    topics = Topics("u.")
    broker = KafkaBroker("localhost:9092")
    broker.add_middleware(DeadLetterMiddleware.factory(handling))

    @broker.subscriber(topics.generation_requested, group_id="unit")
    async def on_request(body: dict[str, Any]) -> None:
        raise PoisonMessage("refused")

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(b'"' + b"y" * 500_000 + b'"', topics.generation_requested)
    [letter] = sent
    assert letter.original_value_truncated
    assert letter.original_size == 500_002


# --- readiness --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe_age", "broker_ok", "database_ok", "waiting", "reasons"),
    [
        (1.0, True, None, [], ()),
        (1.0, True, True, [], ()),
        (None, True, True, [], ("no recent health probe",)),
        (20.0, True, True, [], ("no recent health probe",)),
        (1.0, False, True, [], ("broker not connected",)),
        (1.0, True, False, [], ("database unreachable",)),
        (
            1.0,
            True,
            True,
            [("OperationalError", 90.0)],
            ("retrying a world error (OperationalError) for 10s",),
        ),
    ],
)
def test_readiness(
    probe_age: float | None,
    broker_ok: bool,
    database_ok: bool | None,
    waiting: list[tuple[str, float]],
    reasons: tuple[str, ...],
) -> None:
    state = readiness(
        now=100.0,
        last_probe=None if probe_age is None else 100.0 - probe_age,
        probe_window_s=15.0,
        broker_ok=broker_ok,
        database_ok=database_ok,
        waiting=waiting,
    )
    assert state == Readiness(not reasons, reasons)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
async def test_json_in_utf16_or_utf32_is_poison_though_python_could_read_it(codec: str) -> None:
    rec = _recording()
    topics, handled, letters = rec.topics, rec.handled, rec.letters
    async with TestKafkaBroker(rec.broker) as test_broker:
        await test_broker.publish(REQUEST.decode().encode(codec), topics.generation_requested)
        await test_broker.publish(REQUEST, topics.generation_requested, key=b"r1")
    assert handled == ["r1"]
    assert [letter["error_type"] for letter in letters] == ["ValueError"]
    assert rec.failed == []
    assert "must be UTF-8" in letters[0]["reason"]
    assert json_is_utf8(REQUEST) and json_is_utf8(b"\xef\xbb\xbf" + REQUEST)

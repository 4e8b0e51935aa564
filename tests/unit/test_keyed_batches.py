"""`handle_keyed_batch`: a consumer batch handled side by side per request, under the failure model.

The handler here is a stand-in that records what ran when; the letters go to a list. Each test
takes one path: order within a request, overlap across requests and its bound, poison, a
message's own error retried in place then dead-lettered (with its JobFailed), the world away.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from aiokafka.structs import ConsumerRecord
from sqlalchemy.exc import OperationalError

from schemas.events import DeadLetter, GenerationRequested, JobFailed
from vidpipe.bus import RedeliveryBackoff
from vidpipe.bus.batches import handle_keyed_batch
from vidpipe.bus.deadletter import FailureHandling
from vidpipe.bus.health import StageHealth
from vidpipe.errors import PoisonMessage

TOPIC = "p.generation.requested"
MODELS = {TOPIC: GenerationRequested}


def _record(value: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TOPIC,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value),
        headers=[],
    )


def _request(request_id: str, prompt: str = "a fox") -> bytes:
    event = GenerationRequested(event_id=uuid.uuid4(), request_id=request_id, prompt=prompt)
    return event.model_dump_json().encode()


def _batch(*requests: tuple[str, str]) -> list[ConsumerRecord[bytes, bytes]]:
    return [_record(_request(rid, prompt), n) for n, (rid, prompt) in enumerate(requests)]


class Outbox:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.failed: list[JobFailed] = []
        self.sleeps: list[float] = []

    def failures(self, stage: str = "submitter", max_attempts: int = 3) -> FailureHandling:
        async def letter(item: DeadLetter) -> None:
            self.letters.append(item)

        async def job_failed(item: JobFailed) -> None:
            self.failed.append(item)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        return FailureHandling(
            stage=stage,
            publish_dead_letter=letter,
            publish_job_failed=job_failed,
            backoff=RedeliveryBackoff(max_attempts=max_attempts, sleep=sleep),
            health=StageHealth(stage),
        )


async def _run(
    records: Sequence[ConsumerRecord[bytes, bytes]],
    handle: object,
    failures: FailureHandling,
    concurrency: int = 16,
) -> None:
    await handle_keyed_batch(
        records,
        models=MODELS,
        handle=handle,  # type: ignore[arg-type]
        failures=failures,
        concurrency=concurrency,
    )


async def test_one_requests_messages_run_in_order_and_others_run_beside_them() -> None:
    started: list[str] = []
    b_started = asyncio.Event()

    async def handle(event: GenerationRequested) -> None:
        started.append(f"{event.request_id}:{event.prompt}")
        if event.request_id == "b":
            b_started.set()
        else:
            # a's first message waits until b's runs: only possible if they overlap.
            await asyncio.wait_for(b_started.wait(), timeout=5)
        await asyncio.sleep(0)

    outbox = Outbox()
    await _run(_batch(("a", "1"), ("a", "2"), ("b", "1")), handle, outbox.failures())
    assert started.index("a:1") < started.index("a:2")
    assert started.index("b:1") < started.index("a:2")  # b did not wait for all of a
    assert outbox.letters == []


async def test_no_more_than_concurrency_handlers_run_at_once() -> None:
    running = 0
    most = 0

    async def handle(_event: GenerationRequested) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1

    await _run(
        _batch(*((f"r{n}", "x") for n in range(7))), handle, Outbox().failures(), concurrency=3
    )
    assert most == 3


async def test_unreadable_records_are_lettered_after_the_rest_is_handled() -> None:
    handled: list[str] = []
    outbox = Outbox()

    async def handle(event: GenerationRequested) -> None:
        handled.append(event.request_id)
        assert outbox.letters == []  # no letter before the batch's work is done

    records = [
        _record(_request("r1"), 0),
        _record(b"\xff not json", 1),
        _record(b'{"request_id": "r3"}', 2),  # no prompt
        _record(_request("r4"), 3),
    ]
    await _run(records, handle, outbox.failures())
    assert sorted(handled) == ["r1", "r4"]
    assert [letter.original_offset for letter in outbox.letters] == [1, 2]
    assert all(letter.attempts == 1 and letter.reason for letter in outbox.letters)


async def test_a_message_error_is_retried_in_place_then_lettered_with_its_job_failed() -> None:
    calls: dict[str, int] = {}

    async def handle(event: GenerationRequested) -> None:
        calls[event.request_id] = calls.get(event.request_id, 0) + 1
        if event.request_id == "bad":
            raise ValueError("the provider refused this prompt")
        if event.request_id == "flaky" and calls["flaky"] == 1:
            raise ValueError("once")

    outbox = Outbox()
    await _run(
        _batch(("bad", "x"), ("flaky", "x"), ("good", "x")), handle, outbox.failures(max_attempts=3)
    )
    assert calls == {"bad": 3, "flaky": 2, "good": 1}
    assert len(outbox.sleeps) == 3  # two waits for bad, one for flaky
    [letter] = outbox.letters
    assert letter.original_offset == 0 and letter.attempts == 3
    assert "gave up after 3 attempts: ValueError" in letter.reason
    [failed] = outbox.failed
    assert failed.request_id == "bad" and failed.stage == "submit"


async def test_a_handler_that_refuses_its_message_letters_it_at_once() -> None:
    async def handle(event: GenerationRequested) -> None:
        raise PoisonMessage("not for this stage")

    outbox = Outbox()
    await _run(_batch(("r1", "x")), handle, outbox.failures())
    [letter] = outbox.letters
    assert letter.reason == "refused: not for this stage" and outbox.sleeps == []


async def test_the_world_away_fails_the_batch_without_letters_or_later_messages() -> None:
    handled: list[str] = []
    ok_started = asyncio.Event()

    async def handle(event: GenerationRequested) -> None:
        if event.request_id == "down":
            await asyncio.wait_for(ok_started.wait(), timeout=5)
            handled.append(f"down:{event.prompt}")
            raise OperationalError("database is locked", None, Exception())
        ok_started.set()
        await asyncio.sleep(0.01)  # still running when the world fails: it is let finish
        handled.append(f"{event.request_id}:{event.prompt}")

    outbox = Outbox()
    records = [*_batch(("down", "1"), ("down", "2"), ("ok", "1")), _record(b"{", 3)]
    with pytest.raises(OperationalError):
        await _run(records, handle, outbox.failures())
    assert handled == ["down:1", "ok:1"]  # never a request's later message before its earlier
    assert outbox.letters == [] and outbox.failed == []  # sent when the batch comes again

"""The recorder's batch handler: every record of a batch ends recorded or dead-lettered.

The database here is a real SQLite file (through `Records`); only the one event the database is
made to refuse goes through a stand-in, so each failure path of `handle_batch` is taken.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord
from sqlalchemy.exc import DataError, OperationalError

from schemas.events import DeadLetter, Event, GenerationRequested, JobSubmitted
from services.recorder.handlers import RecorderDeps, handle_batch
from vidpipe.bus import RedeliveryBackoff
from vidpipe.bus.deadletter import FailureHandling
from vidpipe.bus.health import StageHealth
from vidpipe.db.records import Records
from vidpipe.db.tables import open_engine

REQUESTED = "p.generation.requested"
SUBMITTED = "p.job.submitted"
MODELS: dict[str, type[Event]] = {REQUESTED: GenerationRequested, SUBMITTED: JobSubmitted}


def _record(
    topic: str, value: bytes, offset: int, headers: Sequence[tuple[str, bytes]] = ()
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=list(headers),
    )


def _request(n: int) -> bytes:
    event = GenerationRequested(event_id=uuid.uuid4(), request_id=f"r{n}", prompt=f"fox {n}")
    return event.model_dump_json().encode()


class _Refusing(Records):
    """Records whose database refuses one request's events for a reason of their own."""

    def __init__(self, records: Records, refused: str, error: Exception) -> None:
        super().__init__(records.engine)
        self.refused = refused
        self.error = error
        self.batches = 0

    async def record_many(self, batch: Sequence[tuple[Event, str]]) -> list[bool]:
        self.batches += 1
        if any(event.request_id == self.refused for event, _ in batch):
            raise self.error
        return await super().record_many(batch)


@pytest.fixture
async def deps(tmp_path: Path) -> tuple[RecorderDeps, list[DeadLetter]]:
    letters: list[DeadLetter] = []

    async def publish_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    async def no_sleep(_seconds: float) -> None:
        return None

    failures = FailureHandling(
        stage="recorder",
        publish_dead_letter=publish_letter,
        publish_job_failed=None,
        backoff=RedeliveryBackoff(max_attempts=3, sleep=no_sleep),
        health=StageHealth("recorder"),
    )
    engine = await open_engine(f"sqlite:///{tmp_path}/records.db")
    return RecorderDeps(Records(engine), failures, MODELS), letters


async def test_unreadable_records_are_dead_lettered_and_the_rest_recorded(
    deps: tuple[RecorderDeps, list[DeadLetter]],
) -> None:
    recorder, letters = deps
    batch = [
        _record(REQUESTED, _request(1), 0),
        _record(REQUESTED, b"\xff\xfe not json", 1),
        _record(REQUESTED, _request(2), 2, headers=[("content-type", b"text/plain")]),
        _record(REQUESTED, json.dumps({"request_id": "r3"}).encode(), 3),  # no prompt
        _record(REQUESTED, _request(4), 4),
    ]
    assert await handle_batch(batch, recorder) == 2
    assert sorted(letter.original_offset for letter in letters) == [1, 2, 3]
    assert all(letter.stage == "recorder" and letter.reason for letter in letters)
    assert set(await recorder.records.many(["r1", "r2", "r4"])) == {"r1", "r4"}


async def test_a_database_outage_fails_the_whole_batch_before_any_letter(
    deps: tuple[RecorderDeps, list[DeadLetter]],
) -> None:
    recorder, letters = deps
    recorder.records = _Refusing(
        recorder.records, "r1", OperationalError("down", None, Exception())
    )
    batch = [_record(REQUESTED, _request(1), 0), _record(REQUESTED, b"{", 1)]
    with pytest.raises(OperationalError):
        await handle_batch(batch, recorder)
    # Redelivered whole: the unreadable record's letter is sent then, not twice.
    assert letters == []


async def test_an_event_the_database_refuses_is_tried_alone_then_dead_lettered(
    deps: tuple[RecorderDeps, list[DeadLetter]],
) -> None:
    recorder, letters = deps
    refusing = _Refusing(recorder.records, "r2", DataError("too long", None, Exception()))
    recorder.records = refusing
    batch = [_record(REQUESTED, _request(n), n) for n in (1, 2, 3)]
    assert await handle_batch(batch, recorder) == 2
    # The batch once, then each event alone: r2 three times (its attempts), the others once.
    assert refusing.batches == 1 + 1 + 3 + 1
    (letter,) = letters
    assert letter.original_offset == 2
    assert "gave up after 3 attempts" in letter.reason
    assert set(await recorder.records.many(["r1", "r2", "r3"])) == {"r1", "r3"}


async def test_a_redelivered_batch_records_nothing_twice(
    deps: tuple[RecorderDeps, list[DeadLetter]],
) -> None:
    recorder, _letters = deps
    batch = [_record(REQUESTED, _request(n), n) for n in range(5)]
    assert await handle_batch(batch, recorder) == 5
    assert await handle_batch(batch, recorder) == 0

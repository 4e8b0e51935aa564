"""How a batched stage reads one consumer record: the event, or why the bytes are not one."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.events import GenerationRequested, JobSucceeded, read_json
from vidpipe.bus.batches import read_record
from vidpipe.bus.deadletter import describe_poison
from vidpipe.errors import PoisonMessage


def _record(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Any:
    return SimpleNamespace(topic="t", value=value, headers=headers or [])


def test_an_event_reads_as_the_per_message_path_reads_it() -> None:
    event = JobSucceeded(
        event_id=uuid.uuid4(),
        request_id="r-1",
        provider="azure-sora",
        provider_job_id="task_1",
        generation_ids=["gen_1", "gen_2"],
    )
    body = event.model_dump_json().encode()
    assert read_record(_record(body), JobSucceeded) == event
    assert read_record(_record(body), JobSucceeded) == JobSucceeded.model_validate(json.loads(body))


def test_a_bare_upstream_request_gets_its_defaults() -> None:
    body = json.dumps({"request_id": "r-2", "prompt": "un renard « été »"}).encode()
    read = read_record(_record(body), GenerationRequested)
    assert read.request_id == "r-2" and read.prompt == "un renard « été »"
    assert read.event_type == "GenerationRequested"


@pytest.mark.parametrize(
    "value",
    [b"", None, b"{not json", b'{"request_id": "r"', b"[" * 100_000, b'{"a": 1} trailing'],
    ids=["empty", "null", "not-json", "cut-short", "too-deep", "trailing"],
)
def test_bytes_that_are_not_json_are_poison_with_a_reason(value: bytes | None) -> None:
    with pytest.raises(PoisonMessage, match="undecodable") as caught:
        read_record(_record(value), GenerationRequested)
    assert (describe_poison(caught.value) or "").startswith("refused: undecodable")


def test_json_of_the_wrong_shape_is_a_schema_refusal() -> None:
    with pytest.raises(ValidationError) as caught:
        read_record(_record(b'{"request_id": "r-3"}'), GenerationRequested)
    assert (describe_poison(caught.value) or "").startswith("schema validation failed: prompt")


def test_a_body_labelled_otherwise_or_not_utf8_is_poison() -> None:
    with pytest.raises(PoisonMessage, match="not JSON"):
        read_record(_record(b"{}", [("content-type", b"text/plain")]), GenerationRequested)
    with pytest.raises(PoisonMessage, match="UTF-8"):
        read_record(_record('{"a": 1}'.encode("utf-16")), GenerationRequested)


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "r", "prompt": "a\u0000b"},
        {"request_id": "r", "prompt": "p", "metadata": {"k": "v\u0000"}},
        {"request_id": "r", "prompt": "p", "metadata": {"k\u0000": "v"}},
    ],
    ids=["prompt", "metadata-value", "metadata-key"],
)
def test_an_escaped_nul_is_still_refused_anywhere(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    assert b"\\u0000" in raw
    with pytest.raises(ValidationError, match="records cannot store"):
        read_json(GenerationRequested, raw)
    with pytest.raises(ValidationError, match="records cannot store"):
        GenerationRequested.model_validate(body)  # the same verdict as the per-message path


def test_a_lone_surrogate_escape_is_never_read_as_text() -> None:
    raw = b'{"request_id": "r", "prompt": "a\\ud800"}'
    with pytest.raises(ValidationError):
        read_json(GenerationRequested, raw)


def test_text_a_scan_clears_reads_the_same_as_checked_text() -> None:
    # The emoji as a surrogate pair of escapes: a false alarm that takes the field-by-field path.
    for field in (
        '"prompt": "renard \\ud83e\\udd8a"',
        '"prompt": "renard 🦊 «été»"',
        '"prompt": "a \\\\u0000 as text"',
    ):
        raw = '{"request_id": "r", "occurred_at": "2026-12-04T12:00:00Z", ' + field + "}"
        read = read_json(GenerationRequested, raw)
        assert read == GenerationRequested.model_validate(json.loads(raw))
        assert read_json(GenerationRequested, raw.encode()) == read

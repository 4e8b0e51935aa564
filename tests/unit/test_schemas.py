"""The exported JSON Schemas are the contract for producers in other languages: keep them fresh."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest
from pydantic import ValidationError

from schemas.events import (
    PROVIDER_ID_MAX_CHARS,
    DeadLetter,
    GenerationRequested,
    JobFailed,
    JobSucceeded,
    UserNotified,
    derive_event_id,
    unstorable_text,
)
from schemas.export import SCHEMA_DIR, rendered_schemas


def test_exported_schemas_match_the_models() -> None:
    expected = rendered_schemas()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.schema.json")}
    assert set(on_disk) == set(expected), "run `make schemas`"
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} drifted from the model: run `make schemas`"


def test_a_bare_upstream_request_validates_against_schema_and_model() -> None:
    bare = {"request_id": "order-42", "prompt": "a lighthouse in a storm"}
    schema = json.loads((SCHEMA_DIR / "GenerationRequested.schema.json").read_text())
    jsonschema.validate(bare, schema)
    first = GenerationRequested.model_validate(bare)
    again = GenerationRequested.model_validate(bare)
    # A resend of the same bare request gets the same event id, so it is recognised.
    assert first.event_id == again.event_id == derive_event_id("order-42", "GenerationRequested")
    assert (first.size, first.seconds, first.variants) == ("1280x720", 5, 1)


@pytest.mark.parametrize(
    "bad",
    [
        {"request_id": "x", "prompt": ""},
        {"request_id": "has space", "prompt": "p"},
        {"request_id": "x", "prompt": "p", "input_image_url": "http://insecure.example/a.png"},
        {"request_id": "x", "prompt": "p", "fallbacks": ["teleport"]},
        {"request_id": "x", "prompt": "p", "size": "big"},
        {"request_id": "x", "prompt": "p", "promt_typo": 1},
        {"request_id": "x", "prompt": "p", "event_type": "JobSubmitted"},
    ],
)
def test_bad_requests_are_refused_by_model_and_schema(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenerationRequested.model_validate(bad)
    schema = json.loads((SCHEMA_DIR / "GenerationRequested.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_explicit_event_id_is_kept() -> None:
    eid = uuid.uuid4()
    req = GenerationRequested.model_validate(
        {"request_id": "r", "prompt": "p", "event_id": str(eid)}
    )
    assert req.event_id == eid


# --- inputs the schema accepts are inputs the pipeline can carry ------------------------------

REQUEST_SCHEMA = json.loads((SCHEMA_DIR / "GenerationRequested.schema.json").read_text())


@pytest.mark.parametrize(
    "request_id",
    [".", "..", "...", "." * 128, "", "x" * 129, "a/b", "a b", "é", "a\x00", "a\n", "a\x7f"],
)
def test_request_ids_that_cannot_be_keys_or_file_names_are_refused(request_id: str) -> None:
    bad = {"request_id": request_id, "prompt": "p"}
    with pytest.raises(ValidationError):
        GenerationRequested.model_validate(bad)
    # Python's `re` lets `$` match before a final newline (ECMA-262 validators do not).
    if not request_id.endswith("\n"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, REQUEST_SCHEMA)
    with pytest.raises(ValidationError):  # every event's request_id follows the same rule
        JobFailed(
            event_id=uuid.uuid4(),
            request_id=request_id,
            stage="submit",
            reason_code="x",
            message="",
        )


@pytest.mark.parametrize(
    "request_id", ["a", ".a", "a.", "v1..2", "..a..", "order:42", "A-Z_0.9", "x" * 128]
)
def test_ordinary_request_ids_are_accepted(request_id: str) -> None:
    good = {"request_id": request_id, "prompt": "p", "parent_request_id": request_id}
    jsonschema.validate(good, REQUEST_SCHEMA)
    assert GenerationRequested.model_validate(good).request_id == request_id


def job_succeeded(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "request_id": "r",
        "provider": "azure-sora",
        "provider_job_id": "task_1",
        "generation_ids": ["gen_1"],
    }
    return fields | changes


@pytest.mark.parametrize(
    "changes",
    [
        {"provider_job_id": "j" * (PROVIDER_ID_MAX_CHARS + 1)},
        {"provider_job_id": ""},
        {"provider_job_id": "task\n1"},
        {"generation_ids": ["g" * (PROVIDER_ID_MAX_CHARS + 1)]},
        {"generation_ids": ["gen\x00"]},
        {"generation_ids": [f"gen_{i}" for i in range(17)]},
        {"provider": "p" * 65},
        {"endpoint_host": "h" * 257},
    ],
)
def test_provider_ids_are_bounded_by_model_and_schema(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        JobSucceeded.model_validate(job_succeeded(**changes))
    schema = json.loads((SCHEMA_DIR / "JobSucceeded.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job_succeeded(**changes), schema)


def test_provider_ids_at_their_bound_are_accepted() -> None:
    at_bound = "😀" * PROVIDER_ID_MAX_CHARS
    event = JobSucceeded.model_validate(
        job_succeeded(provider_job_id=at_bound, generation_ids=[at_bound] * 16)
    )
    assert event.provider_job_id == at_bound


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt": "a\x00b"},
        {"metadata": {"lang": "fr\x00"}},
        {"metadata": {"la\x00ng": "fr"}},
        {"model": "sora\x00"},
    ],
)
def test_text_the_records_cannot_store_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="cannot store"):
        GenerationRequested.model_validate({"request_id": "r", "prompt": "p"} | changes)


def test_the_text_rule_holds_in_every_event_and_nested_snapshot() -> None:
    with pytest.raises(ValidationError, match="cannot store"):
        JobFailed(
            event_id=uuid.uuid4(), request_id="r", stage="poll", reason_code="x", message="\x00"
        )
    with pytest.raises(ValidationError, match="cannot store"):
        JobSucceeded.model_validate(job_succeeded(request={"prompt": "a\x00"}))
    with pytest.raises(ValidationError, match="cannot store"):
        UserNotified(
            event_id=uuid.uuid4(),
            request_id="r",
            channel="record",
            language="en",
            message="hi\x00",
            delivered=True,
        )
    # Tabs, newlines and other controls are text PostgreSQL stores: they stay allowed.
    assert GenerationRequested(request_id="r", prompt="line\n\tnext\x01").prompt.endswith("\x01")


def test_dead_letters_keep_any_bytes_the_rule_is_for_events_only() -> None:
    letter = DeadLetter(
        stage="submitter",
        reason="poison",
        original_topic="t",
        original_partition=0,
        original_offset=1,
        original_key=None,
        original_value='{"prompt": "\x00"}',
    )
    assert "\x00" in letter.original_value


def test_unstorable_text_names_the_field() -> None:
    assert unstorable_text({"a": ["ok", "no\x00"]}, "metadata") == "metadata.a[1]"
    assert unstorable_text({"k\x00": "v"}, "metadata") == "metadata (a key)"
    assert unstorable_text(["fine", 3, None], "x") is None

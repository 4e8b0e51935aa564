"""The exported JSON Schemas are the contract for producers in other languages: keep them fresh."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest
from pydantic import ValidationError

from schemas.events import GenerationRequested, derive_event_id
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

"""The checked-in AsyncAPI document is the apps' own: regenerate it when a stage changes."""

from __future__ import annotations

import json

from services.asyncapi import ASYNCAPI_FILE, render_asyncapi


def test_asyncapi_document_matches_the_apps() -> None:
    assert ASYNCAPI_FILE.read_text(encoding="utf-8") == render_asyncapi(), "run `make schemas`"


def test_the_request_contract_is_documented() -> None:
    document = json.loads(ASYNCAPI_FILE.read_text(encoding="utf-8"))
    addresses = {c["address"] for c in document["channels"].values()}
    assert "vidpipe.generation.requested" in addresses
    assert "GenerationRequested" in json.dumps(document["components"]["schemas"])

"""The AsyncAPI document of every stage, generated from the FastStream apps themselves.

Run `python -m services.asyncapi` (or `make schemas`) to write `schemas/asyncapi.json`; a test
fails when the checked-in file drifts from the apps. Topic names use the default prefix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faststream.specification import AsyncAPI
from pydantic import BaseModel

from services.registry import STAGES, create_stage
from vidpipe import __version__
from vidpipe.settings import Settings

__all__ = ["ASYNCAPI_FILE", "render_asyncapi"]

# The document sits beside the contract it describes, though it is generated from the stages.
ASYNCAPI_FILE = Path(__file__).parent.parent / "schemas" / "asyncapi.json"


def render_asyncapi() -> str:
    # Everything that changes which topics a stage reads is pinned, so the document does not
    # depend on the environment it is generated in.
    settings = Settings(
        kafka_bootstrap="kafka:9092",
        topic_prefix="vidpipe.",
        failover_when="after_retry",
        webhook_secret=None,
    )
    stages = [create_stage(name, settings) for name in STAGES]
    brokers = [stage.broker for stage in stages]
    spec = AsyncAPI(
        *brokers,
        title="vidpipe",
        version=__version__,
        description=(
            "Events of the vidpipe pipeline. Upstream systems publish GenerationRequested "
            "(JSON, key = request_id) to vidpipe.generation.requested; JSON Schemas of every "
            "event are in schemas/json/."
        ),
        schema_version="3.0.0",
    )
    document = json.loads(spec.to_specification().to_json())
    for stage in stages:
        for subscriber, models in stage.batch_models.items():
            _name_batch_payloads(document, subscriber, models)
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _name_batch_payloads(
    document: dict[str, Any], subscriber: str, models: Mapping[str, type[BaseModel]]
) -> None:
    """A batch subscriber's handler takes the raw records (it reads each one itself), so
    FastStream documents an empty payload; name the event type each of its topics carries."""
    messages: dict[str, Any] = document["components"]["messages"]
    schemas: dict[str, Any] = document["components"]["schemas"]
    for title, message in messages.items():
        if not title.startswith(f"{subscriber}:"):
            continue
        topic = title.removeprefix(f"{subscriber}:").removesuffix(":SubscribeMessage")
        model = models.get(topic) or (next(iter(models.values())) if len(models) == 1 else None)
        if model is None:
            continue
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, schema)
        message["payload"] = {"$ref": f"#/components/schemas/{model.__name__}"}
    if not any(
        m["payload"] == {"$ref": "#/components/schemas/EmptyPayload"} for m in messages.values()
    ):
        schemas.pop("EmptyPayload", None)


if __name__ == "__main__":
    ASYNCAPI_FILE.write_text(render_asyncapi(), encoding="utf-8")
    print(ASYNCAPI_FILE)

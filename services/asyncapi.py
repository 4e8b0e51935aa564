"""The AsyncAPI document of every stage, generated from the FastStream apps themselves.

Run `python -m services.asyncapi` (or `make schemas`) to write `schemas/asyncapi.json`; a test
fails when the checked-in file drifts from the apps. Topic names use the default prefix.
"""

from __future__ import annotations

import json
from pathlib import Path

from faststream.specification import AsyncAPI

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
    brokers = [create_stage(name, settings).broker for name in STAGES]
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
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    ASYNCAPI_FILE.write_text(render_asyncapi(), encoding="utf-8")
    print(ASYNCAPI_FILE)

"""vidpipe: a Kafka pipeline that turns prompts into stored, playable videos, reliably.

The public face for code that talks to a running pipeline: build and publish requests, and the
exception tree's root. Everything else is reached through its layer (see docs/layers.md).

    from vidpipe import RequestPublisher, new_request

    async with RequestPublisher("broker:9092") as publisher:
        await publisher.publish(new_request("a red fox in snow", request_id="order-42"))

The names are loaded on first use, so `import vidpipe.<anything>` (every CLI call, every stage
process) does not pay for the Kafka client the publisher needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.events import GenerationRequested
    from vidpipe.bus.upstream import RequestPublisher, load_ndjson, new_request
    from vidpipe.errors import ConfigurationError, VidpipeError

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "GenerationRequested",
    "RequestPublisher",
    "VidpipeError",
    "__version__",
    "load_ndjson",
    "new_request",
]

_HOMES = {
    "ConfigurationError": "vidpipe.errors",
    "GenerationRequested": "schemas.events",
    "RequestPublisher": "vidpipe.bus.upstream",
    "VidpipeError": "vidpipe.errors",
    "load_ndjson": "vidpipe.bus.upstream",
    "new_request": "vidpipe.bus.upstream",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vidpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Publishing GenerationRequested from Python: validated before anything is sent.

from vidpipe.client import RequestPublisher, new_request
async with RequestPublisher("broker:9092") as publisher:
    await publisher.publish(new_request("a red fox running through snow"))
"""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.events import GenerationRequested
from schemas.topics import DEFAULT_PREFIX, Topics

__all__ = ["RequestPublisher", "new_request"]


def new_request(
    prompt: str, *, request_id: str | None = None, **fields: Any
) -> GenerationRequested:
    """A validated request; raises pydantic.ValidationError on bad input, before any I/O."""
    rid = request_id or f"req-{uuid.uuid4().hex[:16]}"
    return GenerationRequested.model_validate({"request_id": rid, "prompt": prompt, **fields})


class RequestPublisher:
    """Publishes requests to `{prefix}generation.requested`, keyed by request id."""

    def __init__(self, bootstrap: str, *, topic_prefix: str = DEFAULT_PREFIX) -> None:
        self.topic = Topics(topic_prefix).generation_requested
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
        )

    async def __aenter__(self) -> RequestPublisher:
        await self._producer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    async def publish(self, request: GenerationRequested) -> None:
        await self._producer.send_and_wait(
            self.topic,
            value=request.model_dump_json().encode(),
            key=request.request_id.encode(),
            headers=[("content-type", b"application/json"), ("event-type", b"GenerationRequested")],
        )

    async def publish_raw(self, value: bytes, key: str | None = None) -> None:
        """Send bytes as they are (for tests of what the pipeline does with bad input)."""
        await self._producer.send_and_wait(
            self.topic, value=value, key=key.encode() if key else None
        )

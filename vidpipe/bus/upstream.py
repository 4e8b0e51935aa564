"""Publishing GenerationRequested from Python: validated before anything is sent.

from vidpipe.bus.upstream import RequestPublisher, new_request
async with RequestPublisher("broker:9092") as publisher:
    await publisher.publish(new_request("a red fox running through snow"))
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.events import CancelRequested, GenerationRequested, PollHinted
from schemas.topics import DEFAULT_PREFIX, Topics
from vidpipe.bus.security import KafkaSecurity, client_kwargs, diagnose_refusal
from vidpipe.bus.tracing import trace_headers
from vidpipe.errors import BrokerNotReadyError

__all__ = ["RequestPublisher", "load_ndjson", "new_request"]


def new_request(
    prompt: str, *, request_id: str | None = None, **fields: Any
) -> GenerationRequested:
    """A validated request; raises pydantic.ValidationError on bad input, before any I/O."""
    rid = request_id or f"req-{uuid.uuid4().hex[:16]}"
    return GenerationRequested.model_validate({"request_id": rid, "prompt": prompt, **fields})


def load_ndjson(lines: Iterable[str]) -> tuple[list[GenerationRequested], list[str]]:
    """Parse one request per line (blank lines skipped); every problem as "line N: reason".

    A line without `request_id` gets a new one. Nothing should be sent unless errors is empty.
    """
    requests: list[GenerationRequested] = []
    errors: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not JSON ({exc.msg})")
            continue
        if not isinstance(data, dict):
            errors.append(f"line {number}: expected a JSON object")
            continue
        data.setdefault("request_id", f"req-{uuid.uuid4().hex[:16]}")
        try:
            request = GenerationRequested.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(line)"
            errors.append(f"line {number}: {where}: {first['msg']}")
            continue
        if request.request_id in seen:
            errors.append(f"line {number}: request_id {request.request_id!r} repeats")
            continue
        seen.add(request.request_id)
        requests.append(request)
    return requests, errors


class RequestPublisher:
    """Publishes requests to `{prefix}generation.requested`, keyed by request id."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = DEFAULT_PREFIX,
        security: KafkaSecurity | None = None,
    ) -> None:
        """`security`: TLS/SASL for the connection; None reads VIDPIPE_KAFKA_SECURITY_PROTOCOL,
        VIDPIPE_KAFKA_SASL_* and VIDPIPE_KAFKA_SSL_* from the environment."""
        self.topic = Topics(topic_prefix).generation_requested
        self.cancel_topic = Topics(topic_prefix).cancel_requested
        self.hint_topic = Topics(topic_prefix).poll_hinted
        self._bootstrap = bootstrap_servers
        self._security = security
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            **client_kwargs(security),
        )

    async def __aenter__(self) -> RequestPublisher:
        try:
            await self._producer.start()
        except KafkaError:
            # Refused credentials or TLS: say so in one line (never the secret), not "Unable
            # to bootstrap".
            reason = await diagnose_refusal(self._bootstrap, self._security)
            if reason is not None:
                await self._producer.stop()
                raise BrokerNotReadyError(reason) from None
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    async def publish(
        self, request: GenerationRequested, *, traceparent: str | None = None
    ) -> None:
        """Send one request. Its trace: `traceparent` (a W3C trace context) when given, else
        the caller's current span, if any; every stage's spans of the request hang below it."""
        await self._producer.send_and_wait(
            self.topic,
            value=request.model_dump_json().encode(),
            key=request.request_id.encode(),
            headers=[
                ("content-type", b"application/json"),
                ("event-type", b"GenerationRequested"),
                *trace_headers(traceparent),
            ],
        )

    async def publish_cancel(self, cancel: CancelRequested) -> None:
        """Ask for a request to be cancelled: `{prefix}cancel.requested`, keyed by request id."""
        await self._send(self.cancel_topic, cancel)

    async def publish_hint(self, hint: PollHinted) -> None:
        """Ask the poller to check a job now (a provider's webhook): `{prefix}poller.hinted`."""
        await self._send(self.hint_topic, hint)

    async def _send(self, topic: str, event: CancelRequested | PollHinted) -> None:
        await self._producer.send_and_wait(
            topic,
            value=event.model_dump_json().encode(),
            key=event.request_id.encode(),
            headers=[
                ("content-type", b"application/json"),
                ("event-type", event.event_type.encode()),
                *trace_headers(),  # the caller's current span, if any
            ],
        )

    async def publish_raw(self, value: bytes, key: str | None = None) -> None:
        """Send bytes as they are (for tests of what the pipeline does with bad input)."""
        await self._producer.send_and_wait(
            self.topic, value=value, key=key.encode() if key else None
        )

"""Traces across stages: OpenTelemetry, the context carried in Kafka headers (W3C `traceparent`).

One request is one trace: the upstream producer's `traceparent` header (or the gateway's HTTP
span) is the parent of the submitter's span; every event a handler publishes carries the
handler's span in its headers, so the poller's, the fetcher's and the fallbacks' spans hang
below it, and a timer carries the span that scheduled it across its tiers until it fires.

- Per-message subscribers: FastStream's `KafkaTelemetryMiddleware` (on every broker, see
  `broker_middlewares`) opens a span per message from its headers and injects the current span
  into every publish.
- Keyed batches (`vidpipe.bus.batches`): FastStream opens one span per batch, so each record's
  context is extracted from its own headers and `record_span` opens a span around its handler.
- Timers (`vidpipe.bus.timers`): tier moves keep the record's headers; a fire runs in the
  context of the timer record (`record_context`).

Off unless configured, with the standard variables (`configure_tracing`); while off, the
tracer is OpenTelemetry's no-op one and nothing is injected.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import structlog
from faststream import BaseMiddleware
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.util.types import AttributeValue

from vidpipe.errors import ConfigurationError
from vidpipe.logs import redact_url

__all__ = [
    "RequestIdMiddleware",
    "broker_middlewares",
    "carried_trace",
    "configure_tracing",
    "context_from_headers",
    "record_context",
    "record_span",
    "trace_headers",
    "traced_asgi",
    "tracing_exporters",
]

#: The tracer of vidpipe's own spans (a proxy until `configure_tracing` sets the provider).
TRACER = trace.get_tracer("vidpipe")

#: How much of a key or request id goes into a span attribute or a log line.
_ID_LIMIT = 200


def tracing_exporters(env: Mapping[str, str]) -> list[str]:
    """The span exporters `env` asks for; empty: tracing is off.

    `OTEL_TRACES_EXPORTER` names them (`otlp`, `console`, comma-separated; `none`: off). Unset,
    tracing is on (OTLP) only when an OTLP endpoint is set: off by default, unlike the SDK's
    own default of `otlp`, so a stage never tries to export to a collector nobody runs.
    `OTEL_SDK_DISABLED=true` turns everything off.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if not named:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    names = [name.strip() for name in named.split(",") if name.strip()]
    return [] if "none" in names else names


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER: unknown exporter {name[:40]!r}")
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise ConfigurationError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is installed, not {protocol[:40]!r}"
        )
    # Imported only when used: it pulls in protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Endpoint, headers, timeout, compression and certificates from OTEL_EXPORTER_OTLP_*.
    return OTLPSpanExporter()


def configure_tracing(service: str) -> TracerProvider | None:
    """Export this process's spans as the environment says (`tracing_exporters`); None: off.

    The service name is `OTEL_SERVICE_NAME`, else `service` (the stage's name); the sampler
    (`OTEL_TRACES_SAMPLER`, default: parent-based, always on), the batch processor
    (`OTEL_BSP_*`) and the resource (`OTEL_RESOURCE_ATTRIBUTES`) follow the standard variables.
    Call `shutdown()` on the result when the process stops, so the last spans are sent.
    """
    names = tracing_exporters(os.environ)
    if not names:
        return None
    exporters = [_exporter(name, os.environ) for name in names]
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def context_from_headers(headers: Sequence[tuple[str, Any]] | None) -> Context | None:
    """The trace context a Kafka record's headers carry (`traceparent`, `tracestate`,
    `baggage`, or what `OTEL_PROPAGATORS` names); None when they carry no valid span."""
    carrier = {name: _text(value) for name, value in headers or () if value is not None}
    if not carrier:
        return None
    extracted = propagate.extract(carrier)
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


#: The headers that carry a trace (W3C trace context and baggage).
TRACE_HEADERS = ("traceparent", "tracestate", "baggage")


def carried_trace(record: Any) -> tuple[tuple[str, bytes], ...]:
    """The trace headers of a Kafka record, as they are, to send on with a copy of it."""
    return tuple(
        (name, bytes(value))
        for name, value in getattr(record, "headers", None) or ()
        if name in TRACE_HEADERS and isinstance(value, bytes | bytearray)
    )


def trace_headers(traceparent: str | None = None) -> list[tuple[str, bytes]]:
    """Kafka headers carrying `traceparent` as given, else the current span (none: no span)."""
    carrier: dict[str, str] = {}
    if traceparent:
        carrier["traceparent"] = traceparent
    else:
        propagate.inject(carrier)
    return [(name, value.encode()) for name, value in carrier.items()]


@contextlib.contextmanager
def record_context(record: Any) -> Iterator[None]:
    """Run the block in the trace of `record` (its headers' context; the current one if none),
    so what it publishes continues that trace."""
    extracted = context_from_headers(getattr(record, "headers", None))
    if extracted is None:
        yield
        return
    token = otel_context.attach(extracted)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def record_span(record: Any, *, stage: str, request_id: str, event_type: str) -> Iterator[None]:
    """A consumer span around one record's handler, child of the span its headers carry (else
    of the current one: the batch's), with `request_id` bound for every log line inside."""
    parent = context_from_headers(getattr(record, "headers", None))
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "kafka",
        "messaging.operation": "process",
        "messaging.destination.name": str(record.topic),
        "messaging.kafka.destination.partition": int(record.partition),
        "messaging.kafka.message.offset": int(record.offset),
        "vidpipe.stage": stage,
        "vidpipe.request_id": request_id[:_ID_LIMIT],
        "vidpipe.event_type": event_type,
    }
    with (
        TRACER.start_as_current_span(
            f"{record.topic} process",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            # The type only: an exception's message may quote what a provider answered.
            record_exception=False,
            set_status_on_exception=False,
        ) as span,
        structlog.contextvars.bound_contextvars(request_id=request_id[:_ID_LIMIT]),
    ):
        try:
            yield
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            raise


class RequestIdMiddleware(BaseMiddleware):
    """Binds the message's key (every vidpipe message is keyed by its request id) as
    `request_id` for the log lines of its handling (per-message subscribers)."""

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        key = getattr(msg.raw_message, "key", None)
        if not isinstance(key, bytes) or not key:
            return await call_next(msg)
        with structlog.contextvars.bound_contextvars(request_id=_text(key)[:_ID_LIMIT]):
            return await call_next(msg)


def broker_middlewares() -> list[Any]:
    """The middlewares every broker gets for traces and log context: FastStream's telemetry
    (a span per message, the context injected into every publish) outside the request id."""
    # Its counters and histograms go to OpenTelemetry's no-op meter: metrics are Prometheus's.
    return [KafkaTelemetryMiddleware(include_messages_counters=False), RequestIdMiddleware]


def _http_without_query(span: Any, scope: Mapping[str, Any]) -> None:
    # OpenTelemetry's ASGI middleware records the query string; a browser's EventSource may
    # have to carry a credential there, so a span gets the path and "[redacted]" only.
    recorded: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    query = bool(scope.get("query_string"))
    path = str(scope.get("path", ""))
    for name in ("http.url", "url.full"):
        if name in recorded:
            span.set_attribute(name, redact_url(str(recorded[name])))
    if "http.target" in recorded:
        span.set_attribute("http.target", f"{path}?[redacted]" if query else path)
    if "url.query" in recorded:
        span.set_attribute("url.query", "[redacted]")


def traced_asgi(app: Any) -> Any:
    """`app` (the gateway) with a server span per HTTP request, the parent of what it publishes
    (an incoming `traceparent` header is its parent); `/metrics` and health checks excluded, no
    span per body chunk (an SSE stream sends many), no query string recorded."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(
        app,
        excluded_urls="/metrics,/healthz,/readyz",
        server_request_hook=_http_without_query,
        exclude_spans=["receive", "send"],
    )

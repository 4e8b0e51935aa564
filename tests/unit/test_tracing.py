"""Traces: when tracing is on, how a record's context is read and continued, what log lines
carry, and what a provider call's span records."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import structlog
from faststream.kafka import KafkaMessage, TestKafkaBroker
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas.events import JobProgressed
from schemas.topics import Topics, timer_tier_topic
from vidpipe.bus.broker import make_broker
from vidpipe.bus.deadletter import build_dead_letter
from vidpipe.bus.publisher import JSON_HEADERS
from vidpipe.bus.security import KafkaSecurity
from vidpipe.bus.tracing import (
    carried_trace,
    configure_tracing,
    context_from_headers,
    record_context,
    record_span,
    trace_headers,
    tracing_exporters,
)
from vidpipe.errors import ConfigurationError
from vidpipe.logs import add_trace_ids, configure_logging
from vidpipe.providers.http import build_async_client

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),  # off by default
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_TRACES_EXPORTER": " "}, []),
    ],
)
def test_which_exporters_the_environment_asks_for(env: dict[str, str], expected: list[str]) -> None:
    assert tracing_exporters(env) == expected


# One SDK provider for the module's tests (the global one can be set once per process).
_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    trace.set_tracer_provider(_PROVIDER)  # ignored (with a warning) after the first time
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@dataclass
class Record:
    topic: str = "vidpipe.job.submitted"
    partition: int = 1
    offset: int = 42
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)


def test_a_record_without_trace_headers_has_no_context() -> None:
    assert context_from_headers(None) is None
    assert context_from_headers([("content-type", b"application/json")]) is None
    assert context_from_headers([("traceparent", b"not-a-traceparent")]) is None


def test_trace_headers_carry_the_given_traceparent_or_nothing_without_a_span() -> None:
    assert trace_headers(TRACEPARENT) == [("traceparent", TRACEPARENT.encode())]
    assert trace_headers() == []


def test_a_record_span_is_a_child_of_the_span_its_headers_carry(
    spans: InMemorySpanExporter,
) -> None:
    record = Record(headers=(("traceparent", TRACEPARENT.encode()),))
    with record_span(record, stage="poller", request_id="r-1", event_type="JobSubmitted"):
        published = dict(trace_headers())  # what a publish inside the handler carries
    (span,) = spans.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.kind is trace.SpanKind.CONSUMER
    assert span.attributes is not None
    assert span.attributes["vidpipe.request_id"] == "r-1"
    assert span.attributes["messaging.kafka.message.offset"] == 42
    own = f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"
    assert published["traceparent"] == own.encode()


def test_without_trace_headers_a_record_span_joins_the_current_span(
    spans: InMemorySpanExporter,
) -> None:
    tracer = trace.get_tracer("test")
    with (
        tracer.start_as_current_span("batch") as batch,
        record_span(Record(), stage="fetcher", request_id="r-2", event_type="JobSucceeded"),
    ):
        pass
    record_one = next(s for s in spans.get_finished_spans() if s.name != "batch")
    assert record_one.parent is not None
    assert record_one.parent.span_id == batch.get_span_context().span_id


def test_record_context_continues_the_records_trace(spans: InMemorySpanExporter) -> None:
    record = Record(headers=(("traceparent", TRACEPARENT.encode()),))
    with record_context(record), trace.get_tracer("test").start_as_current_span("fire"):
        pass
    (span,) = spans.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    with record_context(Record()):  # no headers: nothing changes
        assert not trace.get_current_span().get_span_context().is_valid


# --- log lines -----------------------------------------------------------------------------


def test_the_log_processor_adds_the_current_trace_and_span(spans: InMemorySpanExporter) -> None:
    assert add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}
    with trace.get_tracer("test").start_as_current_span("work") as span:
        context = span.get_span_context()
        line = add_trace_ids(None, "info", {"event": "x"})
    assert line == {
        "event": "x",
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }
    # A line that names its own ids keeps them.
    kept = add_trace_ids(None, "info", {"event": "x", "trace_id": "mine"})
    assert kept["trace_id"] == "mine"


def test_log_lines_of_a_record_carry_its_request_id_and_trace(
    spans: InMemorySpanExporter,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        record = Record(headers=(("traceparent", TRACEPARENT.encode()),))
        with record_span(record, stage="poller", request_id="r-9", event_type="JobSubmitted"):
            structlog.get_logger("vidpipe.test").info("polled", status="running")
        structlog.get_logger("vidpipe.test").info("after")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    inside, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["request_id"] == "r-9"
    assert inside["trace_id"] == TRACE_ID
    assert "request_id" not in after and "trace_id" not in after


# --- provider calls ------------------------------------------------------------------------


async def test_a_provider_call_is_a_client_span_without_secrets(
    spans: InMemorySpanExporter,
) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    client = build_async_client(
        "https://user:pw@provider.example/v1",
        headers={"api-key": "sk-secret-key-123456"},
        params={"api-version": "preview"},
        transport=httpx.MockTransport(answer),
    )
    async with client:
        with trace.get_tracer("test").start_as_current_span("handler") as handler:
            await client.get("/content?sig=SIGNATURE&se=2030")
    (call,) = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.CLIENT]
    assert call.parent is not None
    assert call.parent.span_id == handler.get_span_context().span_id
    attributes: dict[str, Any] = dict(call.attributes or {})
    text = repr(attributes)
    for secret in ("SIGNATURE", "sk-secret-key", "pw@", "api-version"):
        assert secret not in text, attributes
    url = attributes.get("url.full") or attributes.get("http.url")
    assert url == "https://[redacted]@provider.example/v1/content?[redacted]"
    # The span is ours; the provider, a third party, is not told the trace.
    assert call.context.trace_id == handler.get_span_context().trace_id
    for header in ("traceparent", "tracestate", "baggage"):
        assert header not in seen[0].headers


def test_a_copy_of_a_record_carries_its_trace_headers_and_nothing_else() -> None:
    record = Record(
        headers=(
            ("content-type", b"application/json"),
            ("traceparent", TRACEPARENT.encode()),
            ("tracestate", b"vendor=1"),
        )
    )
    assert carried_trace(record) == (
        ("traceparent", TRACEPARENT.encode()),
        ("tracestate", b"vendor=1"),
    )
    assert carried_trace(Record()) == ()


def test_configure_tracing_is_off_by_default_and_refuses_what_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert configure_tracing("poller") is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigurationError, match="unknown exporter"):
        configure_tracing("poller")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigurationError, match="http/protobuf"):
        configure_tracing("poller")


# --- what a stage publishes carries the trace ----------------------------------------------


async def test_events_timers_and_dead_letters_published_in_a_records_trace_carry_it(
    spans: InMemorySpanExporter,
) -> None:
    topics = Topics("unit.")
    broker, publisher = make_broker(
        "127.0.0.1:9",  # never dialled: TestKafkaBroker stands in
        stage="poller",
        topics=topics,
        publishes=(JobProgressed,),
        security=KafkaSecurity(),
    )
    seen: dict[str, dict[str, str]] = {}
    timer_tier = timer_tier_topic(topics.timers("poller"), 5)

    def keeper(topic: str) -> Any:
        async def keep(_body: Any, message: KafkaMessage) -> None:
            seen[topic] = dict(message.headers)

        return keep

    for topic in (topics.job_progressed, timer_tier, topics.deadletter):
        broker.subscriber(topic)(keeper(topic))

    record = Record(headers=(("traceparent", TRACEPARENT.encode()),))
    letter = build_dead_letter(
        SimpleNamespace(
            topic="unit.job.submitted", partition=0, offset=1, key=b"r-1", value=b"x", timestamp=0
        ),
        "poller",
        "unreadable",
    )
    async with TestKafkaBroker(broker):
        with record_span(record, stage="poller", request_id="r-1", event_type="JobSubmitted"):
            await publisher.publish(
                JobProgressed(
                    event_id=uuid.uuid4(),
                    request_id="r-1",
                    provider="azure-sora",
                    provider_job_id="j",
                    status="running",
                    provider_status="running",
                )
            )
            await publisher.schedule(
                delay_s=5, target_topic=topics.due("poller"), key="r-1", payload={}
            )
            await publisher.publish_dead_letter(letter)
    assert set(seen) == {topics.job_progressed, timer_tier, topics.deadletter}
    for topic, headers in seen.items():
        assert headers["traceparent"].split("-")[1] == TRACE_ID, topic
    assert "traceparent" not in JSON_HEADERS  # the shared constant is never written into

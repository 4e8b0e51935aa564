"""Traces across stages: real stage processes export OTLP/HTTP to a receiver run here, and one
request's spans, from the upstream producer's `traceparent` to the fetcher (and a fallback),
are one trace whose spans link parent to child."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from tests.e2e.conftest import EMULATOR_KEY, MakePipeline
from tests.e2e.gateway_harness import API_KEY, start_gateway
from tests.e2e.harness import Pipeline, make_request
from vidpipe.bus.upstream import RequestPublisher


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]


class OtlpReceiver:
    """The traces endpoint of an OTLP/HTTP collector (POST /v1/traces, protobuf), in a thread;
    every span it was sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver._take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _take(self, request: ExportTraceServiceRequest) -> None:
        taken: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    taken.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name")),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(taken)

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def _tracing_env(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_EXPORTER": "otlp",
        # Spans leave a stage every 100 ms, so the test waits for them, not for a shutdown.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "NO_PROXY": "127.0.0.1,localhost",
        # A download that fails at once goes to the fallbacks without retries in place.
        "VIDPIPE_DOWNLOAD_ATTEMPTS": "1",
    }


def _record_spans(spans: list[ReceivedSpan], service: str, event_type: str) -> list[ReceivedSpan]:
    """The per-record spans (vidpipe.bus.tracing.record_span) of `service` for `event_type`."""
    return [
        s
        for s in spans
        if s.service == service and s.attributes.get("vidpipe.event_type") == event_type
    ]


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    chain: list[ReceivedSpan] = []
    seen: set[str] = set()
    current = by_id.get(span.parent_id)
    while current is not None and current.span_id not in seen:
        chain.append(current)
        seen.add(current.span_id)
        current = by_id.get(current.parent_id)
    return chain


async def _wait_for_spans(
    otlp: OtlpReceiver, pipeline: Pipeline, trace_id: str, wanted: list[tuple[str, str]]
) -> list[ReceivedSpan]:
    """Poll the receiver until the trace holds a record span of every (service, event type)."""
    deadline = time.monotonic() + 60
    spans: list[ReceivedSpan] = []
    while time.monotonic() < deadline:
        spans = otlp.of_trace(trace_id)
        if all(_record_spans(spans, service, event) for service, event in wanted):
            return spans
        pipeline._check_alive()
        await asyncio.sleep(0.2)
    have = sorted({(s.service, s.name) for s in spans})
    raise AssertionError(f"missing spans of {wanted} in trace {trace_id}: have {have}")


async def test_one_request_is_one_trace_across_stage_processes(
    make_pipeline: MakePipeline, otlp: OtlpReceiver
) -> None:
    pipeline = await make_pipeline(_tracing_env(otlp.endpoint))
    for name in ("submitter", "poller", "fetcher", "recorder", "placeholder"):
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    stored = make_request(prefix, "traced", provider="azure-sora")
    # The download fails, so the fallback (a per-message subscriber) shows in the trace too.
    fallback = make_request(
        prefix,
        "traced-fallback",
        provider="openai-videos",
        prompt="a traced owl [emulator:download=missing]",
        fallbacks=["placeholder"],
    )
    trace_ids = {r.request_id: secrets.token_hex(16) for r in (stored, fallback)}
    upstream_span = {rid: secrets.token_hex(8) for rid in trace_ids}
    async with RequestPublisher(pipeline.bootstrap_servers, topic_prefix=prefix) as publisher:
        for request in (stored, fallback):
            rid = request.request_id
            await publisher.publish(
                request, traceparent=f"00-{trace_ids[rid]}-{upstream_span[rid]}-01"
            )
    views = await pipeline.wait_for([stored.request_id])
    assert views[stored.request_id].status == "stored"
    await pipeline.wait_for([fallback.request_id], until=lambda v: v.status == "placeholder")

    trace_id = trace_ids[stored.request_id]
    spans = await _wait_for_spans(
        otlp,
        pipeline,
        trace_id,
        [
            ("submitter", "GenerationRequested"),
            ("poller", "JobSubmitted"),
            ("poller", "PollDue"),
            ("fetcher", "JobSucceeded"),
        ],
    )
    by_id = {s.span_id: s for s in spans}
    # Nothing of the other request leaked into this trace, and every span of it is linked:
    # its parent is another span of the trace or the upstream producer's span.
    assert {s.attributes.get("vidpipe.request_id") for s in spans} <= {stored.request_id, None}
    for span in spans:
        assert span.parent_id in by_id or span.parent_id == upstream_span[stored.request_id], span
    assert {"submitter", "poller", "fetcher"} <= {s.service for s in spans}

    submitted = _record_spans(spans, "submitter", "GenerationRequested")[0]
    assert submitted.parent_id == upstream_span[stored.request_id]
    assert submitted.kind == ProtoSpan.SPAN_KIND_CONSUMER
    first_poll = _record_spans(spans, "poller", "JobSubmitted")[0]
    assert submitted in _ancestors(first_poll, by_id)
    # Each poll after the first came back on a durable timer, through the timer tiers, and is
    # still a descendant of the first one.
    for due in _record_spans(spans, "poller", "PollDue"):
        assert first_poll in _ancestors(due, by_id)
    fetched = _record_spans(spans, "fetcher", "JobSucceeded")[0]
    fetched_line = _ancestors(fetched, by_id)
    assert any(s.service == "poller" for s in fetched_line)
    assert submitted in fetched_line

    # Provider calls are client spans of the stage's trace, without the key or a query string.
    calls = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_CLIENT]
    assert {s.service for s in calls} >= {"submitter", "poller", "fetcher"}
    for call in calls:
        url = str(call.attributes.get("url.full") or call.attributes.get("http.url"))
        assert url.startswith("http"), url
        assert "?" not in url or url.endswith("?[redacted]"), url
    for span in spans:
        assert EMULATOR_KEY not in repr(span.attributes), span

    # The fallback: FastStream's per-message span, child of the fetcher's publish.
    fallback_trace = trace_ids[fallback.request_id]
    deadline = time.monotonic() + 60
    placeholder: list[ReceivedSpan] = []
    while not placeholder and time.monotonic() < deadline:
        placeholder = [s for s in otlp.of_trace(fallback_trace) if s.service == "placeholder"]
        await asyncio.sleep(0.2)
    assert placeholder, f"no placeholder span in {fallback_trace}"
    fallback_by_id = {s.span_id: s for s in otlp.of_trace(fallback_trace)}
    processed = [s for s in placeholder if s.kind == ProtoSpan.SPAN_KIND_CONSUMER]
    assert processed, placeholder
    assert any(s.service == "fetcher" for s in _ancestors(processed[0], fallback_by_id))
    # The stage's log lines carry the trace and the request.
    log = pipeline.stack.processes["fetcher"].log_path.read_text(errors="replace")
    assert any(
        "trace_id" in line and trace_id in line and stored.request_id in line
        for line in log.splitlines()
    ), log[-3000:]


async def test_a_request_sent_to_the_gateway_starts_its_trace_there(
    make_pipeline: MakePipeline, otlp: OtlpReceiver
) -> None:
    pipeline = await make_pipeline(_tracing_env(otlp.endpoint))
    pipeline.start("submitter")
    gateway = start_gateway(pipeline, _tracing_env(otlp.endpoint))
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    rid = f"{pipeline.settings.topic_prefix}via-gateway"
    async with gateway.client() as client:
        answer = await client.post(
            "/v1/generations?note=do-not-record",
            json={"request_id": rid, "prompt": "a traced heron"},
            headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
    assert answer.status_code == 202, answer.text
    spans = await _wait_for_spans(otlp, pipeline, trace_id, [("submitter", "GenerationRequested")])
    by_id = {s.span_id: s for s in spans}
    servers = [s for s in spans if s.service == "gateway" and s.kind == ProtoSpan.SPAN_KIND_SERVER]
    assert len(servers) == 1, servers
    (server,) = servers
    assert server.parent_id == caller_span
    submitted = _record_spans(spans, "submitter", "GenerationRequested")[0]
    assert server in _ancestors(submitted, by_id)
    for span in spans:
        assert "do-not-record" not in repr(span.attributes), span
        assert API_KEY not in repr(span.attributes), span

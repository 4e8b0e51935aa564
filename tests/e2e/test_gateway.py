"""The HTTP gateway as its own process, on the real broker and PostgreSQL, with the core stages
and the emulator behind it: keys, idempotency, limits, problem details, SSE until stored, and a
schemathesis run of the checked-in OpenAPI document against it."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from sqlalchemy import func, select

from services.gateway.handlers import accepted_requests
from tests.e2e.gateway_harness import BURST_KEY, RATE_BURST, Gateway, start_gateway
from tests.e2e.harness import Pipeline
from vidpipe.bus.upstream import RequestPublisher, new_request
from vidpipe.db.tables import submissions
from vidpipe.media.sample import probe_mp4
from vidpipe.ops.offsets import end_offsets

ROOT = Path(__file__).resolve().parents[2]
CORE = ("submitter", "poller", "fetcher", "recorder")
PROBLEM = "application/problem+json"


async def _rows(pipeline: Pipeline, table: Any) -> int:
    async with pipeline.records.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _requested_messages(pipeline: Pipeline) -> int:
    topic = pipeline.settings.topics.generation_requested
    return sum((await end_offsets(pipeline.bootstrap_servers, [topic])).values())


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"].startswith("urn:vidpipe:problem:")
    return body


async def _follow(gateway: Gateway, rid: str, timeout_s: float = 120.0) -> list[tuple[str, str]]:
    """Read the request's SSE stream to its `end` event: (event, data) pairs."""
    seen: list[tuple[str, str]] = []
    event = "message"
    async with (
        gateway.client() as client,
        asyncio.timeout(timeout_s),
        client.stream("GET", f"/v1/generations/{rid}/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                seen.append((event, line.removeprefix("data:").strip()))
                if event == "end":
                    return seen
    raise AssertionError(f"the stream ended before `end`: {seen}")


async def test_the_gateway_accepts_once_streams_and_serves_the_video(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    for name in CORE:
        pipeline.start(name)
    gateway = start_gateway(pipeline)
    prefix = pipeline.settings.topic_prefix.rstrip(".")
    body = {"prompt": "a gateway heron"}

    # No key, a wrong key: 401 before anything is read; nothing stored, nothing published.
    async with gateway.client(key=None) as anonymous:
        _problem(await anonymous.post("/v1/generations", json=body), 401)
        wrong = await anonymous.post(
            "/v1/generations", json=body, headers={"Authorization": "Bearer not-a-key"}
        )
        assert _problem(wrong, 401) and wrong.headers["www-authenticate"].startswith("Bearer")
        _problem(await anonymous.get("/v1/generations"), 401)
    assert await _rows(pipeline, accepted_requests) == 0
    assert await _requested_messages(pipeline) == 0

    async with gateway.client() as client:
        # Refusals, each a problem document, none leaving anything behind.
        _problem(await client.post("/v1/generations", json={"prompt": "x" * 5000}), 413)
        _problem(await client.post("/v1/generations", content=b"{}", headers={}), 415)
        invalid = _problem(await client.post("/v1/generations", json={"seconds": 500}), 422)
        assert {e["field"] for e in invalid["errors"]} >= {"prompt", "seconds"}
        _problem(await client.post("/v1/generations", json={**body, "event_id": "x"}), 422)
        assert await _rows(pipeline, accepted_requests) == 0

        # Idempotency-Key: the same key and body answer the same; another body is refused.
        first = await client.post("/v1/generations", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == 202, first.text
        accepted = first.json()
        rid = accepted["request_id"]
        assert first.headers["location"] == accepted["status_url"] == f"/v1/generations/{rid}"
        again = await client.post("/v1/generations", json=body, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 202 and again.json()["request_id"] == rid
        assert again.headers["idempotent-replayed"] == "true"
        other = {**body, "prompt": "another"}
        _problem(
            await client.post("/v1/generations", json=other, headers={"Idempotency-Key": "k1"}),
            422,
        )

        # A chosen request id: a resend answers the same; the same id with another body is 409.
        named = {**body, "request_id": f"{prefix}-named"}
        assert (await client.post("/v1/generations", json=named)).status_code == 202
        resend = await client.post("/v1/generations", json=named)
        assert resend.status_code == 202 and resend.headers["idempotent-replayed"] == "true"
        _problem(await client.post("/v1/generations", json={**named, "seconds": 8}), 409)

    # The SSE stream follows the request through the stages until it is stored.
    stream = await _follow(gateway, rid)
    types = [event for event, _ in stream]
    # In the order the recorder logged them (the stream resumes by that `seq`): events of
    # different topics may be logged in another order than they happened, so only the end and
    # the set are fixed; each event carries its own `occurred_at`.
    assert types[-1] == "end", types
    assert {"GenerationRequested", "JobSubmitted", "JobSucceeded", "VideoStored"} <= set(types)
    assert json.loads(stream[-1][1])["status"] == "stored"
    await pipeline.wait_for([f"{prefix}-named"], until=lambda v: v.status == "stored")

    async with gateway.client() as client:
        record = (await client.get(f"/v1/generations/{rid}")).json()
        assert record["status"] == "stored" and record["terminal"] is True
        assert record["provider_job_id"] and record["video_url"]
        video = await client.get(record["video_url"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        path = tmp_path / "from-gateway.mp4"
        path.write_bytes(video.content)
        assert probe_mp4(path)["duration"] > 1
        _problem(await client.get("/v1/generations/no-such-request"), 404)

        # The list: filters and keyset pages.
        stored = (await client.get("/v1/generations", params={"status": "stored"})).json()
        assert {g["request_id"] for g in stored["items"]} == {rid, f"{prefix}-named"}
        page1 = (await client.get("/v1/generations", params={"limit": 1})).json()
        assert len(page1["items"]) == 1 and page1["next_cursor"]
        page2 = (
            await client.get("/v1/generations", params={"limit": 1, "cursor": page1["next_cursor"]})
        ).json()
        assert page2["items"][0]["request_id"] != page1["items"][0]["request_id"]
        assert page2["next_cursor"] is None
        _problem(await client.get("/v1/generations", params={"status": "nope"}), 422)
        _problem(await client.get("/v1/generations", params={"cursor": "garbage"}), 400)
        answer = await client.get("/v1/ops/stages")
        assert answer.status_code == 200, (answer.text, gateway.process.log_tail())
        stages = answer.json()
        submitter = next(g for g in stages["groups"] if g["group"] == f"{prefix}.submitter")
        assert submitter["members"] and submitter["lag"].get("generation.requested") == 0

    # Two requests accepted, each published once (resends published nothing), one job each.
    assert await _requested_messages(pipeline) == 2
    assert await _rows(pipeline, submissions) == 2

    # The gateway's latency beside a plain Kafka publish, same run (printed for the note).
    gateway_ms, kafka_ms = [], []
    # On the burst key, whose tokens the rate-limit check below spends anyway.
    async with gateway.client(key=BURST_KEY) as client:
        for n in range(10):
            t0 = time.perf_counter()
            sent = await client.post("/v1/generations", json={"prompt": f"latency {n}"})
            gateway_ms.append((time.perf_counter() - t0) * 1000)
            assert sent.status_code == 202
    async with RequestPublisher(pipeline.bootstrap_servers, topic_prefix=prefix + ".") as plain:
        for n in range(10):
            t0 = time.perf_counter()
            await plain.publish(new_request(f"latency plain {n}", request_id=f"{prefix}-lat-{n}"))
            kafka_ms.append((time.perf_counter() - t0) * 1000)
    print(
        f"\nPOST /v1/generations median {statistics.median(gateway_ms):.1f} ms; "
        f"plain Kafka publish median {statistics.median(kafka_ms):.1f} ms (10 each)"
    )

    # The rate limit is per key: the burst key runs dry, the tests' key still works.
    async with gateway.client(key=BURST_KEY) as burst:
        started = time.monotonic()
        answers = list(
            await asyncio.gather(*(burst.get("/v1/session") for _ in range(RATE_BURST + 15)))
        )
        elapsed = time.monotonic() - started
    limited = [a for a in answers if a.status_code == 429]
    # 1 token a second comes back: at most `elapsed` more calls than the burst can pass.
    assert len(limited) >= 15 - int(elapsed) - 1, (len(limited), elapsed)
    assert all(int(a.headers["retry-after"]) >= 1 for a in limited)
    assert _problem(limited[0], 429)
    async with gateway.client() as client:
        assert (await client.get("/v1/session")).status_code == 200


async def test_the_openapi_document_holds_against_the_running_gateway(pipeline: Pipeline) -> None:
    gateway = start_gateway(
        pipeline,
        {"VIDPIPE_GATEWAY_RATE_PER_MINUTE": "600000", "VIDPIPE_GATEWAY_RATE_BURST": "10000"},
    )
    schema = schemathesis.openapi.from_path(str(ROOT / "schemas/openapi.json"))
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    ran: list[str] = []
    for result in schema.get_all_operations():
        # An operation the document cannot express is a failure here, not a skip.
        assert isinstance(result, Ok), result
        operation = result.ok()
        # The ops endpoints take no input and each call asks the broker a lot: a few suffice.
        examples = 3 if operation.path.startswith("/v1/ops/") else 12

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(
                base_url=gateway.url, headers=gateway.headers(), checks=checks, timeout=30
            )

        # Blocking calls in the test's loop: the gateway is another process, so that is fine.
        await asyncio.to_thread(check)
        ran.append(operation.label)
    assert len(ran) >= 9, ran
    assert gateway.process.running, gateway.process.log_tail()

"""The domain metrics (vidpipe.metrics): each edge records its fact into the current stage's
registry, and two stages in one process never count into each other's.

The same metrics scraped over HTTP from real stages on a real broker: tests/e2e/test_metrics.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from faststream.kafka import TestKafkaBroker
from prometheus_client import CollectorRegistry

from schemas.events import DeadLetter, Event, GenerationRequested, VideoStored, derive_event_id
from schemas.topics import Topics
from services.gateway.app import create_app
from services.recorder.handlers import RecorderDeps, handle_batch
from vidpipe.bus.deadletter import FailureHandling, RedeliveryBackoff
from vidpipe.bus.health import StageHealth
from vidpipe.bus.lag import lag_of
from vidpipe.db.records import Records
from vidpipe.db.tables import create_tables, open_engine
from vidpipe.errors import NotFound, ProviderUnavailable, RateLimited
from vidpipe.media.sample import render_sample_mp4
from vidpipe.metrics import Metrics, StageMetricsMiddleware, current, recording
from vidpipe.net.retry import RetryPolicy
from vidpipe.providers.http import request
from vidpipe.settings import Settings
from vidpipe.stage import Stage
from vidpipe.testing import FakeProvider, MemoryStorage
from vidpipe.usecases.fetch_video import DownloadPolicy, store_video


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def _client(statuses: list[int]) -> httpx.AsyncClient:
    answers = iter(statuses)

    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={})

    return httpx.AsyncClient(base_url="http://p.test", transport=httpx.MockTransport(answer))


async def test_provider_calls_are_counted_by_status_code_and_timed() -> None:
    metrics = Metrics("poller")
    async with _client([200, 429]) as client:
        with recording(metrics):
            await request(
                client, "GET", "/jobs/1", provider="azure-sora", action="poll", secrets=()
            )
            with pytest.raises(RateLimited):
                await request(
                    client, "GET", "/jobs/1", provider="azure-sora", action="poll", secrets=()
                )
    labels = {"stage": "poller", "provider": "azure-sora", "action": "poll"}
    assert value(metrics, "vidpipe_provider_calls_total", **labels, code="200") == 1
    assert value(metrics, "vidpipe_provider_calls_total", **labels, code="429") == 1
    assert value(metrics, "vidpipe_provider_call_duration_seconds_count", **labels) == 2


async def test_a_transport_failure_is_a_call_with_code_transport_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    metrics = Metrics("submitter")
    client = httpx.AsyncClient(base_url="http://p.test", transport=httpx.MockTransport(refuse))
    async with client:
        with recording(metrics), pytest.raises(ProviderUnavailable):
            await request(
                client, "POST", "/jobs", provider="openai-videos", action="create", secrets=()
            )
    labels = {"stage": "submitter", "provider": "openai-videos", "action": "create"}
    assert value(metrics, "vidpipe_provider_calls_total", **labels, code="transport_error") == 1


async def test_retries_in_place_are_counted_by_error_code_and_webhook_retries_are_not() -> None:
    metrics = Metrics("submitter")
    failures: list[Exception] = [RateLimited("slow down"), RateLimited("slow down")]

    async def call() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    async def no_sleep(_s: float) -> None:
        return None

    class WebhookDown(Exception):
        retryable = True

    webhook_failures = [WebhookDown()]

    async def webhook() -> str:
        if webhook_failures:
            raise webhook_failures.pop()
        return "sent"

    policy = RetryPolicy(attempts=4, sleep=no_sleep)
    with recording(metrics):
        assert await policy.call(call) == "ok"
        assert await policy.call(webhook) == "sent"
    assert (
        value(metrics, "vidpipe_provider_retries_total", stage="submitter", error="rate_limited")
        == 2
    )
    total = sum(
        s.value
        for family in metrics.registry.collect()
        if family.name == "vidpipe_provider_retries"
        for s in family.samples
        if s.name.endswith("_total")
    )
    assert total == 2


async def test_a_download_records_its_bytes_and_duration_and_a_failed_one_only_its_duration() -> (
    None
):
    video = render_sample_mp4(seconds=1.0)
    provider = FakeProvider(name="openai-videos", video=video)
    metrics = Metrics("fetcher")
    storage = MemoryStorage()
    with recording(metrics):
        stored = await store_video(
            provider,
            storage,
            job_id="j1",
            generation_id="g1",
            key="r1/0-g1.mp4",
            policy=DownloadPolicy(attempts=1),
        )
        failing = FakeProvider(name="openai-videos", download_errors=[NotFound("gone")])
        with pytest.raises(NotFound):
            await store_video(
                failing,
                storage,
                job_id="j2",
                generation_id="g2",
                key="r2/0-g2.mp4",
                policy=DownloadPolicy(attempts=1),
            )
    labels = {"stage": "fetcher", "provider": "openai-videos"}
    assert (
        value(metrics, "vidpipe_download_bytes_total", **labels) == stored.size_bytes == len(video)
    )
    assert (
        value(metrics, "vidpipe_download_duration_seconds_count", **labels, outcome="stored") == 1
    )
    assert (
        value(metrics, "vidpipe_download_duration_seconds_count", **labels, outcome="failed") == 1
    )


async def test_a_dead_letter_is_counted_by_reason_and_error_class() -> None:
    sent: list[DeadLetter] = []

    async def publish(letter: DeadLetter) -> None:
        sent.append(letter)

    handling = FailureHandling(
        stage="poller",
        publish_dead_letter=publish,
        publish_job_failed=None,
        backoff=RedeliveryBackoff(),
        health=StageHealth("poller"),
    )
    record = SimpleNamespace(
        topic="u.job.submitted",
        partition=0,
        offset=7,
        key=b"r1",
        value=b"{}",
        headers=[],
        timestamp=int(time.time() * 1000),
    )
    metrics = Metrics("poller")
    with recording(metrics):
        await handling.dead_letter(record, "unreadable", ValueError("x"), 1, poison=True)
        await handling.dead_letter(record, "gave up", KeyError("y"), 5, poison=False)
    assert len(sent) == 2
    labels = {"stage": "poller", "topic": "u.job.submitted"}
    assert (
        value(
            metrics,
            "vidpipe_dead_letters_total",
            **labels,
            reason="poison",
            error_type="ValueError",
        )
        == 1
    )
    assert (
        value(
            metrics,
            "vidpipe_dead_letters_total",
            **labels,
            reason="attempts_exhausted",
            error_type="KeyError",
        )
        == 1
    )


async def test_two_stages_in_one_process_count_into_their_own_registries() -> None:
    first, second = Metrics("fetcher"), Metrics("redownloader")

    async def as_stage(metrics: Metrics, size: int) -> None:
        with recording(metrics):
            await asyncio.sleep(0)  # both tasks interleave
            current().download("azure-sora", "stored", 0.1, size)

    await asyncio.gather(as_stage(first, 10), as_stage(second, 20))
    assert (
        value(first, "vidpipe_download_bytes_total", stage="fetcher", provider="azure-sora") == 10
    )
    assert (
        value(second, "vidpipe_download_bytes_total", stage="redownloader", provider="azure-sora")
        == 20
    )
    assert (
        value(first, "vidpipe_download_bytes_total", stage="redownloader", provider="azure-sora")
        == 0
    )


def test_a_status_no_request_has_any_more_drops_to_zero() -> None:
    metrics = Metrics("recorder")
    metrics.set_requests({"requested": 2, "running": 1})
    metrics.set_requests({"stored": 3})
    assert value(metrics, "vidpipe_requests", status="requested") == 0
    assert value(metrics, "vidpipe_requests", status="running") == 0
    assert value(metrics, "vidpipe_requests", status="stored") == 3


def test_lag_is_the_end_minus_the_committed_offset_and_timer_topics_sum_into_pending() -> None:
    from aiokafka.structs import TopicPartition

    a0, a1, t0 = (
        TopicPartition("u.a", 0),
        TopicPartition("u.a", 1),
        TopicPartition("u.timers.p.5s", 0),
    )
    lag = lag_of({"g": {a0: 5, a1: 9}, "g.timers": {t0: 1}}, {a0: 8, a1: 9, t0: 4})
    assert lag == {("g", "u.a", 0): 3, ("g", "u.a", 1): 0, ("g.timers", "u.timers.p.5s", 0): 3}
    metrics = Metrics("poller")
    metrics.set_lag(lag, {"u.timers.p.5s"})
    assert value(metrics, "vidpipe_consumer_lag", group="g", topic="u.a", partition="0") == 3
    assert value(metrics, "vidpipe_timers_pending", stage="poller") == 3


async def test_time_in_stage_runs_from_the_record_reaching_its_topic_to_the_handler_ending() -> (
    None
):
    metrics = Metrics("fetcher")
    record = SimpleNamespace(topic="u.job.succeeded", timestamp=int((time.time() - 2.0) * 1000))
    message = SimpleNamespace(raw_message=record)
    middleware = StageMetricsMiddleware.factory(metrics)(message, context=None)

    async def handler(_msg: Any) -> str:
        assert current() is metrics  # the stage's metrics are current while it handles
        return "done"

    assert await middleware.consume_scope(handler, message) == "done"  # type: ignore[arg-type]
    assert current() is not metrics
    labels = {"stage": "fetcher", "topic": "u.job.succeeded"}
    assert value(metrics, "vidpipe_stage_seconds_count", **labels) == 1
    assert 2.0 <= value(metrics, "vidpipe_stage_seconds_sum", **labels) < 30


async def test_two_stages_on_one_test_broker_each_record_into_their_own_registry(
    tmp_path: Path,
) -> None:
    # FastStream's TestKafkaBroker runs handlers in the publisher's task: what makes each
    # stage's metrics current is the stage's own middleware, not the task it runs in.
    settings = Settings(
        topic_prefix="u.",
        database_url=f"sqlite:///{tmp_path / 'two.db'}",
        storage_url=f"file://{tmp_path / 'videos'}",
        webhook_secret=None,
        metrics_port=None,
    )
    stages = [Stage(name, settings, bootstrap_servers="127.0.0.1:9") for name in ("a", "b")]
    for stage in stages:

        @stage.subscriber(f"u.in.{stage.name}")
        async def on_message(body: dict[str, Any]) -> None:
            current().provider_retry(str(body["error"]))

    first, second = stages
    async with TestKafkaBroker(first.broker) as a, TestKafkaBroker(second.broker) as b:
        await a.publish({"error": "rate_limited"}, "u.in.a")
        await b.publish({"error": "rate_limited"}, "u.in.b")
        await b.publish({"error": "rate_limited"}, "u.in.b")
    assert (
        value(first.domain, "vidpipe_provider_retries_total", stage="a", error="rate_limited") == 1
    )
    assert (
        value(second.domain, "vidpipe_provider_retries_total", stage="b", error="rate_limited") == 2
    )
    assert value(first.domain, "vidpipe_stage_seconds_count", stage="a", topic="u.in.a") == 1
    assert (
        value(second.domain, "vidpipe_provider_retries_total", stage="a", error="rate_limited") == 0
    )


async def test_the_recorder_observes_end_to_end_latency_once_per_stored_video(
    tmp_path: Path,
) -> None:
    engine = await open_engine(f"sqlite:///{tmp_path / 'r.db'}")
    await create_tables(engine)
    topics = Topics("u.")
    asked_at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    request = GenerationRequested(request_id="r1", prompt="a fox", occurred_at=asked_at)
    stored = VideoStored(
        event_id=derive_event_id("r1", "VideoStored", "g1", False),
        occurred_at=asked_at + timedelta(seconds=42),
        request_id="r1",
        provider="azure-sora",
        generation_id="g1",
        storage_url="file:///v/r1.mp4",
        size_bytes=10,
        sha256="0" * 64,
    )
    models: dict[str, type[Event]] = {
        topics.generation_requested: GenerationRequested,
        topics.video_stored: VideoStored,
    }
    deps = RecorderDeps(
        records=Records(engine),
        failures=FailureHandling(
            stage="recorder",
            publish_dead_letter=_never,
            publish_job_failed=None,
            backoff=RedeliveryBackoff(),
            health=StageHealth("recorder"),
        ),
        model_for_topic=models,
    )

    def rec(topic: str, event: Any, offset: int) -> Any:
        return SimpleNamespace(
            topic=topic,
            partition=0,
            offset=offset,
            key=b"r1",
            headers=[],
            value=event.model_dump_json().encode(),
            timestamp=int(time.time() * 1000),
        )

    metrics = Metrics("recorder", CollectorRegistry())
    try:
        with recording(metrics):
            await handle_batch([rec(topics.generation_requested, request, 0)], deps)
            await handle_batch([rec(topics.video_stored, stored, 1)], deps)
            await handle_batch([rec(topics.video_stored, stored, 1)], deps)  # a redelivery
    finally:
        await engine.dispose()
    labels = {"provider": "azure-sora", "placeholder": "false"}
    assert value(metrics, "vidpipe_end_to_end_seconds_count", **labels) == 1
    assert value(metrics, "vidpipe_end_to_end_seconds_sum", **labels) == 42


async def _never(_letter: DeadLetter) -> None:
    raise AssertionError("nothing is dead-lettered here")


async def test_the_gateway_counts_requests_by_route_template_and_serves_them(
    tmp_path: Path,
) -> None:
    settings = Settings(
        topic_prefix="u.",
        database_url=f"sqlite:///{tmp_path / 'g.db'}",
        storage_url=f"file://{tmp_path / 'videos'}",
        webhook_secret=None,
    )
    app = create_app(settings, bootstrap_servers="127.0.0.1:9")  # no lifespan: nothing opened
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v1/generations/order-42")).status_code == 401
        assert (await client.get("/v1/generations/order-43")).status_code == 401
        scraped = (await client.get("/metrics")).text
    metrics: Metrics = app.state.metrics
    route = {"route": "/v1/generations/{request_id}", "method": "GET"}
    assert value(metrics, "vidpipe_http_requests_total", **route, status="401") == 2
    assert value(metrics, "vidpipe_http_request_duration_seconds_count", **route) == 2
    assert 'route="/healthz"' in scraped
    assert "order-42" not in scraped  # the template, never the id

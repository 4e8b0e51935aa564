"""The domain metrics over HTTP: four stage processes on the real broker and PostgreSQL, each
with its own VIDPIPE_METRICS_PORT, one request driven to stored, every /metrics scraped.

The recording itself, edge by edge, is in tests/unit/test_metrics.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.e2e.conftest import MakePipeline
from tests.e2e.harness import Pipeline, make_request
from vidpipe.cli.processes import ManagedProcess, stage_argv

STAGES = ("submitter", "poller", "fetcher", "recorder")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _start_with_metrics(pipeline: Pipeline, name: str) -> int:
    """The stage as its own process, serving metrics on a port of its own."""
    port = _free_port()
    env = {**pipeline.stack.env, "VIDPIPE_METRICS_PORT": str(port)}
    process = ManagedProcess(
        name, stage_argv(name), env, pipeline.stack.logs_dir / f"{name}.log"
    ).start()
    pipeline.stack.processes[name] = process  # stopped with the pipeline
    return port


async def _scrape(client: httpx.AsyncClient, port: int) -> list[Sample]:
    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def _until(
    client: httpx.AsyncClient,
    port: int,
    check: Callable[[list[Sample]], bool],
    what: str,
    pipeline: Pipeline,
    timeout_s: float = 60.0,
) -> list[Sample]:
    """Scrape until `check` holds (the samplers run every VIDPIPE_METRICS_INTERVAL_S)."""
    deadline = time.monotonic() + timeout_s
    samples: list[Sample] = []
    while time.monotonic() < deadline:
        try:
            samples = await _scrape(client, port)
        except httpx.TransportError:
            samples = []  # the stage is still starting
        if samples and check(samples):
            return samples
        await asyncio.sleep(0.2)
    shown = "\n".join(f"{s.name}{s.labels} {s.value}" for s in samples if "vidpipe_" in s.name)
    raise AssertionError(f"{what}: not seen within {timeout_s}s\n{shown}\n{pipeline._logs()}")


async def test_one_request_moves_the_domain_series_of_every_stage(
    make_pipeline: MakePipeline,
) -> None:
    pipeline = await make_pipeline({"VIDPIPE_METRICS_INTERVAL_S": "0.5"})
    ports = {name: _start_with_metrics(pipeline, name) for name in STAGES}
    prefix = pipeline.settings.topic_prefix
    request = make_request(prefix, "metered", provider="azure-sora")
    await pipeline.publish(request)
    [view] = (await pipeline.wait_for([request.request_id])).values()
    assert view.status == "stored", view

    async with httpx.AsyncClient(timeout=5) as client:
        recorder = await _until(
            client,
            ports["recorder"],
            lambda s: (
                _total(s, "vidpipe_end_to_end_seconds_count", placeholder="false") == 1
                and _total(s, "vidpipe_requests", status="stored") == 1
            ),
            "the latency of the one stored video and the stored count",
            pipeline,
        )
        assert _total(recorder, "vidpipe_end_to_end_seconds_count", provider="azure-sora") == 1
        assert 0 < _total(recorder, "vidpipe_end_to_end_seconds_sum") < 120

        submitter = await _until(
            client,
            ports["submitter"],
            # The slot is freed once the submitter's slots group has read the job's end.
            lambda s: (
                _total(s, "vidpipe_quota_slots_limit", provider="azure-sora") == 2
                and _total(s, "vidpipe_quota_slots_in_use", provider="azure-sora") == 0
                and any(x.name == "vidpipe_quota_slots_in_use" for x in s)
            ),
            "the azure-sora quota, its slot free again",
            pipeline,
        )
        created = [
            s
            for s in submitter
            if s.name == "vidpipe_provider_calls_total" and s.labels["provider"] == "azure-sora"
        ]
        assert created and all(s.labels["code"].startswith("2") for s in created), created

        poller = await _scrape(client, ports["poller"])
        polled = _total(poller, "vidpipe_provider_calls_total", stage="poller", code="200")
        assert polled >= 1
        assert _total(poller, "vidpipe_timer_fire_delay_seconds_count", stage="poller") >= 1

        fetcher = await _scrape(client, ports["fetcher"])
        labels = {"stage": "fetcher", "provider": "azure-sora"}
        assert view.output_image_url is not None
        size = await asyncio.to_thread(
            os.path.getsize, view.output_image_url.removeprefix("file://")
        )
        assert size > 0
        assert _total(fetcher, "vidpipe_download_bytes_total", **labels) == size
        stored = _total(fetcher, "vidpipe_download_duration_seconds_count", outcome="stored")
        assert stored == 1
        assert _total(fetcher, "vidpipe_dead_letters_total") == 0

        for name, port in ports.items():
            samples = await _until(
                client,
                port,
                lambda s: (
                    any(x.name == "vidpipe_consumer_lag" for x in s)
                    and _total(s, "vidpipe_consumer_lag") == 0
                ),
                f"{name}: its groups caught up (consumer lag 0)",
                pipeline,
            )
            # Every stage timed what it handled, and FastStream's own series are beside ours.
            assert _total(samples, "vidpipe_stage_seconds_count", stage=name) >= 1, name
            assert _total(samples, "faststream_received_processed_messages_total") >= 1, name
            groups = {s.labels["group"] for s in samples if s.name == "vidpipe_consumer_lag"}
            assert pipeline.settings.group_id(name) in groups, (name, groups)

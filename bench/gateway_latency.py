"""`POST /v1/generations` through the gateway, beside a plain Kafka publish of the same request.

The gateway runs as its own process (`python -m vidpipe gateway`, uvicorn, one worker, exactly
what `vidpipe up` and compose run) on a throwaway local Kafka and a fresh SQLite file, its rate
limit lifted. One client (this process) sends requests one after the other (closed loop, so each
figure is one call's own latency, not queueing) and, separately, keeps `concurrency` calls in
flight for throughput:

- gateway: an authenticated `POST /v1/generations` answered `202`: key check, body validation,
  the idempotency row, the publish to `generation.requested` acknowledged by the broker;
- baseline: `RequestPublisher.publish` of the same `GenerationRequested` to the same broker
  (acks=all, idempotent, awaited): what an upstream system that speaks Kafka does instead.

Figures: latency p50/p95/p99 in ms and calls/s, median (min-max) of the repeats, the cases
interleaved per repeat so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench import BenchResult
from bench.pipeline import Broker, fmt_range, percentile
from vidpipe.bus.admin import ensure_all_topics
from vidpipe.bus.upstream import RequestPublisher, new_request
from vidpipe.dev.processes import free_ports
from vidpipe.settings import Settings

__all__ = ["run"]

KEY = "bench-gateway-key"
CASES = ("gateway POST /v1/generations", "Kafka publish (RequestPublisher)")


def _gateway(port: int, bootstrap: str, prefix: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VIDPIPE_", "OTEL_"))},
        "VIDPIPE_KAFKA_BOOTSTRAP": bootstrap,
        "VIDPIPE_TOPIC_PREFIX": prefix,
        "VIDPIPE_DATABASE_URL": f"sqlite:///{workdir / 'gateway.db'}",
        "VIDPIPE_STATE_DIR": str(workdir),
        "VIDPIPE_GATEWAY_API_KEYS": f"bench:{hashlib.sha256(KEY.encode()).hexdigest()}",
        # The per-key token bucket would otherwise be what is measured.
        "VIDPIPE_GATEWAY_RATE_PER_MINUTE": "100000000",
        "VIDPIPE_GATEWAY_RATE_BURST": "1000000",
        "VIDPIPE_LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "vidpipe", "gateway", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited at start ({proc.returncode})")
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the gateway did not answer within 60 s")


def _body(request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "prompt": "vidpipe gateway benchmark", "seconds": 4}


async def _gateway_calls(base: str, count: int, concurrency: int) -> tuple[list[float], float]:
    """`count` sequential POSTs (their latencies, s), then calls/s with `concurrency` in flight."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:

        async def post() -> float:
            began = time.perf_counter()
            answer = await client.post("/v1/generations", json=_body(f"gw-{uuid.uuid4().hex}"))
            took = time.perf_counter() - began
            if answer.status_code != 202:
                raise RuntimeError(f"the gateway answered {answer.status_code}: {answer.text}")
            return took

        for _ in range(10):  # warm: connections, the first publish's metadata
            await post()
        latencies = [await post() for _ in range(count)]
        began = time.perf_counter()
        per_worker = max(1, count // concurrency)
        await asyncio.gather(*(_repeat(post, per_worker) for _ in range(concurrency)))
        rate = per_worker * concurrency / (time.perf_counter() - began)
    return latencies, rate


async def _kafka_calls(
    bootstrap: str, prefix: str, count: int, concurrency: int
) -> tuple[list[float], float]:
    async with RequestPublisher(bootstrap, topic_prefix=prefix) as publisher:

        async def publish() -> float:
            request = new_request("vidpipe gateway benchmark", request_id=f"k-{uuid.uuid4().hex}")
            began = time.perf_counter()
            await publisher.publish(request)
            return time.perf_counter() - began

        for _ in range(10):
            await publish()
        latencies = [await publish() for _ in range(count)]
        began = time.perf_counter()
        per_worker = max(1, count // concurrency)
        await asyncio.gather(*(_repeat(publish, per_worker) for _ in range(concurrency)))
        rate = per_worker * concurrency / (time.perf_counter() - began)
    return latencies, rate


async def _repeat(call: Any, times: int) -> None:
    for _ in range(times):
        await call()


def run(quick: bool = False) -> BenchResult:
    count, repeats, concurrency = (100, 2, 8) if quick else (400, 3, 16)
    samples: list[dict[str, Any]] = []
    figures: dict[str, dict[str, list[float]]] = {
        case: {"p50": [], "p95": [], "p99": [], "rate": []} for case in CASES
    }
    with Broker() as broker, tempfile.TemporaryDirectory(prefix="vidpipe-bench-gw-") as tmp:
        for repeat in range(repeats):
            prefix = f"benchgw{uuid.uuid4().hex[:8]}."
            settings = Settings(topic_prefix=prefix)
            asyncio.run(ensure_all_topics(settings, broker.bootstrap_servers))
            workdir = Path(tmp) / f"r{repeat}"
            workdir.mkdir()
            (port,) = free_ports(1)
            proc = _gateway(port, broker.bootstrap_servers, prefix, workdir)
            try:
                measured = {
                    CASES[0]: asyncio.run(
                        _gateway_calls(f"http://127.0.0.1:{port}", count, concurrency)
                    ),
                    CASES[1]: asyncio.run(
                        _kafka_calls(broker.bootstrap_servers, prefix, count, concurrency)
                    ),
                }
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            for case, (latencies, rate) in measured.items():
                sample: dict[str, Any] = {
                    "case": case,
                    "repeat": repeat,
                    "calls": len(latencies),
                    "p50_s": percentile(latencies, 50),
                    "p95_s": percentile(latencies, 95),
                    "p99_s": percentile(latencies, 99),
                    "calls_per_s": rate,
                }
                samples.append(sample)
                for q in ("p50", "p95", "p99"):
                    figures[case][q].append(sample[f"{q}_s"])
                figures[case]["rate"].append(rate)
    baseline = figures[CASES[1]]
    rows = []
    for case in CASES:
        f = figures[case]
        rows.append(
            [
                case,
                fmt_range(f["p50"], 1, 1000),
                fmt_range(f["p95"], 1, 1000),
                fmt_range(f["p99"], 1, 1000),
                fmt_range(f["rate"]),
                f"{statistics.median(f['p50']) / statistics.median(baseline['p50']):.2f}",
            ]
        )
    return BenchResult(
        name="gateway_latency",
        title="Gateway: POST /v1/generations against a plain Kafka publish of the same request",
        columns=[
            "call",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            f"calls/s ({concurrency} in flight)",
            "p50 x Kafka publish",
        ],
        rows=rows,
        samples=samples,
        details={"calls": count, "repeats": repeats, "concurrency": concurrency},
        notes=[
            f"{count} calls one after the other per repeat (after 10 warm-up calls), then"
            f" {concurrency} in flight; median (min-max) of {repeats} repeats, each with a fresh"
            " gateway process, topics and SQLite file on one local Kafka",
            "the gateway's call includes the idempotency row in SQLite and the broker's"
            " acknowledgement of the publish (acks=all), so it can never be below the baseline",
            f"script: {Path(__file__).name}; `python -m bench.run --only gateway_latency`",
        ],
    )

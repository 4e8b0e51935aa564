"""How many requests per second the provider emulator answers, beside a bare HTTP server.

The pipeline benchmarks drive the emulator hard; if it were the slowest part, they would measure
it instead of vidpipe. Each server runs in its own process (uvicorn, one worker, as `vidpipe up`
runs the emulator), and one client process keeps `concurrency` requests in flight with httpx
for `seconds`:

- bare route (baseline): a Starlette app in uvicorn answering a small JSON body: the floor of
  uvicorn + Starlette + httpx on this machine;
- Azure status: `GET .../jobs/{id}` of an existing job, the call the poller makes most;
- Azure create: `POST .../jobs`, the submitter's call (idempotency and quotas off, so every
  call makes a job);
- video download: `GET .../{generation}/content/video` of a 5 s sample (the fetcher's call).

Figures are requests/s, median (min-max) of the repeats, each in a fresh server process.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from bench import BenchResult
from vidpipe.dev.processes import free_ports

__all__ = ["run"]

KEY = "bench-emulator-key"
_BARE_APP = textwrap.dedent(
    """
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def job(request):
        return JSONResponse({"id": "task_1", "object": "video.generation.job", "status": "queued"})

    app = Starlette(routes=[Route("/job", job)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)
    """
)
_AZURE = "/openai/v1/video/generations"


def _start(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:3]} exited with {proc.returncode}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{argv[:3]} did not answer within 30 s")


def _bare_server(port: int) -> subprocess.Popen[bytes]:
    return _start([sys.executable, "-c", _BARE_APP, str(port)], dict(os.environ), port)


def _emulator(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VIDPIPE_EMULATOR_API_KEY": KEY}
    argv = [sys.executable, "-m", "vidpipe", "emulator", "--port", str(port)]
    proc = _start(argv, env, port)
    # Every create makes a job: no quota, no idempotency replay, jobs done at once.
    changes = {"max_concurrent_jobs": None, "idempotency": False, "time_scale": 1000.0}
    response = httpx.post(
        f"http://127.0.0.1:{port}/_emulator/config", json=changes, headers={"api-key": KEY}
    )
    response.raise_for_status()
    return proc


async def _load(
    base: str, method: str, path: str, body: dict[str, Any] | None, *, seconds: float, workers: int
) -> float:
    """Requests/s with `workers` requests in flight for `seconds`; every answer must be 2xx."""
    done = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(
        base_url=base, headers={"api-key": KEY}, params={"api-version": "preview"}, limits=limits
    ) as client:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop:
                response = await client.request(method, path, json=body)
                await response.aread()
                response.raise_for_status()
                done += 1

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return done / (time.monotonic() - began)


def _prepare_job(base: str) -> tuple[str, str]:
    """One finished Azure job: its id and its generation's id."""
    headers = {"api-key": KEY}
    params = {"api-version": "preview"}
    job = httpx.post(
        f"{base}{_AZURE}/jobs",
        json={"model": "sora", "prompt": "bench", "width": 480, "height": 480, "n_seconds": 5},
        headers=headers,
        params=params,
    ).json()
    deadline = time.monotonic() + 30
    while True:
        seen = httpx.get(f"{base}{_AZURE}/jobs/{job['id']}", headers=headers, params=params).json()
        if seen["status"] == "succeeded":
            return str(job["id"]), str(seen["generations"][0]["id"])
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bench job never finished: {seen['status']}")
        time.sleep(0.05)


def _measure(case: str, *, seconds: float, workers: int) -> float:
    (port,) = free_ports(1)
    base = f"http://127.0.0.1:{port}"
    proc = _bare_server(port) if case == "bare route" else _emulator(port)
    try:
        if case == "bare route":
            return asyncio.run(_load(base, "GET", "/job", None, seconds=seconds, workers=workers))
        job_id, generation_id = _prepare_job(base)
        if case == "Azure status":
            path, method, body = f"{_AZURE}/jobs/{job_id}", "GET", None
        elif case == "Azure create":
            body = {"model": "sora", "prompt": "bench", "width": 480, "height": 480}
            path, method = f"{_AZURE}/jobs", "POST"
        else:
            path, method, body = f"{_AZURE}/{generation_id}/content/video", "GET", None
        return asyncio.run(_load(base, method, path, body, seconds=seconds, workers=workers))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


CASES = ("bare route", "Azure status", "Azure create", "video download (5 s MP4)")


def run(quick: bool = False) -> BenchResult:
    seconds, repeats, workers = (3.0, 2, 16) if quick else (8.0, 3, 32)
    samples: list[dict[str, Any]] = []
    rates: dict[str, list[float]] = {case: [] for case in CASES}
    # Interleaved, so drift on a shared machine hits every case alike.
    for repeat in range(repeats):
        for case in CASES:
            rate = _measure(case, seconds=seconds, workers=workers)
            rates[case].append(rate)
            samples.append({"case": case, "repeat": repeat, "requests_per_s": rate})
    bare = statistics.median(rates["bare route"])
    rows = []
    for case in CASES:
        ordered = sorted(rates[case])
        median = statistics.median(ordered)
        rows.append(
            [
                case,
                f"{median:.0f} ({ordered[0]:.0f}-{ordered[-1]:.0f})",
                f"{median / bare:.2f}",
            ]
        )
    return BenchResult(
        name="emulator_capacity",
        title="Emulator capacity: requests/s answered, against a bare uvicorn route",
        columns=["call", "requests/s, median (min-max)", "x bare route"],
        rows=rows,
        samples=samples,
        details={"seconds": seconds, "repeats": repeats, "concurrency": workers},
        notes=[
            f"{workers} requests in flight from one httpx client process, {seconds:g} s per run,"
            f" median of {repeats} runs, each against a fresh server process",
            "the bare route is a Starlette JSON endpoint in the same uvicorn: the floor of the"
            " HTTP stack, not of the emulator's logic; one client process is itself near its"
            " limit at these rates, so read the ratio",
            f"script: {Path(__file__).name}; `python -m bench.run --only emulator_capacity`",
        ],
    )

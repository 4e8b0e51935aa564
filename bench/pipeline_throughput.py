"""Sustained throughput: N requests published at once, requests/s until all are stored, each
stage's CPU per request and consumer lag over time; then how the rate scales with replicas of
the stage that limits it and with partitions.

Each run gets a fresh stack (bench.pipeline.BenchStack: the broker shared, the emulator and
every core stage as its own process, fresh topics and SQLite file), is warmed up, then N
requests are published at once (one batching producer). The rate is N / (time the last one is
seen stored in the records database - time the first is published); the database is polled
every 0.25 s (up to 1 s for big runs), so a run carries up to that much extra. While it runs,
every process's CPU (utime + stime from /proc/PID/stat; replicas summed into their stage;
"kafka" is the broker's JVM, "bench" this process: the publisher and the samplers) and every
stage group's lag (end offsets - committed offsets on the topics it commits on) are sampled
about once a second.

Baseline (the floor): the same N requests, published the same way, through the raw loops of
`bench.stage_alone` chained into a pipeline on the same broker and emulator (bench.raw_pipeline):
what a minimal Python pipeline on these libraries carries on this machine, with its CPU per
request. Beside it, the broker alone: the same N messages (600 B) through 6 raw aiokafka
consume -> produce relays in a row (as many Kafka hops as a request's path), messages/s.

Scaling (issue 9 item 3): the limiting stage is the one with the largest mean lag in the first
run (its input stays backed up; ties go to CPU per request). It is run again with 2 replicas
(quick), or at 6 partitions with 1, 2 and 4 replicas (full); extra replicas are more
`python -m vidpipe run NAME` processes in the same consumer group. A run that has not stored
everything after TIMEOUT_S reports the rate so far, marked partial.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from bench import BenchResult
from bench.pipeline import (
    HOPS,
    BenchStack,
    Broker,
    Sampler,
    StackConfig,
    fmt_range,
    publish_requests,
    raw_relay_throughput,
    running_stack,
    stop_on_sigterm,
    wait_stored,
    warm_up,
)
from bench.raw_pipeline import raw_pipeline_throughput

__all__ = ["limiting_stage", "run", "thin_series"]

ID_PREFIX = "tp-"
# At most this many lag samples per run in the JSON (evenly thinned), so long runs stay small.
SERIES_POINTS = 60
# The variant of the producers' linger the run compares with the default (0 ms).
LINGER_MS = 5
# A run stops waiting after this long and reports the rate so far, marked partial (at today's
# ~10 requests/s, 10,000 requests would take longer than the whole full run may).
TIMEOUT_S = 600.0
PROCESS_ORDER = ("submitter", "poller", "fetcher", "recorder", "emulator", "kafka", "bench")


def limiting_stage(
    mean_lag: dict[str, float], cpu_ms: dict[str, float], stages: tuple[str, ...]
) -> str:
    """The stage whose input stayed backed up longest (mean lag over the run: by Little's law
    the backlog a stage holds is its rate times the wait in front of it), ties broken by CPU
    per request."""
    return max(stages, key=lambda s: (mean_lag.get(s, 0.0), cpu_ms.get(s, 0.0)))


def thin_series(series: list[dict[str, Any]], points: int = SERIES_POINTS) -> list[dict[str, Any]]:
    """At most `points` samples, evenly spaced, the last always kept (it shows the drain)."""
    if len(series) <= points:
        return series
    step = len(series) / points
    kept = [series[int(i * step)] for i in range(points - 1)]
    return [*kept, series[-1]]


async def _drive(stack: BenchStack, count: int, timeout_s: float) -> dict[str, Any]:
    await warm_up(stack)
    ids = [f"{ID_PREFIX}{i:06d}" for i in range(count)]
    complete = True
    async with Sampler(stack) as sampler:
        began = time.monotonic()
        await publish_requests(stack, ids)
        published_s = time.monotonic() - began
        try:
            # Coarser polling for big runs: each poll scans the events table.
            poll_s = min(1.0, max(0.25, count / 4000))
            stored_at = await wait_stored(stack, ID_PREFIX, count, timeout_s, poll_s)
            stored = count
        except TimeoutError:
            # Too slow to finish in the time allowed: the rate so far, flagged as partial.
            complete = False
            stored_at = time.monotonic()
            stored = (await asyncio.to_thread(stack.count_stored, ID_PREFIX))[0]
    seconds = stored_at - began
    cpu_ms = {name: used * 1000 / max(1, stored) for name, used in sampler.cpu_used().items()}
    return {
        "requests": count,
        "stored": stored,
        "complete": complete,
        "seconds": seconds,
        "publish_seconds": published_s,
        "requests_per_s": stored / seconds,
        "cpu_ms_per_request": cpu_ms,
        "max_lag": sampler.max_lag(),
        "mean_lag": sampler.mean_lag(),
        "lag_series": thin_series(sampler.lag_series()),
    }


def _one(broker: Broker, config: StackConfig, count: int) -> dict[str, Any]:
    with running_stack(broker, config) as stack:
        measured = asyncio.run(_drive(stack, count, TIMEOUT_S))
    measured["raw_relay_msgs_per_s"] = asyncio.run(
        raw_relay_throughput(broker.bootstrap_servers, count)
    )
    # The same requests through the raw loops chained, on the same partitions (bench.raw_pipeline).
    raw = raw_pipeline_throughput(broker, config, count, TIMEOUT_S)
    measured["raw_pipeline_requests_per_s"] = raw["requests_per_s"]
    measured["raw_pipeline_cpu_ms_per_request"] = raw["cpu_ms"]
    measured["stack"] = config.describe()
    return measured


def _setup(config: StackConfig) -> str:
    extra = {s: n for s, n in config.replicas.items() if n != 1}
    replicas = ", ".join(f"{n} {s}" for s, n in extra.items()) or "1 of each stage"
    settings = "".join(f", {k.removeprefix('VIDPIPE_').lower()}={v}" for k, v in config.env.items())
    return f"{config.partitions} partitions, {replicas}{settings}"


def _row(setup: str, runs: list[dict[str, Any]]) -> list[str]:
    rates = [r["requests_per_s"] for r in runs]
    raws = [r["raw_relay_msgs_per_s"] for r in runs]
    floors = [r["raw_pipeline_requests_per_s"] for r in runs]
    ratio = statistics.median(rates) / statistics.median(floors)
    floor_cpu = statistics.median(sum(r["raw_pipeline_cpu_ms_per_request"].values()) for r in runs)
    cpu = {
        name: sorted(r["cpu_ms_per_request"].get(name, 0.0) for r in runs)[len(runs) // 2]
        for name in PROCESS_ORDER
    }
    lag = {
        stage: max(r["max_lag"].get(stage, 0) for r in runs)
        for stage in ("submitter", "poller", "fetcher", "recorder")
    }
    partial = [f"{r['stored']} of {r['requests']}" for r in runs if not r["complete"]]
    return [
        setup,
        str(runs[0]["requests"]) + (f" (partial: {', '.join(partial)} stored)" if partial else ""),
        fmt_range(rates, 1),
        fmt_range(floors, 1),
        f"{ratio:.2f}x",
        fmt_range(raws, 0),
        " / ".join(f"{cpu[name]:.0f}" for name in PROCESS_ORDER),
        f"{sum(cpu.values()):.0f} (raw pipeline {floor_cpu:.0f})",
        " / ".join(str(lag[s]) for s in lag),
    ]


def run(quick: bool = False) -> BenchResult:
    sizes = [300] if quick else [1000, 10000]
    repeats = {300: 1, 1000: 2, 10000: 1}
    scaling_count = 300 if quick else 1000
    base = StackConfig()
    samples: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    with stop_on_sigterm(), Broker() as broker:
        first: dict[str, Any] | None = None
        for count in sizes:
            runs = [_one(broker, base, count) for _ in range(repeats[count])]
            first = first or runs[0]
            samples += [{"case": "sustained", **r} for r in runs]
            rows.append(_row(_setup(base), runs))
        assert first is not None
        limiting = limiting_stage(first["mean_lag"], first["cpu_ms_per_request"], base.stages)
        # The producers' linger (VIDPIPE_KAFKA_LINGER_MS), against the default in the same run.
        lingering = StackConfig(env={"VIDPIPE_KAFKA_LINGER_MS": str(LINGER_MS)})
        if quick:
            scaling = [lingering, StackConfig(partitions=3, replicas={limiting: 2})]
        else:
            scaling = [
                lingering,
                StackConfig(partitions=6),
                StackConfig(partitions=6, replicas={limiting: 2}),
                StackConfig(partitions=6, replicas={limiting: 4}),
            ]
        for config in scaling:
            measured = _one(broker, config, scaling_count)
            samples.append({"case": "scaling", "limiting_stage": limiting, **measured})
            rows.append(_row(_setup(config), [measured]))
    return BenchResult(
        name="pipeline_throughput",
        title="Sustained throughput: requests published at once until all stored",
        columns=[
            "setup",
            "requests",
            "requests/s",
            "raw pipeline requests/s",
            "x raw pipeline",
            f"raw relay x{HOPS} msg/s",
            "CPU ms/request (" + " / ".join(PROCESS_ORDER) + ")",
            "CPU ms/request total",
            "max lag (submitter / poller / fetcher / recorder)",
        ],
        rows=rows,
        samples=samples,
        details={
            "sizes": sizes,
            "repeats": {str(k): v for k, v in repeats.items() if k in sizes},
            "scaling_requests": scaling_count,
            "limiting_stage": limiting,
            "stack": base.describe(),
        },
        notes=[
            "each run: a fresh stack (emulator + one process per stage, stage logs at"
            f" {base.log_level} to files, a fresh SQLite file), 5 warm-up requests, then every"
            " request published at once; requests/s = N / (publish start -> last one stored),"
            " median (min-max) where repeated",
            "CPU: utime + stime over the run from /proc/PID/stat, divided by N; kafka = the"
            " broker's JVM, bench = the publisher and samplers; total includes both",
            "max lag: peak of (end - committed offsets) on each stage group's topics, sampled"
            " every second (the series is in the JSON)",
            "raw pipeline (the baseline): the same requests, published the same way, through"
            " the four raw loops of stage_alone chained (create, status GET, download + fsync,"
            " INSERT; no validation, ledger, dedupe, projection, logs or traces), each its own"
            " process on the same broker and emulator, same partitions; x raw pipeline ="
            " requests/s over it; its CPU ms/request in brackets (bench.raw_pipeline)",
            f"raw relay: the same number of 600 B messages through {HOPS} raw aiokafka"
            " consume -> produce relays on the same broker, in one process (the broker alone)",
            f"scaling: the limiting stage, {limiting} (largest mean lag in the first run: "
            + " / ".join(f"{s} {first['mean_lag'].get(s, 0):.0f}" for s in base.stages)
            + "), given extra replicas (more processes in its consumer group)",
            f"linger: every stage's producer gathers records for {LINGER_MS} ms"
            " (VIDPIPE_KAFKA_LINGER_MS) before a produce request, against the default 0",
            "target (issue 9): >= 150 requests/s sustained on 2 cores with all stages running",
            f"script: {Path(__file__).name}; `python -m bench.run --only pipeline_throughput`",
        ],
    )

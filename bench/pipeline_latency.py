"""End-to-end latency at fixed arrival rates, where it goes per hop, against raw Kafka hops.

For each rate (full: 5, 20, 50, 100, 200 requests/s for 30 s; quick: 5 and 20 for 10 s) a fresh
stack (bench.pipeline.BenchStack: broker shared, emulator and every core stage as its own
process, fresh topics and SQLite file) is warmed up, then requests are published open loop on an
even schedule. Latency is publish -> VideoStored recorded in the records database (what a user
waits to see a video stored), read back from the `events` table with the per-hop split
(bench.pipeline.hop_split). The emulator finishes every job at once and hints the next poll at
its 10 ms floor, so what is left is the pipeline's own time:

    pipeline overhead = latency - provider job time (0 here) - poll wait, where
    poll wait = VIDPIPE_POLL_FIRST_S (the first check's delay) + (status checks per job - 1)
                x the emulator's 10 ms hint, capped at that request's own poll hop.

Baseline: one raw aiokafka produce -> consume hop on the same broker at the same rate, measured
just before the stack starts, times the 6 Kafka hops of a request's path (bench.pipeline.HOPS).
Rates are run in increasing order; when one is saturated (not every request stored within the
drain time) the higher ones are not run, and the table says so.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench import BenchResult
from bench.pipeline import (
    EMULATOR_HINT_S,
    HOP_NAMES,
    HOPS,
    BenchStack,
    Broker,
    StackConfig,
    percentile,
    pipeline_overhead,
    publish_requests,
    raw_hop_latency,
    read_hops,
    running_stack,
    send_schedule,
    stop_on_sigterm,
    summarize,
    wait_stored,
    warm_up,
)

__all__ = ["run"]

ID_PREFIX = "lat-"
# The provider's own job time: every emulated phase is 0 s (bench.pipeline.EMULATOR_CONFIG).
PROVIDER_S = 0.0


def _status_checks(stats: dict[str, int], before: dict[str, int]) -> tuple[int, int]:
    jobs = stats.get("openai.jobs_created", 0) - before.get("openai.jobs_created", 0)
    checks = stats.get("openai.status_requests", 0) - before.get("openai.status_requests", 0)
    return jobs, checks


async def _drive(stack: BenchStack, rate: float, seconds: float, drain_s: float) -> dict[str, Any]:
    await warm_up(stack)
    before = await asyncio.to_thread(stack.emulator_stats)
    schedule = send_schedule(rate, seconds)
    ids = [f"{ID_PREFIX}{i:06d}" for i in range(len(schedule))]
    began = time.monotonic()
    published = await publish_requests(stack, ids, schedule)
    publish_s = time.monotonic() - began
    saturated = False
    try:
        await wait_stored(stack, ID_PREFIX, len(ids), timeout_s=drain_s)
    except TimeoutError:
        saturated = True
    after = await asyncio.to_thread(stack.emulator_stats)
    splits = await asyncio.to_thread(read_hops, stack, published, ID_PREFIX)
    jobs, checks = _status_checks(after, before)
    checks_per_job = checks / jobs if jobs else 1.0
    poll_wait_s = stack.config.poll_interval_s + max(0.0, checks_per_job - 1) * EMULATOR_HINT_S
    overheads = [pipeline_overhead(s, poll_wait_s, PROVIDER_S) for s in splits.values()]
    stamps = sorted(published.values())
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": len(ids),
        "stored": len(splits),
        "saturated": saturated,
        "offered_rate": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0,
        "publish_seconds": publish_s,
        "status_checks_per_job": checks_per_job,
        "poll_wait_s": poll_wait_s,
        "latency_s": summarize([s["total"] for s in splits.values()]) if splits else None,
        "overhead_s": summarize(overheads) if overheads else None,
        "hops_p50_s": {hop: percentile([s[hop] for s in splits.values()], 50) for hop in HOP_NAMES}
        if splits
        else None,
        "hops_p99_s": {hop: percentile([s[hop] for s in splits.values()], 99) for hop in HOP_NAMES}
        if splits
        else None,
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def _triple(summary: dict[str, float] | None) -> str:
    if summary is None:
        return "-"
    return " / ".join(_ms(summary[q]) for q in ("p50", "p95", "p99"))


def run(quick: bool = False) -> BenchResult:
    rates = [5.0, 20.0] if quick else [5.0, 20.0, 50.0, 100.0, 200.0]
    seconds = 10.0 if quick else 30.0
    raw_seconds = 3.0 if quick else 5.0
    drain_s = 30.0 if quick else 60.0
    config = StackConfig()
    samples: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    notes: list[str] = []
    with stop_on_sigterm(), Broker() as broker:
        for rate in rates:
            raw = asyncio.run(raw_hop_latency(broker.bootstrap_servers, rate, raw_seconds))
            raw_summary = summarize(raw)
            with running_stack(broker, config) as stack:
                measured = asyncio.run(_drive(stack, rate, seconds, drain_s))
            measured["raw_hop_s"] = raw_summary
            measured["raw_hop_samples"] = len(raw)
            samples.append(measured)
            hops = measured["hops_p50_s"]
            rows.append(
                [
                    f"{rate:g}",
                    f"{measured['stored']}/{measured['sent']}",
                    _triple(measured["latency_s"]),
                    _triple(measured["overhead_s"]),
                    " / ".join(_ms(hops[h]) for h in HOP_NAMES) if hops else "-",
                    f"{_ms(raw_summary['p50'] * HOPS)} / {_ms(raw_summary['p99'] * HOPS)}",
                    f"{measured['status_checks_per_job']:.2f}",
                ]
            )
            if measured["saturated"]:
                skipped = [f"{r:g}" for r in rates if r > rate]
                notes.append(
                    f"{rate:g} requests/s saturated the pipeline: {measured['stored']} of"
                    f" {measured['sent']} stored within {drain_s:g} s of the last publish;"
                    " percentiles are of the stored ones only"
                    + (f"; not run: {', '.join(skipped)} requests/s" if skipped else "")
                )
                break
    notes += [
        f"each rate: a fresh stack (emulator + {', '.join(config.stages)}, one process each,"
        f" stage logs at {config.log_level} to files, a fresh SQLite file), 5 warm-up requests,"
        f" then requests published open loop for {seconds:g} s; one run per rate, percentiles"
        " over its requests",
        "latency: publish -> VideoStored recorded (records DB); per hop from the events table:"
        " submit = publish -> JobSubmitted, poll = -> JobSucceeded, fetch = -> VideoStored,"
        " record = -> recorded_at (occurred_at stamps of each stage, recorded_at of the recorder)",
        f"pipeline overhead = latency - provider job time (0: jobs finish at once) - poll wait"
        f" (VIDPIPE_POLL_FIRST_S={config.poll_interval_s:g} s first check + 10 ms hint per"
        " further status check, capped at the request's own poll hop)",
        f"baseline: one raw aiokafka produce -> consume hop at the same rate for {raw_seconds:g} s"
        f" on the same broker, p50 / p99 x {HOPS} hops",
        "target (issue 9): overhead p50 < 100 ms, p99 < 500 ms at 50 requests/s",
        f"script: {Path(__file__).name}; `python -m bench.run --only pipeline_latency`",
    ]
    return BenchResult(
        name="pipeline_latency",
        title="Pipeline latency at fixed arrival rates, against raw Kafka hops",
        columns=[
            "rate req/s",
            "stored/sent",
            "latency p50 / p95 / p99 ms",
            "pipeline overhead p50 / p95 / p99 ms",
            "per hop p50 ms (submit / poll / fetch / record)",
            f"raw hop x{HOPS} p50 / p99 ms",
            "status checks/job",
        ],
        rows=rows,
        samples=samples,
        details={
            "rates": rates,
            "seconds": seconds,
            "drain_s": drain_s,
            "hops": HOPS,
            "stack": config.describe(),
        },
        notes=notes,
    )

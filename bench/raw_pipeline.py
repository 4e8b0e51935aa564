"""The floor under the sustained-throughput figure: the four raw loops of `bench.stage_alone`
chained into a pipeline, on the same broker, the same emulator and the same two cores.

Each raw loop is its own process (`python -m bench.stage_alone raw KIND`): plain aiokafka
consume -> the stage's own I/O -> produce -> commit, with no validation, no ledger, no dedupe,
no projection, no logging, no tracing. Chained, they carry a request the way vidpipe does:

    generation.requested -> raw submitter (Azure create at the emulator) -> job.submitted
    -> raw poller (one status GET; jobs finish at once) -> job.succeeded
    -> raw fetcher (download, sha256, fsync, rename) -> video.stored
    every public topic -> raw recorder (one INSERT per event, one commit per batch, SQLite)

N requests are published at once, exactly as `pipeline_throughput` publishes them, and the
clock stops when the raw recorder has the N-th request's VideoStored row. That rate is what the
machine gives a minimal Python pipeline on these libraries: vidpipe's rate divided by it is what
its own guarantees and wiring cost, and a target above it cannot be met here by any
implementation of the same shape. It is not a pipeline anyone should run: a crash loses
nothing only because the loops commit after their sends, and a job still running is dropped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from bench.pipeline import (
    BenchStack,
    Broker,
    Sampler,
    StackConfig,
    publish_requests,
    running_stack,
)
from bench.stage_alone import raw_process

__all__ = ["RAW_KINDS", "raw_pipeline_throughput"]

#: The raw loops, in path order; the recorder last, so it has joined before anything else.
RAW_KINDS = ("recorder", "fetcher", "poller", "submitter")
ID_PREFIX = "raw-"
WARM_UP = 5


def _count_stored(stack: BenchStack, id_prefix: str) -> int:
    """Requests with ids starting `id_prefix` whose VideoStored the raw recorder holds."""
    rows = stack._query(  # the stack's own read-only look at its SQLite file
        "SELECT COUNT(DISTINCT request_id) FROM raw_events"
        " WHERE event_type = 'VideoStored' AND request_id LIKE ?",
        (id_prefix + "%",),
    )
    return int(rows[0][0]) if rows else 0


async def _wait_stored(stack: BenchStack, id_prefix: str, count: int, timeout_s: float) -> float:
    # Polled as pipeline_throughput polls vidpipe's records, so neither gains on the other.
    poll_s = min(1.0, max(0.25, count / 4000))
    deadline = time.monotonic() + timeout_s
    stored = 0
    while time.monotonic() < deadline:
        stored = await asyncio.to_thread(_count_stored, stack, id_prefix)
        if stored >= count:
            return time.monotonic()
        stack.check_alive()
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"raw pipeline: only {stored} of {count} stored after {timeout_s:.0f} s")


async def _drive(stack: BenchStack, count: int, timeout_s: float) -> dict[str, Any]:
    # Warm-up: every loop joined its group and carried a few requests end to end.
    await publish_requests(stack, [f"{ID_PREFIX}warm-{i}" for i in range(WARM_UP)])
    await _wait_stored(stack, f"{ID_PREFIX}warm-", WARM_UP, 120.0)
    ids = [f"{ID_PREFIX}t-{i:06d}" for i in range(count)]
    async with Sampler(stack) as sampler:
        began = time.monotonic()
        await publish_requests(stack, ids)
        stored_at = await _wait_stored(stack, f"{ID_PREFIX}t-", count, timeout_s)
    seconds = stored_at - began
    cpu_ms = {name: used * 1000 / count for name, used in sampler.cpu_used().items()}
    return {
        "requests": count,
        "seconds": seconds,
        "requests_per_s": count / seconds,
        "cpu_ms": cpu_ms,
    }


def raw_pipeline_throughput(
    broker: Broker, config: StackConfig, count: int, timeout_s: float = 600.0
) -> dict[str, Any]:
    """The raw pipeline's rate for `count` requests published at once, on `config`'s
    partitions, one process per loop; with each process's CPU per request."""
    emulator_only = replace(config, stages=(), replicas={})
    with running_stack(broker, emulator_only) as stack:
        env = stack.dev.env
        for kind in RAW_KINDS:
            group = f"{stack.prefix}raw-{kind}"
            process = raw_process(kind, stack.prefix, group, env, stack.work / "logs")
            stack.dev.processes[f"raw_{kind}"] = process.start()
        return asyncio.run(_drive(stack, count, timeout_s))

"""Carries out a chaos run: requests published while a fault plan kills stages, restarts the
broker and makes the emulator misbehave; then waits for the pipeline to drain and reads the books.

The books are the records (PostgreSQL), the events log, the storage folder, the emulator's own
jobs and counters, and the dead-letter topic: never the stages' own word for what they did.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy import func, select

from tests.chaos.plan import BURSTS, Fault, FaultKind
from tests.chaos.report import ChaosReport
from tests.e2e.harness import Pipeline, make_request
from vidpipe.bus.upstream import RequestPublisher
from vidpipe.db.tables import events, projects
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.dev.kafka import LocalKafka
from vidpipe.ops.offsets import committed_offsets, end_offsets
from vidpipe.policy.projection import TERMINAL_STATUSES
from vidpipe.storage.base import key_segment

__all__ = ["ChaosRun", "run_chaos"]

_BURST_FIELD: dict[FaultKind, str] = {
    "rate_limit": "fault_rate_limit_share",
    "server_error": "fault_server_error_share",
    "drop_create": "fault_drop_after_create_share",
    "slow": "fault_slow_share",
}
#: The emulator counter each burst kind moves when it hits a request.
_SERVED_STAT: dict[FaultKind, str] = {
    "rate_limit": "faults.rate_limited",
    "server_error": "faults.server_errors",
    "drop_create": "faults.creates_dropped",
    "slow": "faults.slowed",
}
_PROMPT_ID = re.compile(r"chaos-request=(\S+)")
PROVIDERS = ("azure-sora", "openai-videos")


@dataclass
class ChaosRun:
    """What the run needs: the pipeline of stage processes, its own broker, the emulator."""

    pipeline: Pipeline
    kafka: LocalKafka
    emulator: EmulatorThread
    stages: Sequence[str]
    requests: int
    window_s: float
    drain_timeout_s: float
    seed: int
    #: What happened, as the fault driver did it (the books are read separately).
    kills: int = 0
    broker_restarts: int = 0
    publish_retries: int = 0
    #: Stage exits we did not cause.
    crashes: int = 0
    log: list[str] = field(default_factory=list)
    _active: Counter[FaultKind] = field(default_factory=Counter)
    _started: float = 0.0

    def note(self, text: str) -> None:
        self.log.append(f"t+{time.monotonic() - self._started:6.1f}s {text}")

    @property
    def request_ids(self) -> list[str]:
        prefix = self.pipeline.settings.topic_prefix
        return [f"{prefix}c{index:04d}" for index in range(self.requests)]


async def run_chaos(run: ChaosRun, plan: list[Fault]) -> ChaosReport:
    for stage in run.stages:
        run.pipeline.start(stage)
    # The clock starts once every stage consumes: a fault before that would hit nothing.
    for stage in run.stages:
        await run.pipeline.wait_for_group(stage, 1)
    run._started = time.monotonic()
    watch = asyncio.create_task(_watch_for_crashes(run), name="chaos-crash-watch")
    try:
        try:
            # Either failing (e.g. the broker does not come back) stops the other at once.
            async with asyncio.TaskGroup() as group:
                group.create_task(_carry_out(run, plan), name="chaos-faults")
                group.create_task(_publish_all(run), name="chaos-requests")
        finally:
            _burst_off_all(run)
        calm = time.monotonic()
        run.note("faults over, every request published; draining")
        pending = await _wait_terminal(run)
        drained_s = time.monotonic() - calm
        if not pending:
            await _wait_quiet(run)
    finally:
        watch.cancel()
    return await _read_books(run, plan, drained_s=drained_s, pending=pending)


# -- the faults -----------------------------------------------------------------------------


async def _carry_out(run: ChaosRun, plan: list[Fault]) -> None:
    tasks: list[asyncio.Task[None]] = []
    for fault in plan:
        wait = run._started + fault.at_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # the plan's own timetable, not a wait for a condition
        if fault.kind == "kill":
            tasks.append(asyncio.create_task(_kill(run, fault)))
        elif fault.kind == "broker_restart":
            # The plan keeps restarts apart, so two never overlap.
            tasks.append(asyncio.create_task(_restart_broker(run, fault)))
        else:
            tasks.append(asyncio.create_task(_burst(run, fault)))
    await asyncio.gather(*tasks)


async def _kill(run: ChaosRun, fault: Fault) -> None:
    process = run.pipeline.stack.processes[fault.target]
    if not process.running:  # still down from an earlier kill
        return
    process.kill()
    run.kills += 1
    run.note(f"SIGKILL {fault.target} (pid {process.pid}), down {fault.length_s:.1f}s")
    await asyncio.sleep(fault.length_s)
    run.pipeline.start(fault.target)
    run.note(f"restarted {fault.target}")


async def _restart_broker(run: ChaosRun, fault: Fault) -> None:
    before = run.kafka.bootstrap_servers
    run.note("broker stopping")
    await asyncio.to_thread(run.kafka.stop)
    await asyncio.sleep(fault.length_s)
    await asyncio.to_thread(run.kafka.start)
    run.broker_restarts += 1
    if run.kafka.bootstrap_servers != before:
        raise AssertionError(f"the broker came back on {run.kafka.bootstrap_servers}, not {before}")
    run.note("broker back")


async def _burst(run: ChaosRun, fault: Fault) -> None:
    run._active[fault.kind] += 1
    _apply_bursts(run)
    run.note(f"{fault.kind} burst on for {fault.length_s:.0f}s")
    served_before = run.emulator.state.stats[_SERVED_STAT[fault.kind]]
    try:
        await asyncio.sleep(fault.length_s)
        if fault.until_served:
            deadline = time.monotonic() + run.window_s + run.drain_timeout_s
            while run.emulator.state.stats[_SERVED_STAT[fault.kind]] == served_before:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the {fault.kind} burst never met a request")
                await asyncio.sleep(0.2)
            run.note(f"{fault.kind} burst off, served")
    finally:
        run._active[fault.kind] -= 1
        _apply_bursts(run)


def _apply_bursts(run: ChaosRun) -> None:
    changes: dict[str, object] = {
        name: BURSTS[kind] if run._active[kind] > 0 else 0.0 for kind, name in _BURST_FIELD.items()
    }
    run.emulator.update_config(**changes)


def _burst_off_all(run: ChaosRun) -> None:
    run._active.clear()
    _apply_bursts(run)


# -- the requests ---------------------------------------------------------------------------


async def _publish_all(run: ChaosRun) -> None:
    """Publish the requests evenly over the window, as an upstream would: through broker
    restarts, resending (same bytes, same event id) whatever the broker did not acknowledge."""
    prefix = run.pipeline.settings.topic_prefix
    gap_s = run.window_s / max(1, run.requests)
    publisher: RequestPublisher | None = None
    try:
        for index, request_id in enumerate(run.request_ids):
            request = make_request(
                prefix,
                request_id.removeprefix(prefix),
                prompt=f"a chaos fox chaos-request={request_id}",
                provider=PROVIDERS[index % len(PROVIDERS)],
                seconds=4,
            )
            due = run._started + index * gap_s
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)  # the publishing rate, not a wait for a condition
            while True:
                try:
                    if publisher is None:
                        publisher = RequestPublisher(
                            run.pipeline.bootstrap_servers, topic_prefix=prefix
                        )
                        await publisher.__aenter__()
                    await asyncio.wait_for(publisher.publish(request), timeout=10)
                    break
                except (KafkaError, TimeoutError):
                    run.publish_retries += 1
                    if publisher is not None:
                        await _close_quietly(publisher)
                        publisher = None
                    await asyncio.sleep(0.5)
    finally:
        if publisher is not None:
            await _close_quietly(publisher)


async def _close_quietly(publisher: RequestPublisher) -> None:
    with contextlib.suppress(KafkaError, TimeoutError):
        await asyncio.wait_for(publisher.__aexit__(None, None, None), timeout=10)


async def _wait_terminal(run: ChaosRun) -> list[str]:
    """Wait until every request is terminal in the records; the ids still pending at the end."""
    deadline = time.monotonic() + run.drain_timeout_s
    ids = run.request_ids
    pending = ids
    while time.monotonic() < deadline:
        views = await run.pipeline.records.many(ids)
        pending = [
            rid for rid in ids if rid not in views or views[rid].status not in TERMINAL_STATUSES
        ]
        if not pending:
            return []
        await asyncio.sleep(0.5)
    return pending


async def _watch_for_crashes(run: ChaosRun) -> None:
    """A stage that dies on its own (not by our SIGKILL) is a finding: counted and noted, then
    restarted so the run can go on and the books can still be read."""
    while True:
        for name in run.stages:
            process = run.pipeline.stack.processes[name]
            if process.proc is not None and process.proc.poll() not in (None, -9):
                run.crashes += 1
                run.note(f"CRASH {name} exited {process.proc.returncode}:\n{process.log_tail(20)}")
                run.pipeline.start(name)
        await asyncio.sleep(0.5)


async def _wait_quiet(run: ChaosRun, timeout_s: float = 60.0) -> None:
    """Wait until each stage has committed every non-timer topic it reads up to its end, so no
    redelivery is still on its way when the books are read."""
    bootstrap = run.pipeline.bootstrap_servers
    deadline = time.monotonic() + timeout_s
    behind: dict[str, int] = {}
    while time.monotonic() < deadline:
        behind = {}
        for stage in run.stages:
            group = run.pipeline.settings.group_id(stage)
            committed = await committed_offsets(bootstrap, group)
            topics = sorted({tp.topic for tp in committed if ".timers." not in f".{tp.topic}"})
            ends = await end_offsets(bootstrap, topics) if topics else {}
            lag = sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())
            if lag:
                behind[stage] = lag
        if not behind:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"stages still behind after the drain: {behind}")


# -- the books ------------------------------------------------------------------------------


async def _read_books(
    run: ChaosRun, plan: list[Fault], *, drained_s: float, pending: list[str]
) -> ChaosReport:
    ids = run.request_ids
    wanted = set(ids)
    views = await run.pipeline.records.many(ids)
    async with run.pipeline.records.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(projects.c.request_id, func.count())
                .where(projects.c.request_id.in_(ids))
                .group_by(projects.c.request_id)
            )
        ).all()
        stored_events = (
            await conn.execute(
                select(events.c.request_id, events.c.payload).where(
                    events.c.event_type == "VideoStored", events.c.request_id.in_(ids)
                )
            )
        ).all()
    rows_per_request = {str(rid): int(count) for rid, count in rows}
    real_urls: dict[str, set[str]] = {}
    for rid, payload in stored_events:
        if not payload.get("placeholder"):
            real_urls.setdefault(str(rid), set()).add(str(payload["storage_url"]))
    storage_root = Path(run.pipeline.env["VIDPIPE_STORAGE_URL"].removeprefix("file://"))
    objects = {
        rid: sorted(
            p.name
            for p in (storage_root / key_segment(rid)).glob("*.mp4")
            if p.name != "placeholder.mp4"
        )
        for rid in ids
    }
    jobs: Counter[str] = Counter()
    for job in list(run.emulator.state.jobs.values()):
        match = _PROMPT_ID.search(job.prompt)
        if match and match.group(1) in wanted:
            jobs[match.group(1)] += 1
    stats = dict(run.emulator.state.stats)
    letters = await _read_all(
        run.pipeline.bootstrap_servers, run.pipeline.settings.topics.deadletter
    )
    return ChaosReport(
        seed=run.seed,
        requests=len(ids),
        statuses=dict(Counter(v.status for v in views.values())),
        lost=len(pending),
        lost_ids=pending[:20],
        missing_rows=sum(1 for rid in ids if rows_per_request.get(rid, 0) == 0),
        extra_rows=sum(max(0, n - 1) for n in rows_per_request.values()),
        duplicated=sum(
            1 for rid in ids if len(real_urls.get(rid, ())) > 1 or len(objects[rid]) > 1
        ),
        requests_without_job=sum(1 for rid in ids if jobs[rid] == 0),
        extra_provider_jobs=sum(max(0, n - 1) for n in jobs.values()),
        dead_letters=len(letters),
        dead_letter_reasons=dict(Counter(str(letter)[:120] for letter in letters).most_common(5)),
        kills=run.kills,
        stage_crashes=run.crashes,
        broker_restarts=run.broker_restarts,
        publish_retries=run.publish_retries,
        rate_limited=stats.get("faults.rate_limited", 0),
        server_errors=stats.get("faults.server_errors", 0),
        creates_dropped=stats.get("faults.creates_dropped", 0),
        slowed=stats.get("faults.slowed", 0),
        provider_jobs=sum(jobs.values()),
        drain_s=round(drained_s, 1),
        window_s=run.window_s,
        plan=[fault.describe() for fault in plan],
        log=run.log,
    )


async def _read_all(bootstrap_servers: str, topic: str) -> list[bytes]:
    """Every message on `topic`, from the start to its end offsets now."""
    ends = {tp: end for tp, end in (await end_offsets(bootstrap_servers, [topic])).items() if end}
    if not ends:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    found: list[bytes] = []
    try:
        consumer.assign(list(ends))
        for tp in ends:
            consumer.seek(tp, 0)
        done: set[TopicPartition] = set()
        deadline = time.monotonic() + 30
        while len(done) < len(ends) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                found.extend(r.value or b"" for r in records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    done.add(tp)
    finally:
        await consumer.stop()
    return found

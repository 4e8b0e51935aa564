"""Thousands of long jobs in flight: the poller's memory, its status calls, and how late it sees
a job finish.

N jobs (full 10,000, quick 1,000) of `JOB_SECONDS` each are created directly at the provider
emulator (httpx, before the clock starts, so the submitter is not measured), then N
JobSubmitted events are published at once to `{prefix}job.submitted`. Only the poller runs, as
its own process (`python -m vidpipe run poller`, exactly what production runs, its durable
timers included), against its own emulator process and a broker with a fresh topic prefix.

Measured while the jobs run and until every JobSucceeded has arrived (or a deadline passed):

- the poller's RSS every second (`/proc/PID/status` VmRSS) and its peak (VmHWM), beside its RSS
  at idle before any job arrived (the baseline);
- status calls per job per minute: the emulator's status-request counter (`/_emulator/stats`)
  divided by the jobs the poller is still watching (submitted, JobSucceeded not yet seen), over
  10 s windows, and overall; beside what the intended schedule gives (60 s / the poll interval
  or the provider's poll hint);
- detection delay: the JobSucceeded's Kafka timestamp minus the job's known finish time at the
  emulator (its creation + its duration: azure-sora job ids are ULIDs holding the emulator's
  creation clock in ms; for openai-videos, the create call's midpoint), p50/p95/max, beside the
  target of the issue (the larger of 10 % of the job's duration and the provider's poll hint);
- the poller's CPU (utime + stime from /proc/PID/stat) over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench import MIB, BenchResult
from schemas.events import JobSubmitted, RequestSnapshot, derive_event_id
from vidpipe.bus.admin import ensure_all_topics
from vidpipe.cli.processes import ManagedProcess, stage_argv
from vidpipe.dev.processes import free_ports
from vidpipe.dev.servers import resolve_kafka
from vidpipe.ops.offsets import committed_offsets, end_offsets
from vidpipe.settings import Settings

__all__ = [
    "JobRun",
    "Sample",
    "calls_per_job_minute",
    "delay_target_s",
    "detection_delays",
    "parse_proc_status",
    "percentile",
    "run",
    "topic_lags",
    "ulid_time_s",
    "watched_job_minutes",
    "window_rates",
]

Provider = Literal["azure-sora", "openai-videos"]
JOB_SECONDS = 120.0
# Samples of the poller and the emulator are taken this often; rates are read over WINDOW_S.
SAMPLE_EVERY_S = 1.0
# Consumer lag takes a few admin round trips: read less often, off the sampling loop.
LAG_EVERY_S = 5.0
WINDOW_S = 10.0
IDLE_SAMPLES = 3
CREATE_CONCURRENCY = 32
_AZURE = "/openai/v1/video/generations"
# The emulator's own poll hint (openai-poll-after-ms), at time_scale 1: its default.
_OPENAI_HINT_S = 5.0


# -- pure parts (tests/unit/test_bench_poller.py) ---------------------------------------------


@dataclass(frozen=True)
class JobRun:
    """One job created at the emulator: when it finishes there, and when vidpipe said so."""

    job_id: str
    #: Wall-clock (unix) seconds the job reaches "succeeded" at the emulator.
    finishes_at: float
    #: Half the create call's round trip: how far `finishes_at` may be off.
    uncertainty_s: float
    #: The JobSucceeded's Kafka timestamp (unix seconds), or None when it never came.
    detected_at: float | None = None
    #: The JobSucceeded's `occurred_at`: when the poller's check decided the job was done.
    decided_at: float | None = None


@dataclass(frozen=True)
class Sample:
    """One look at the poller and the emulator, `t` seconds (unix) into the run."""

    t: float
    rss_bytes: int
    cpu_s: float
    #: The emulator's status requests so far (cumulative counter).
    status_calls: int
    #: Jobs the poller still watches: submitted and not yet reported succeeded or failed.
    watched: int


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def ulid_time_s(ulid: str) -> float:
    """The creation time (unix seconds, ms precision) in a ULID's first 48 bits. The emulator's
    Azure job ids (`task_` + ULID) carry the very clock reading its schedule starts from."""
    value = 0
    for char in ulid.lower():
        value = value * 32 + _CROCKFORD.index(char)
    return (value >> 80) / 1000


def parse_proc_status(text: str, field_name: str) -> int:
    """A `/proc/PID/status` figure such as VmRSS or VmHWM, in bytes (the file says kB)."""
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no {field_name} in /proc status")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def detection_delays(jobs: Sequence[JobRun]) -> list[float]:
    """Seconds from each detected job's finish at the emulator to its JobSucceeded."""
    return [job.detected_at - job.finishes_at for job in jobs if job.detected_at is not None]


def delay_target_s(job_seconds: float, poll_hint_s: float | None) -> float:
    """The issue's bound on detection delay: the larger of 10 % of the job and the hint."""
    return max(0.1 * job_seconds, poll_hint_s or 0.0)


def window_rates(samples: Sequence[Sample], window_s: float) -> list[float]:
    """Status calls per watched job per minute, over consecutive windows of about `window_s`.

    Each window runs from one sample to the first sample at least `window_s` later; its rate is
    the calls made in it over the jobs watched at its start (a job is polled until it is seen
    done, so the jobs watched are the ones that cost calls). Windows with nothing watched are
    left out.
    """
    rates: list[float] = []
    start = 0
    for end in range(1, len(samples)):
        first, last = samples[start], samples[end]
        if last.t - first.t < window_s:
            continue
        if first.watched > 0:
            calls = last.status_calls - first.status_calls
            rates.append(calls / first.watched / (last.t - first.t) * 60)
        start = end
    return rates


def watched_job_minutes(jobs: Sequence[JobRun], submitted_at: float, ended_at: float) -> float:
    """Minutes of watching summed over the jobs: from their JobSubmitted to their JobSucceeded
    (or the end of the run, for a job never seen done)."""
    total = 0.0
    for job in jobs:
        seen = job.detected_at if job.detected_at is not None else ended_at
        total += max(0.0, seen - submitted_at)
    return total / 60


def topic_lags(
    committed: dict[TopicPartition, int], ends: dict[TopicPartition, int]
) -> dict[str, int]:
    """Messages not yet committed, per topic: end - committed over its partitions (a partition
    never committed counts from 0: every topic of the run is fresh)."""
    lags: dict[str, int] = {}
    for tp, end in ends.items():
        lags[tp.topic] = lags.get(tp.topic, 0) + max(0, end - committed.get(tp, 0))
    return lags


def calls_per_job_minute(
    calls: int, jobs: Sequence[JobRun], submitted_at: float, ended_at: float
) -> float:
    """Status calls per job per minute over the whole run (NaN when nothing was watched)."""
    minutes = watched_job_minutes(jobs, submitted_at, ended_at)
    return calls / minutes if minutes > 0 else math.nan


# -- the run ----------------------------------------------------------------------------------


@dataclass
class _Case:
    provider: Provider
    jobs: int
    job_seconds: float
    tail_s: float


@dataclass
class _Outcome:
    case: _Case
    interval_s: float
    hint_s: float | None
    idle_rss_bytes: int
    peak_rss_bytes: int
    jobs: list[JobRun]
    samples: list[Sample]
    submitted_at: float
    ended_at: float
    failed: int
    create_seconds: float
    publish_seconds: float
    cpu_s: float
    details: dict[str, Any] = field(default_factory=dict)


def _proc_status(pid: int) -> str:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return f.read()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # Fields after the command name (which may hold spaces) start at the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def _start_emulator(env: dict[str, str], logs: Path) -> tuple[ManagedProcess, str]:
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "vidpipe", "emulator", "--host", "127.0.0.1", "--port", str(port)]
    process = ManagedProcess("emulator", argv, env, logs / "emulator.log").start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base + "/_emulator/health", timeout=1.0)
            return process, base
        except httpx.TransportError:
            if not process.running or time.monotonic() > deadline:
                process.stop(5)
                raise RuntimeError(f"the emulator did not start:\n{process.log_tail()}") from None
            time.sleep(0.1)


async def _wait_for_groups(bootstrap: str, groups: list[str], process: ManagedProcess) -> None:
    """Until every group is Stable with a member: the poller reads its topics from now on."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            stable: set[str] = set()
            for group in groups:
                try:
                    # One group per call: aiokafka 0.14 fails to decode some multi-group answers.
                    responses = await admin.describe_consumer_groups([group])
                except KafkaError:  # no coordinator yet: the group is still being created
                    continue
                for response in responses:
                    for described in response.to_object()["groups"]:
                        if described["state"] == "Stable" and described["members"]:
                            stable.add(described["group"])
            if stable >= set(groups):
                return
            if not process.running:
                raise RuntimeError(f"the poller exited:\n{process.log_tail()}")
            await asyncio.sleep(0.3)
        raise RuntimeError(
            f"the poller's groups {groups} never became stable:\n{process.log_tail()}"
        )
    finally:
        await admin.close()


def _prompt(job_seconds: float) -> str:
    return f"bench poller in flight [emulator:duration={job_seconds:g}]"


async def _create_jobs(
    client: httpx.AsyncClient, provider: Provider, count: int, job_seconds: float
) -> list[JobRun]:
    """`count` jobs at the emulator, CREATE_CONCURRENCY at a time; each with its finish time."""
    jobs: list[JobRun] = []
    prompt = _prompt(job_seconds)
    if provider == "azure-sora":
        path = f"{_AZURE}/jobs"
        params = {"api-version": "preview"}
        body: dict[str, Any] = {
            "model": "sora",
            "prompt": prompt,
            "width": 480,
            "height": 480,
            "n_seconds": 5,
        }
    else:
        path, params = "/v1/videos", {}
        body = {"model": "sora-2", "prompt": prompt, "seconds": "4", "size": "720x1280"}
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            before = time.time()
            response = await client.post(path, params=params, json=body)
            after = time.time()
            response.raise_for_status()
            job_id = str(response.json()["id"])
            if provider == "azure-sora":
                # The id holds the emulator's clock reading the schedule starts from (in ms).
                created, uncertainty = ulid_time_s(job_id.removeprefix("task_")), 0.001
            else:
                # No time in the id: somewhere within the call, which a queue may stretch.
                created, uncertainty = (before + after) / 2, (after - before) / 2
            jobs.append(
                JobRun(
                    job_id=job_id,
                    finishes_at=created + job_seconds,
                    uncertainty_s=uncertainty,
                )
            )

    await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
    return jobs


async def _sample_lags(
    bootstrap: str, settings: Settings, into: list[dict[str, float]], stop: asyncio.Event
) -> None:
    """Every LAG_EVERY_S until `stop`: the backlog of the poller's two inputs (JobSubmitted
    to schedule, checks due) and the timers its relay holds (pending, not a backlog)."""
    topics = settings.topics
    inputs = [topics.job_submitted, topics.due("poller")]
    tiers = topics.timer_tiers("poller")
    while not stop.is_set():
        started = time.time()
        committed = await committed_offsets(bootstrap, settings.group_id("poller"))
        committed |= await committed_offsets(bootstrap, settings.group_id("poller.timers"))
        lags = topic_lags(committed, await end_offsets(bootstrap, [*inputs, *tiers]))
        into.append(
            {
                "t": started,
                "submitted_lag": lags.get(topics.job_submitted, 0),
                "due_lag": lags.get(topics.due("poller"), 0),
                "timers_pending": sum(lags.get(t, 0) for t in tiers),
            }
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LAG_EVERY_S)


async def _check_finish_times(
    client: httpx.AsyncClient, provider: Provider, jobs: list[JobRun], count: int = 20
) -> float:
    """The largest gap between the finish times this bench assumed and those the emulator
    reports (whole seconds there, so up to 1 s is rounding); raises past 1.5 s, since every
    delay would then be off by as much. Run after the status counter was read."""
    worst = 0.0
    step = max(1, len(jobs) // count)
    for job in jobs[::step]:
        if provider == "azure-sora":
            response = await client.get(
                f"{_AZURE}/jobs/{job.job_id}", params={"api-version": "preview"}
            )
            reported = response.json()["finished_at"]
        else:
            reported = (await client.get(f"/v1/videos/{job.job_id}")).json()["completed_at"]
        if reported is None:  # not finished at the emulator: the run ended before it
            continue
        # The emulator truncates to whole seconds: the true finish lies in [reported, +1).
        gap = max(0.0, reported - job.finishes_at, job.finishes_at - (reported + 1))
        worst = max(worst, gap)
    if worst > 1.5:
        raise RuntimeError(f"assumed finish times are off by up to {worst:.1f} s")
    return worst


def _submitted(case: _Case, job: JobRun, index: int, host: str) -> JobSubmitted:
    provider = case.provider
    request_id = f"bench-poll-{index:05d}"
    snapshot = RequestSnapshot(
        prompt=_prompt(case.job_seconds),
        seconds=5 if provider == "azure-sora" else 4,
        size="480x480" if provider == "azure-sora" else "720x1280",
        provider=provider,
    )
    return JobSubmitted(
        event_id=derive_event_id(request_id, "JobSubmitted", job.job_id),
        occurred_at=datetime.fromtimestamp(job.finishes_at - case.job_seconds, UTC),
        request_id=request_id,
        provider=provider,
        provider_job_id=job.job_id,
        endpoint_host=host,
        model="sora" if provider == "azure-sora" else "sora-2",
        request=snapshot,
    )


async def _publish(bootstrap: str, topic: str, events: list[JobSubmitted]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = []
        for event in events:
            pending.append(
                await producer.send(
                    topic,
                    value=event.model_dump_json().encode(),
                    key=event.request_id.encode(),
                    headers=[
                        ("content-type", b"application/json"),
                        ("event-type", b"JobSubmitted"),
                    ],
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _measure_async(case: _Case, tmp: Path, bootstrap: str) -> _Outcome:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    key = secrets.token_urlsafe(24)
    # The defaults the poller sees too: it gets none of this process's VIDPIPE_* variables.
    defaults = Settings.model_fields
    settings = Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        topic_partitions=defaults["topic_partitions"].default,
        topic_partitions_overrides={},
    )
    await ensure_all_topics(settings, bootstrap)
    topics = settings.topics
    logs = tmp / "logs"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPIPE_")}
    emulator, emulator_url = _start_emulator(
        {**base_env, "VIDPIPE_EMULATOR_API_KEY": key, "PYTHONUNBUFFERED": "1"}, logs
    )
    poller: ManagedProcess | None = None
    try:
        headers = {"api-key": key, "authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=CREATE_CONCURRENCY)
        async with httpx.AsyncClient(
            base_url=emulator_url, headers=headers, limits=limits, timeout=30
        ) as client:
            changes = {"max_concurrent_jobs": None, "idempotency": False}
            (await client.post("/_emulator/config", json=changes)).raise_for_status()
            env = {
                **base_env,
                "PYTHONUNBUFFERED": "1",
                "VIDPIPE_KAFKA_BOOTSTRAP": bootstrap,
                "VIDPIPE_TOPIC_PREFIX": prefix,
                "VIDPIPE_STATE_DIR": str(tmp / "state"),
                "VIDPIPE_DATABASE_URL": f"sqlite:///{tmp / 'unused.db'}",
                "VIDPIPE_STORAGE_URL": f"file://{tmp / 'videos'}",
                "VIDPIPE_SHUTDOWN_TIMEOUT_S": "5",
                # Only the measured provider is configured, as a deployment with one would be.
                **(
                    {"VIDPIPE_AZURE_ENDPOINT": emulator_url, "VIDPIPE_AZURE_API_KEY": key}
                    if case.provider == "azure-sora"
                    else {
                        "VIDPIPE_OPENAI_BASE_URL": f"{emulator_url}/v1",
                        "VIDPIPE_OPENAI_API_KEY": key,
                    }
                ),
            }
            # The poller gets no VIDPIPE_POLL_* variables, so it runs the default schedule.
            interval_s = float(defaults["poll_interval_s"].default)
            poller = ManagedProcess("poller", stage_argv("poller"), env, logs / "poller.log")
            poller.start()
            await _wait_for_groups(
                bootstrap,
                [settings.group_id("poller"), settings.group_id("poller.timers")],
                poller,
            )
            # Baseline: the poller at rest, connected, before any job.
            idle = []
            for _ in range(IDLE_SAMPLES):
                idle.append(parse_proc_status(_proc_status(poller.pid), "VmRSS"))
                await asyncio.sleep(SAMPLE_EVERY_S)
            idle_rss = int(statistics.median(idle))

            started = time.monotonic()
            jobs = await _create_jobs(client, case.provider, case.jobs, case.job_seconds)
            create_seconds = time.monotonic() - started
            by_id = {job.job_id: i for i, job in enumerate(jobs)}
            host = emulator_url.removeprefix("http://")
            events = [_submitted(case, job, i, host) for i, job in enumerate(jobs)]

            consumer = AIOKafkaConsumer(
                topics.job_succeeded,
                topics.job_failed,
                bootstrap_servers=bootstrap,
                group_id=None,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
            )
            await consumer.start()
            lag_task: asyncio.Task[None] | None = None
            try:
                status_key = (
                    "azure.status_requests"
                    if case.provider == "azure-sora"
                    else "openai.status_requests"
                )

                async def status_calls() -> int:
                    response = await client.get("/_emulator/stats")
                    response.raise_for_status()
                    return int(response.json().get(status_key, 0))

                calls_before = await status_calls()
                cpu_before = _cpu_seconds(poller.pid)
                lags: list[dict[str, float]] = []
                stop_lags = asyncio.Event()
                lag_task = asyncio.create_task(_sample_lags(bootstrap, settings, lags, stop_lags))
                submitted_at = time.time()
                published = time.monotonic()
                await _publish(bootstrap, topics.job_submitted, events)
                publish_seconds = time.monotonic() - published

                detected: dict[int, float] = {}
                decided: dict[int, float] = {}
                failed = 0
                samples: list[Sample] = []
                last_finish = max(job.finishes_at for job in jobs)
                deadline = last_finish + case.tail_s
                next_sample = 0.0
                while len(detected) + failed < len(jobs) and time.time() < deadline:
                    batch = await consumer.getmany(timeout_ms=200)
                    for records in batch.values():
                        for record in records:
                            value = json.loads(record.value or b"{}")
                            index = by_id.get(str(value.get("provider_job_id")))
                            if index is None:
                                continue
                            if value.get("event_type") == "JobSucceeded":
                                detected.setdefault(index, record.timestamp / 1000)
                                decided.setdefault(
                                    index,
                                    datetime.fromisoformat(value["occurred_at"]).timestamp(),
                                )
                            else:
                                failed += 1
                    if time.monotonic() >= next_sample:
                        next_sample = time.monotonic() + SAMPLE_EVERY_S
                        if not poller.running:
                            raise RuntimeError(f"the poller exited:\n{poller.log_tail()}")
                        samples.append(
                            Sample(
                                t=time.time(),
                                rss_bytes=parse_proc_status(_proc_status(poller.pid), "VmRSS"),
                                cpu_s=_cpu_seconds(poller.pid) - cpu_before,
                                status_calls=await status_calls() - calls_before,
                                watched=len(jobs) - len(detected) - failed,
                            )
                        )
                ended_at = time.time()
                peak_rss = parse_proc_status(_proc_status(poller.pid), "VmHWM")
                cpu_s = _cpu_seconds(poller.pid) - cpu_before
                total_calls = await status_calls() - calls_before
                samples.append(
                    Sample(
                        t=ended_at,
                        rss_bytes=parse_proc_status(_proc_status(poller.pid), "VmRSS"),
                        cpu_s=cpu_s,
                        status_calls=total_calls,
                        watched=len(jobs) - len(detected) - failed,
                    )
                )
                stop_lags.set()
                await lag_task
                finish_error_s = await _check_finish_times(client, case.provider, jobs)
            finally:
                if lag_task is not None and not lag_task.done():
                    lag_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await lag_task
                await consumer.stop()
        runs = [
            JobRun(j.job_id, j.finishes_at, j.uncertainty_s, detected.get(i), decided.get(i))
            for i, j in enumerate(jobs)
        ]
        return _Outcome(
            case=case,
            interval_s=interval_s,
            hint_s=_OPENAI_HINT_S if case.provider == "openai-videos" else None,
            idle_rss_bytes=idle_rss,
            peak_rss_bytes=peak_rss,
            jobs=runs,
            samples=samples,
            submitted_at=submitted_at,
            ended_at=ended_at,
            failed=failed,
            create_seconds=create_seconds,
            publish_seconds=publish_seconds,
            cpu_s=cpu_s,
            details={
                "status_calls": total_calls,
                "topic_prefix": prefix,
                "finish_time_check_max_error_s": finish_error_s,
                "lags": lags,
            },
        )
    finally:
        if poller is not None:
            poller.stop(15)
        emulator.stop(5)


def _measure(case: _Case) -> _Outcome:
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-poller-") as tmp:
        kafka = resolve_kafka(os.environ.get("VIDPIPE_KAFKA_BOOTSTRAP"))
        try:
            return asyncio.run(_measure_async(case, Path(tmp), kafka.bootstrap_servers))
        finally:
            kafka.stop()


def _range(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    median = statistics.median(ordered)
    return f"{median:.{digits}f} ({ordered[0]:.{digits}f}-{ordered[-1]:.{digits}f})"


def _row(outcome: _Outcome) -> list[str]:
    case = outcome.case
    delays = detection_delays(outcome.jobs)
    detected = len(delays)
    schedule_s = outcome.hint_s or outcome.interval_s
    calls = int(outcome.details["status_calls"])
    overall = calls_per_job_minute(calls, outcome.jobs, outcome.submitted_at, outcome.ended_at)
    windows = window_rates(outcome.samples, WINDOW_S)
    wall = outcome.ended_at - outcome.submitted_at
    target = delay_target_s(case.job_seconds, outcome.hint_s)
    peak_sampled = max((s.rss_bytes for s in outcome.samples), default=0)
    return [
        case.provider,
        f"{case.jobs} x {case.job_seconds:g} s",
        f"{detected}/{case.jobs}" + (f" ({outcome.failed} failed)" if outcome.failed else ""),
        f"{outcome.idle_rss_bytes / MIB:.0f}",
        f"{max(outcome.peak_rss_bytes, peak_sampled) / MIB:.0f}",
        f"{overall:.1f}; windows {_range(windows)}",
        f"{60 / schedule_s:.1f}",
        f"{calls / case.jobs:.1f} ({case.job_seconds / schedule_s + 1:.0f})",
        (
            f"{percentile(delays, 50):.1f} / {percentile(delays, 95):.1f} / {max(delays):.1f}"
            if delays
            else "-"
        ),
        f"{target:g}",
        f"{100 * outcome.cpu_s / wall:.0f}",
    ]


def _sample_json(outcome: _Outcome) -> list[dict[str, Any]]:
    case = outcome.case
    delays = detection_delays(outcome.jobs)
    lags: list[dict[str, float]] = outcome.details["lags"]
    summary: dict[str, Any] = {
        "kind": "summary",
        "provider": case.provider,
        "jobs": case.jobs,
        "job_seconds": case.job_seconds,
        "poll_interval_s": outcome.interval_s,
        "poll_hint_s": outcome.hint_s,
        "idle_rss_bytes": outcome.idle_rss_bytes,
        "peak_rss_bytes": outcome.peak_rss_bytes,
        "detected": len(delays),
        "failed": outcome.failed,
        "status_calls": outcome.details["status_calls"],
        "calls_per_job_minute": calls_per_job_minute(
            int(outcome.details["status_calls"]),
            outcome.jobs,
            outcome.submitted_at,
            outcome.ended_at,
        ),
        "window_calls_per_job_minute": window_rates(outcome.samples, WINDOW_S),
        "delay_p50_s": percentile(delays, 50),
        "delay_p95_s": percentile(delays, 95),
        "delay_max_s": max(delays, default=math.nan),
        # Split of the delay: the check that saw the job done came this late (occurred_at -
        # finish), and its JobSucceeded reached Kafka this long after the decision.
        "check_late_p50_s": percentile(
            [j.decided_at - j.finishes_at for j in outcome.jobs if j.decided_at is not None], 50
        ),
        "publish_lag_p50_s": percentile(
            [
                j.detected_at - j.decided_at
                for j in outcome.jobs
                if j.detected_at is not None and j.decided_at is not None
            ],
            50,
        ),
        "finish_time_check_max_error_s": outcome.details["finish_time_check_max_error_s"],
        "peak_submitted_lag": max((x["submitted_lag"] for x in lags), default=0),
        "peak_due_lag": max((x["due_lag"] for x in lags), default=0),
        "lags": [{**x, "t": round(x["t"] - outcome.submitted_at, 1)} for x in lags],
        "delay_target_s": delay_target_s(case.job_seconds, outcome.hint_s),
        "finish_time_uncertainty_max_s": max(j.uncertainty_s for j in outcome.jobs),
        "create_seconds": outcome.create_seconds,
        "publish_seconds": outcome.publish_seconds,
        "run_seconds": outcome.ended_at - outcome.submitted_at,
        "poller_cpu_s": outcome.cpu_s,
        "topic_prefix": outcome.details["topic_prefix"],
    }
    series = [
        {
            "kind": "sample",
            "provider": case.provider,
            "t_s": round(s.t - outcome.submitted_at, 2),
            "rss_bytes": s.rss_bytes,
            "cpu_s": round(s.cpu_s, 3),
            "status_calls": s.status_calls,
            "watched": s.watched,
        }
        for s in outcome.samples
    ]
    return [summary, *series]


def run(
    quick: bool = False,
    *,
    jobs: int | None = None,
    job_seconds: float = JOB_SECONDS,
    providers: Sequence[Provider] | None = None,
) -> BenchResult:
    jobs = jobs or (1_000 if quick else 10_000)
    cases: Sequence[Provider] = providers or (
        ("azure-sora",) if quick else ("azure-sora", "openai-videos")
    )
    # How long after the last job's finish the run still waits for its JobSucceeded.
    tail_s = 60.0 if quick else 240.0
    outcomes = [_measure(_Case(p, jobs, job_seconds, tail_s)) for p in cases]
    samples = [s for outcome in outcomes for s in _sample_json(outcome)]
    notes = [
        "idle RSS: the poller connected and at rest before any job (median of "
        f"{IDLE_SAMPLES} readings); peak RSS: VmHWM at the end of the run (and the largest "
        f"VmRSS sampled every {SAMPLE_EVERY_S:g} s); target < 300 MB",
        "calls/job/min: the emulator's status requests over the job-minutes the poller "
        f"watched (submitted until JobSucceeded); windows: the same over {WINDOW_S:g} s "
        "windows, median (min-max). fixed interval (the baseline): what polling every "
        "VIDPIPE_POLL_INTERVAL_S, or every poll hint, would cost: 60 s / that per minute, "
        "job duration / that + 1 per job",
        "delay: JobSucceeded's Kafka timestamp minus the job's finish at the emulator (its "
        "creation + duration; azure-sora: the ms time in its ULID id, openai-videos: the "
        "create call's midpoint), p50 / p95 / max over the detected jobs; target: the larger "
        "of 10 % of the job's duration and the provider's poll hint",
        "CPU %: the poller's utime + stime over the run (100 = one core)",
        f"script: {Path(__file__).name}; `python -m bench.run --only poller_inflight`",
    ]
    for outcome in outcomes:
        summary = _sample_json(outcome)[0]
        notes.append(
            f"{outcome.case.provider}: of the delay (p50), the check that saw the job done came "
            f"{summary['check_late_p50_s']:.1f} s after its finish (JobSucceeded occurred_at), "
            f"its event reached Kafka {summary['publish_lag_p50_s']:.2f} s after that; "
            f"{summary['status_calls']} status calls in {summary['run_seconds']:.0f} s; "
            f"peak backlog (every {LAG_EVERY_S:g} s): {summary['peak_submitted_lag']:.0f} "
            f"JobSubmitted, {summary['peak_due_lag']:.0f} checks due"
        )
        missed = sum(1 for j in outcome.jobs if j.detected_at is None) - outcome.failed
        if missed > 0:
            notes.append(
                f"WARNING: {outcome.case.provider}: {missed} jobs had no JobSucceeded "
                f"{outcome.case.tail_s:g} s after the last job finished"
            )
    return BenchResult(
        name="poller_inflight",
        title=f"Poller with {jobs:,} long jobs in flight: memory, status calls, detection delay",
        columns=[
            "provider",
            "jobs",
            "detected",
            "idle RSS MiB",
            "peak RSS MiB",
            "calls/job/min",
            "fixed-interval calls/job/min",
            "calls/job (fixed interval)",
            "delay p50 / p95 / max s",
            "delay target s",
            "poller CPU %",
        ],
        rows=[_row(outcome) for outcome in outcomes],
        samples=samples,
        details={
            "jobs": jobs,
            "job_seconds": job_seconds,
            "providers": list(cases),
            "tail_s": tail_s,
            "sample_every_s": SAMPLE_EVERY_S,
            "window_s": WINDOW_S,
            "create_concurrency": CREATE_CONCURRENCY,
            "emulator": "own process, time_scale 1, max_concurrent_jobs None, idempotency off",
        },
        notes=notes,
    )


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, help="jobs in flight (default: 1,000 quick, 10,000)")
    parser.add_argument("--job-seconds", type=float, default=JOB_SECONDS)
    parser.add_argument("--provider", choices=("azure-sora", "openai-videos"), action="append")
    args = parser.parse_args(argv)
    result = run(
        quick=args.quick, jobs=args.jobs, job_seconds=args.job_seconds, providers=args.provider
    )
    print(result.markdown())


if __name__ == "__main__":
    _main()

"""Shared machinery of the pipeline benchmarks: a whole vidpipe stack, as users run it, measured.

`Broker` starts one throwaway local Kafka (the jars `vidpipe up` uses) for a whole benchmark;
`BenchStack` starts, on it, the emulator and every core stage as its own process
(`python -m vidpipe run NAME`, through `vidpipe.dev.stack.DevStack`, exactly what `vidpipe up`
does) with a fresh topic prefix, a fresh SQLite file and a fresh storage folder, so no run sees
another's messages or rows. The emulator finishes every job at once and hints the next poll at
its floor (10 ms); provider quotas are lifted, so the provider is never the bound.

Measuring: `publish_requests` sends requests at a fixed rate (or all at once), `wait_stored` polls
the records database until they are stored, `read_hops` reads their events back, `Sampler` reads
each process's CPU time (/proc/PID/stat) and each stage's consumer lag (committed vs end offsets)
over time, and `raw_hop_latency` / `raw_relay_throughput` measure plain aiokafka on the same
broker as baselines. The pure parts (percentiles, the pacing schedule, the per-hop split, lag
arithmetic) are separate functions, unit-tested in tests/unit/test_bench_pipeline.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from schemas.events import GenerationRequested
from schemas.topics import Topics
from services.registry import CORE_STAGES
from vidpipe.bus.upstream import new_request
from vidpipe.dev.kafka import LocalKafka
from vidpipe.dev.stack import DevStack
from vidpipe.ops.offsets import committed_offsets, end_offsets, wait_until_stable
from vidpipe.settings import Settings

__all__ = [
    "HOPS",
    "HOP_NAMES",
    "BenchStack",
    "Broker",
    "Sampler",
    "StackConfig",
    "bench_request",
    "cpu_seconds_from_stat",
    "fmt_range",
    "group_lag",
    "hop_split",
    "percentile",
    "pipeline_overhead",
    "publish_requests",
    "raw_hop_latency",
    "raw_relay_throughput",
    "read_hops",
    "running_stack",
    "send_schedule",
    "stop_on_sigterm",
    "summarize",
    "wait_group_members",
    "wait_stored",
    "warm_up",
]

# Kafka hops on a request's path: GenerationRequested -> submitter, JobSubmitted -> poller, the
# poller's timer (timers.poller -> its relay -> poller.due -> poller: two hops), JobSucceeded ->
# fetcher, VideoStored -> recorder. The raw baseline is one measured hop times this.
HOPS = 6
# The per-hop split of one request's latency, in path order (see hop_split).
HOP_NAMES: tuple[str, ...] = ("submit", "poll", "fetch", "record")
# What every benchmark request asks for: the OpenAI protocol carries the poll hint
# (openai-poll-after-ms); 4 s is its shortest duration; the emulator serves a small video.
PROVIDER = "openai-videos"
REQUEST_SECONDS = 4
# The emulator: every job done at once (every phase 0 s), the poll hint at its 10 ms floor,
# no concurrent-job quota, so the provider never bounds the pipeline.
EMULATOR_CONFIG: dict[str, Any] = {
    "max_concurrent_jobs": None,
    "queued_seconds": 0.0,
    "preprocessing_seconds": 0.0,
    "running_seconds": 0.0,
    "processing_seconds": 0.0,
    "poll_after_seconds": 0.001,
}
EMULATOR_HINT_S = 0.010
_STAT_TICKS = os.sysconf("SC_CLK_TCK")


# -- pure parts ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's
    default), so p50 of an even count is the mean of the middle two."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99, mean and max of `values` (e.g. latencies in seconds)."""
    return {
        "count": float(len(values)),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "max": max(values),
    }


def fmt_range(values: Sequence[float], digits: int = 0, scale: float = 1.0) -> str:
    """`median (min-max)` of repeats, e.g. `152 (140-160)`; just the value for one repeat."""
    scaled = sorted(v * scale for v in values)
    median = statistics.median(scaled)
    if len(scaled) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({scaled[0]:.{digits}f}-{scaled[-1]:.{digits}f})"


def send_schedule(rate_per_s: float, seconds: float) -> list[float]:
    """When (seconds after the start) each request of a fixed-rate run is sent: evenly spaced,
    `rate * seconds` of them, the first at 0. An open-loop schedule: a late send never shifts
    the later ones, so a slow pipeline cannot lower the offered rate."""
    if rate_per_s <= 0 or seconds <= 0:
        raise ValueError("rate and seconds must be positive")
    count = round(rate_per_s * seconds)
    return [i / rate_per_s for i in range(count)]


def hop_split(
    published_at: float, occurred: Mapping[str, float], stored_recorded_at: float
) -> dict[str, float]:
    """Where one request's time went, in seconds, from its events' timestamps (unix seconds):

    - submit: publish -> JobSubmitted.occurred_at (a Kafka hop, the submitter, the create call);
    - poll:   JobSubmitted -> JobSucceeded.occurred_at (the timer wait, its two hops, the status
              call);
    - fetch:  JobSucceeded -> VideoStored.occurred_at (a hop, the download, the storage write);
    - record: VideoStored.occurred_at -> its recorded_at (a hop, the recorder's transaction);
    - total:  publish -> VideoStored recorded_at (what a user waits to see it stored).
    """
    submitted = occurred["JobSubmitted"]
    succeeded = occurred["JobSucceeded"]
    stored = occurred["VideoStored"]
    return {
        "submit": submitted - published_at,
        "poll": succeeded - submitted,
        "fetch": stored - succeeded,
        "record": stored_recorded_at - stored,
        "total": stored_recorded_at - published_at,
    }


def pipeline_overhead(split: Mapping[str, float], poll_wait_s: float, provider_s: float) -> float:
    """Latency minus the provider's job time and the poll waits the schedule asks for.

    The poll wait subtracted is at most the poll hop itself: a poller that checks sooner than
    `poll_wait_s` must not earn a negative wait (that would hide real overhead)."""
    return split["total"] - provider_s - min(poll_wait_s, max(0.0, split["poll"]))


def group_lag(
    committed: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]
) -> int | None:
    """Messages a consumer group still has to read on the topics it has committed on: the sum
    of end minus committed over every partition of those topics (a partition it never committed
    counts from 0: every benchmark topic is fresh). None before its first commit."""
    topics = {tp.topic for tp in committed}
    if not topics:
        return None
    return sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items() if tp.topic in topics)


def cpu_seconds_from_stat(stat: str) -> float:
    """utime + stime of one /proc/PID/stat line, in seconds. The command (field 2) may hold
    spaces and parentheses, so fields are counted after its closing parenthesis."""
    after = stat.rsplit(")", 1)[1].split()
    # After the command: state is field 3, so utime (14) and stime (15) sit at 11 and 12.
    return (int(after[11]) + int(after[12])) / _STAT_TICKS


# -- processes ----------------------------------------------------------------------------------


def _process_cpu(pid: int) -> float | None:
    try:
        return cpu_seconds_from_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return None


def _find_pid(needle: str) -> int | None:
    """The process whose command line contains `needle` (the broker's JVM, by its config path)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes().decode(errors="replace"):
                return int(entry.name)
    return None


class Broker:
    """One throwaway local Kafka for a benchmark; every stack on it uses a fresh topic prefix."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="vidpipe-bench-kafka-"))
        self._kafka = LocalKafka(data_dir=self._dir / "kafka")
        self.bootstrap_servers = ""
        self.pid: int | None = None

    def __enter__(self) -> Broker:
        self._kafka.start()
        self.bootstrap_servers = self._kafka.bootstrap_servers
        self.pid = _find_pid(str((self._dir / "kafka").resolve() / "server.properties"))
        return self

    def __exit__(self, *_exc: object) -> None:
        self._kafka.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class StackConfig:
    """What one stack runs: the partitions of every topic, extra replicas of some stages, the
    first poll delay and the floor between checks (VIDPIPE_POLL_FIRST_S and
    VIDPIPE_POLL_INTERVAL_S, both `poll_interval_s`) and the stages' log level."""

    partitions: int = 3
    replicas: dict[str, int] = field(default_factory=dict)
    poll_interval_s: float = 0.1
    log_level: str = "INFO"
    stages: tuple[str, ...] = CORE_STAGES
    #: More VIDPIPE_* settings for every stage (a variant compared in the same run).
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "env": dict(self.env),
            "partitions": self.partitions,
            "replicas": {s: self.replicas.get(s, 1) for s in self.stages},
            "poll_interval_s": self.poll_interval_s,
            "log_level": self.log_level,
            "stages": list(self.stages),
            "database": "a fresh SQLite file per stack (WAL, as deployed)",
            "emulator": {**EMULATOR_CONFIG, "time_scale": 1.0},
        }


class BenchStack:
    """The emulator and every core stage on `broker`, each its own process, fresh state."""

    def __init__(self, broker: Broker, config: StackConfig) -> None:
        self.broker = broker
        self.config = config
        self.work = Path(tempfile.mkdtemp(prefix="vidpipe-bench-stack-"))
        self.prefix = f"bench{secrets.token_hex(4)}."
        self.db_path = self.work / "records.db"
        self.topics = Topics(self.prefix)
        env = {
            "VIDPIPE_KAFKA_BOOTSTRAP": broker.bootstrap_servers,
            "VIDPIPE_TOPIC_PREFIX": self.prefix,
            "VIDPIPE_TOPIC_PARTITIONS": str(config.partitions),
            "VIDPIPE_DATABASE_URL": f"sqlite:///{self.db_path}",
            "VIDPIPE_STORAGE_URL": f"file://{self.work / 'videos'}",
            "VIDPIPE_STATE_DIR": str(self.work / "state"),
            "VIDPIPE_POLL_FIRST_S": str(config.poll_interval_s),
            "VIDPIPE_POLL_INTERVAL_S": str(config.poll_interval_s),
            "VIDPIPE_LOG_LEVEL": config.log_level,
            "VIDPIPE_SHUTDOWN_TIMEOUT_S": "10",
            # Quotas lifted: the submitter never waits for a provider slot.
            "VIDPIPE_OPENAI_MAX_CONCURRENT_JOBS": "1000000",
            "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": "1000000",
            "VIDPIPE_DEFAULT_PROVIDER": PROVIDER,
            **config.env,
        }
        self.settings = Settings(
            kafka_bootstrap=broker.bootstrap_servers,
            topic_prefix=self.prefix,
            topic_partitions=config.partitions,
            database_url=env["VIDPIPE_DATABASE_URL"],
            storage_url=env["VIDPIPE_STORAGE_URL"],
            state_dir=self.work / "state",
            shutdown_timeout_s=10.0,
        )
        self.dev = DevStack(
            self.settings,
            state_dir=self.work / "state",
            services=(),
            emulator=True,
            extra_env=env,
        )

    def start(self) -> BenchStack:
        try:
            self.dev.start()
            self._configure_emulator()
            for stage in self.config.stages:
                for instance in range(self.config.replicas.get(stage, 1)):
                    self.dev.start_service(stage, instance)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.dev.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> BenchStack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _configure_emulator(self) -> None:
        assert self.dev.emulator_url is not None
        key = self.dev.env["VIDPIPE_OPENAI_API_KEY"]
        response = httpx.post(
            f"{self.dev.emulator_url}/_emulator/config",
            json=EMULATOR_CONFIG,
            headers={"api-key": key},
            timeout=10,
        )
        response.raise_for_status()

    def emulator_stats(self) -> dict[str, int]:
        assert self.dev.emulator_url is not None
        response = httpx.get(
            f"{self.dev.emulator_url}/_emulator/stats",
            headers={"api-key": self.dev.env["VIDPIPE_OPENAI_API_KEY"]},
            timeout=10,
        )
        response.raise_for_status()
        return {str(k): int(v) for k, v in response.json().items()}

    @property
    def pids(self) -> dict[str, int]:
        """Every process of the stack by name (stages, their replicas, the emulator, Kafka)."""
        found = {name: p.pid for name, p in self.dev.processes.items() if p.running}
        if self.broker.pid is not None:
            found["kafka"] = self.broker.pid
        return found

    def check_alive(self) -> None:
        for name, process in self.dev.processes.items():
            if not process.running:
                raise RuntimeError(f"{name} exited:\n{process.log_tail(20)}")

    def groups(self) -> dict[str, str]:
        """Each stage's consumer group id."""
        return {stage: self.settings.group_id(stage) for stage in self.config.stages}

    # -- the records database ---------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if not self.db_path.exists():
            return []
        # Read-only, beside the recorder's writer (WAL lets readers and the writer overlap).
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    def count_stored(self, id_prefix: str) -> tuple[int, int]:
        """(requests stored, requests failed or undeliverable) among ids starting `id_prefix`."""
        rows = self._query(
            "SELECT event_type, COUNT(DISTINCT request_id) FROM events"
            " WHERE request_id LIKE ? AND event_type IN"
            " ('VideoStored', 'JobFailed', 'DownloadUnavailable') GROUP BY event_type",
            (id_prefix + "%",),
        )
        counts = {str(kind): int(n) for kind, n in rows}
        return counts.get("VideoStored", 0), counts.get("JobFailed", 0) + counts.get(
            "DownloadUnavailable", 0
        )

    def failure_reasons(self, id_prefix: str, limit: int = 3) -> list[str]:
        """A few failed requests' failure events, for the error that stops the benchmark."""
        rows = self._query(
            "SELECT request_id, event_type, payload FROM events WHERE request_id LIKE ? AND"
            " event_type IN ('JobFailed', 'DownloadUnavailable') ORDER BY seq LIMIT ?",
            (id_prefix + "%", limit),
        )
        return [f"{rid} {kind}: {str(payload)[:400]}" for rid, kind, payload in rows]

    def event_times(self, id_prefix: str) -> dict[str, dict[str, tuple[float, float]]]:
        """request id -> event type -> (occurred_at, recorded_at) in unix seconds (the first of
        each type: a redelivered duplicate is refused by the recorder anyway)."""
        rows = self._query(
            "SELECT request_id, event_type, occurred_at, recorded_at FROM events"
            " WHERE request_id LIKE ? ORDER BY seq",
            (id_prefix + "%",),
        )
        found: dict[str, dict[str, tuple[float, float]]] = {}
        for request_id, event_type, occurred_at, recorded_at in rows:
            per_request = found.setdefault(str(request_id), {})
            per_request.setdefault(
                str(event_type), (_unix(str(occurred_at)), _unix(str(recorded_at)))
            )
        return found


def _unix(stamp: str) -> float:
    """A timestamp as SQLAlchemy stores it in SQLite (naive text, UTC) in unix seconds."""
    parsed = datetime.fromisoformat(stamp)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def read_hops(
    stack: BenchStack, published: Mapping[str, float], id_prefix: str
) -> dict[str, dict[str, float]]:
    """The per-hop split (hop_split) of every published request that was stored."""
    times = stack.event_times(id_prefix)
    splits: dict[str, dict[str, float]] = {}
    for request_id, published_at in published.items():
        seen = times.get(request_id, {})
        if not all(kind in seen for kind in ("JobSubmitted", "JobSucceeded", "VideoStored")):
            continue
        occurred = {kind: stamps[0] for kind, stamps in seen.items()}
        splits[request_id] = hop_split(published_at, occurred, seen["VideoStored"][1])
    return splits


# -- driving the pipeline -----------------------------------------------------------------------


def bench_request(request_id: str) -> GenerationRequested:
    return new_request(
        "vidpipe benchmark", request_id=request_id, provider=PROVIDER, seconds=REQUEST_SECONDS
    )


def _producer(bootstrap_servers: str) -> AIOKafkaProducer:
    # Like RequestPublisher (acks=all, idempotent) but batching: linger a little, big batches.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )


_HEADERS = [("content-type", b"application/json"), ("event-type", b"GenerationRequested")]


async def publish_requests(
    stack: BenchStack, request_ids: Sequence[str], schedule: Sequence[float] | None = None
) -> dict[str, float]:
    """Publish one request per id, keyed by request id, to the request topic: on `schedule`
    (seconds after the start, see send_schedule) or, when None, all at once. Returns each
    request's publish time (unix seconds, taken just before it is handed to the producer);
    returns once the broker has acknowledged all of them."""
    requests = [bench_request(rid) for rid in request_ids]
    # Serialised up front, so the pacing loop does nothing but send.
    payloads = [(r.request_id, r.model_dump_json().encode()) for r in requests]
    topic = stack.topics.for_event(GenerationRequested)
    producer = _producer(stack.broker.bootstrap_servers)
    await producer.start()
    published: dict[str, float] = {}
    try:
        pending = []
        began = time.monotonic()
        for index, (request_id, value) in enumerate(payloads):
            if schedule is not None:
                delay = began + schedule[index] - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            published[request_id] = time.time()
            pending.append(
                await producer.send(topic, value=value, key=request_id.encode(), headers=_HEADERS)
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return published


async def wait_stored(
    stack: BenchStack, id_prefix: str, count: int, timeout_s: float, poll_s: float = 0.25
) -> float:
    """Wait until `count` requests with ids starting `id_prefix` are stored; the monotonic time
    it was first seen. Fails at once when one fails or a process exits, else at `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    stored = 0
    while time.monotonic() < deadline:
        stored, failed = await asyncio.to_thread(stack.count_stored, id_prefix)
        if failed:
            reasons = await asyncio.to_thread(stack.failure_reasons, id_prefix)
            raise RuntimeError(f"{failed} benchmark requests failed: {reasons}")
        if stored >= count:
            return time.monotonic()
        stack.check_alive()
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"only {stored} of {count} requests stored after {timeout_s:.0f} s")


async def wait_group_members(stack: BenchStack, stage: str, members: int, timeout_s: float) -> None:
    """Wait until `stage`'s consumer group is Stable with `members` consumers (a replica that
    has not joined yet would otherwise join mid-run and stall the group in a rebalance)."""
    await wait_until_stable(
        stack.broker.bootstrap_servers,
        stack.settings.group_id(stage),
        members,
        timeout_s=timeout_s,
        check=stack.check_alive,
        poll_s=0.25,
    )


async def warm_up(stack: BenchStack, count: int = 5, timeout_s: float = 120.0) -> None:
    """Every group joined with all its replicas and a few requests carried end to end, so
    connections, caches and the first rebalance are behind us when the clock starts."""
    for stage in stack.config.stages:
        await wait_group_members(stack, stage, stack.config.replicas.get(stage, 1), timeout_s)
    await publish_requests(stack, [f"warm-{i}" for i in range(count)])
    await wait_stored(stack, "warm-", count, timeout_s)


# -- sampling CPU and lag -----------------------------------------------------------------------


class Sampler:
    """Samples every stack process's CPU seconds and every stage group's lag, every `every_s`,
    in the background, until stopped."""

    def __init__(self, stack: BenchStack, every_s: float = 1.0) -> None:
        self.stack = stack
        self.every_s = every_s
        self.started = time.monotonic()
        self.cpu_start: dict[str, float] = {}
        self.cpu_end: dict[str, float] = {}
        #: (seconds since start, {stage: lag or None})
        self.lag: list[tuple[float, dict[str, int | None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._topics: list[str] = []

    def _cpu(self) -> dict[str, float]:
        found = {}
        for name, pid in {**self.stack.pids, "bench": os.getpid()}.items():
            seconds = _process_cpu(pid)
            if seconds is not None:
                found[name] = seconds
        return found

    async def __aenter__(self) -> Sampler:
        self.started = time.monotonic()
        self.cpu_start = self._cpu()
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.cpu_end = self._cpu()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample_lag(self) -> dict[str, int | None]:
        bootstrap = self.stack.broker.bootstrap_servers
        lags: dict[str, int | None] = {}
        committed = {
            stage: await committed_offsets(bootstrap, group)
            for stage, group in self.stack.groups().items()
        }
        topics = sorted({tp.topic for offsets in committed.values() for tp in offsets})
        ends = await end_offsets(bootstrap, topics) if topics else {}
        for stage, offsets in committed.items():
            lags[stage] = group_lag(offsets, ends)
        return lags

    async def _loop(self) -> None:
        while True:
            began = time.monotonic()
            try:
                lags = await self._sample_lag()
            except KafkaError:
                lags = {}
            self.lag.append((round(began - self.started, 2), lags))
            await asyncio.sleep(max(0.0, self.every_s - (time.monotonic() - began)))

    def cpu_used(self) -> dict[str, float]:
        """CPU seconds each process used while sampling; replicas summed into their stage."""
        used: dict[str, float] = {}
        for name, end in self.cpu_end.items():
            base = name.split(".", 1)[0]
            used[base] = used.get(base, 0.0) + end - self.cpu_start.get(name, 0.0)
        return used

    def max_lag(self) -> dict[str, int]:
        peak: dict[str, int] = {}
        for _, lags in self.lag:
            for stage, lag in lags.items():
                if lag is not None:
                    peak[stage] = max(peak.get(stage, 0), lag)
        return peak

    def mean_lag(self) -> dict[str, float]:
        """Each stage's lag averaged over the samples after its first commit: where the backlog
        sat longest (with all requests published at once, every stage that reads the request
        topic peaks at N at the start, so the peak alone does not tell the bottleneck)."""
        seen: dict[str, list[int]] = {}
        for _, lags in self.lag:
            for stage, lag in lags.items():
                if lag is not None:
                    seen.setdefault(stage, []).append(lag)
        return {stage: statistics.fmean(values) for stage, values in seen.items()}

    def lag_series(self) -> list[dict[str, Any]]:
        return [{"t": t, **lags} for t, lags in self.lag]


# -- raw aiokafka baselines ---------------------------------------------------------------------


# The raw baselines' topics: as many partitions as the stacks' default.
RAW_PARTITIONS = 3


async def _fresh_topic(bootstrap_servers: str, partitions: int) -> str:
    topic = f"bench-raw-{secrets.token_hex(4)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
        # Until every partition has a leader: an earlier fetch of offsets only logs warnings.
        deadline = time.monotonic() + 30
        while True:
            described = await admin.describe_topics([topic])
            leaders = [p["leader"] for t in described for p in t.get("partitions", [])]
            if len(leaders) == partitions and all(leader >= 0 for leader in leaders):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} has no leader for every partition after 30 s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    return topic


async def _assigned_consumer(
    bootstrap_servers: str, topic: str, partitions: int
) -> AIOKafkaConsumer:
    """A consumer assigned every partition of `topic` at its end (no group: no rebalance)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def raw_hop_latency(bootstrap_servers: str, rate_per_s: float, seconds: float) -> list[float]:
    """One raw Kafka hop: an aiokafka producer (same settings as publish_requests) sends a
    timestamped message at `rate_per_s`, an aiokafka consumer on the same broker reads it;
    the seconds from send to receipt of each."""
    topic = await _fresh_topic(bootstrap_servers, RAW_PARTITIONS)
    consumer = await _assigned_consumer(bootstrap_servers, topic, RAW_PARTITIONS)
    producer = _producer(bootstrap_servers)
    await producer.start()
    schedule = send_schedule(rate_per_s, seconds)
    latencies: list[float] = []

    async def receive() -> None:
        while len(latencies) < len(schedule):
            batch = await consumer.getmany(timeout_ms=500)
            now = time.time()
            for records in batch.values():
                latencies.extend(
                    now - float(r.value) for r in records if r.value and r.value != b"warm-up"
                )

    try:
        # Warm-up, not counted: the producer's first send waits for metadata and a connection.
        for _ in range(3):
            await (await producer.send(topic, value=b"warm-up"))
        deadline = time.monotonic() + 30
        while not any((await consumer.getmany(timeout_ms=500)).values()):
            if time.monotonic() > deadline:
                raise TimeoutError("the raw hop's warm-up message never arrived")
        receiver = asyncio.create_task(receive())
        began = time.monotonic()
        for index, offset in enumerate(schedule):
            delay = began + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(topic, value=repr(time.time()).encode(), key=str(index).encode())
        await asyncio.wait_for(receiver, timeout=60)
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


async def raw_relay_throughput(bootstrap_servers: str, count: int, hops: int = HOPS) -> float:
    """Messages/s through `hops` raw consume -> produce relays in a row (one consumer and one
    producer per relay, commit-free, batches as they come), `count` messages published at once:
    the raw-aiokafka floor of carrying requests through as many hops as the pipeline's."""
    topics = [await _fresh_topic(bootstrap_servers, RAW_PARTITIONS) for _ in range(hops + 1)]
    consumers = [await _assigned_consumer(bootstrap_servers, t, RAW_PARTITIONS) for t in topics]
    producers = [_producer(bootstrap_servers) for _ in range(hops + 1)]
    for producer in producers:
        await producer.start()
    arrived = 0
    done = asyncio.Event()

    async def relay(hop: int) -> None:
        while True:
            batch = await consumers[hop].getmany(timeout_ms=200, max_records=500)
            futures = [
                await producers[hop + 1].send(topics[hop + 1], value=r.value, key=r.key)
                for records in batch.values()
                for r in records
            ]
            await asyncio.gather(*futures)

    async def sink() -> None:
        nonlocal arrived
        while arrived < count:
            batch = await consumers[hops].getmany(timeout_ms=200)
            arrived += sum(len(records) for records in batch.values())
        done.set()

    tasks = [asyncio.create_task(relay(hop)) for hop in range(hops)]
    tasks.append(asyncio.create_task(sink()))
    try:
        began = time.monotonic()
        futures = [
            await producers[0].send(topics[0], value=b"x" * 600, key=str(i).encode())
            for i in range(count)
        ]
        await asyncio.gather(*futures)
        await asyncio.wait_for(done.wait(), timeout=120)
        return count / (time.monotonic() - began)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for producer in producers:
            await producer.stop()
        for consumer in consumers:
            await consumer.stop()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while the block runs, as Ctrl-C does, so a benchmark
    killed politely still stops every process it started (their `finally` blocks run)."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def running_stack(broker: Broker, config: StackConfig) -> Iterator[BenchStack]:
    """A started BenchStack, stopped (every process) however the block ends, Ctrl-C included."""
    stack = BenchStack(broker, config)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()

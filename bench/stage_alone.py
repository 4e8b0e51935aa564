"""Each stage alone on a preloaded topic, beside a raw aiokafka loop over the same messages.

Every measured consumer is its own OS process, fresh for each run, on a fresh topic prefix
(its own topics and consumer group) of one local Kafka:

- the stage: `python -m vidpipe run NAME`, exactly what production runs, configured only by
  VIDPIPE_* settings (the provider emulator as azure-sora, its quota lifted);
- the raw loop (baseline): `python -m bench.stage_alone raw KIND`, a plain aiokafka consumer that
  does the stage's I/O and nothing else: per fetched batch, each message's HTTP call (or the
  batch's INSERTs), the output records sent without waiting, then all sends awaited and the
  offsets committed (at least once, like the stages). Same producer guarantees as the stages
  (acks=all, idempotent).

A run: preload a few warm-up messages (dealt over every input partition) and wait until the group
has committed them (the process is up, joined and warm), then publish the timed messages from an
already started producer (aiokafka publishes them two orders of magnitude faster than any stage
consumes, so the consumer meets a full topic), and time until the group's committed offsets
reach the end of every input partition. Figure: timed messages / that time. Afterwards the run
checks the work was done (every output record, every row).

Cases (stage vs raw):
- submitter: GenerationRequested -> Azure create at the emulator -> JobSubmitted;
  raw: consume + httpx POST + produce + commit.
- poller step: PollDue on `poller.due` (a job's released status check) for finished emulator
  jobs -> status GET -> JobSucceeded; raw: consume + httpx GET + produce + commit.
- fetcher: JobSucceeded of finished emulator jobs -> download of the 5 s 320x180 sample ->
  local folder storage -> VideoStored; raw: consume + streamed GET + file write (sha256, fsync,
  rename) + produce + commit.
- recorder on SQLite and on PostgreSQL (LocalPostgres): every event of N requests on its topic
  -> the records database; raw: consume + INSERT of each event's row (sqlite3 / psycopg), one
  commit per consumer batch.
- `vidpipe replay records`: the recorder's database of that run rebuilt into a fresh one (same
  backend), the CLI's own reported time (not its start-up); baseline: that run's raw consume +
  insert of the same events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from bench import BenchResult
from bench.stage_preload import (
    JobRef,
    Message,
    generation_requests,
    job_successes,
    poll_checks,
    recorder_messages,
)
from schemas.topics import Topics
from vidpipe.bus.admin import ensure_all_topics
from vidpipe.cli.processes import ManagedProcess, stage_argv
from vidpipe.dev.processes import free_ports
from vidpipe.ops.offsets import end_offsets
from vidpipe.settings import Settings

__all__ = [
    "Spread",
    "parse_replay_output",
    "ratio",
    "reached",
    "run",
    "spread",
]

EMULATOR_KEY = "bench-stage-alone-key"
_AZURE_API = "/openai/v1/"
# Jobs finish at once: the emulated schedule (7 s) takes 7 ms; assets never expire in a run.
_EMULATOR_CONFIG: dict[str, Any] = {
    "max_concurrent_jobs": None,
    "time_scale": 1000.0,
    "retention_seconds": 1e9,
}
_WARMUP_PROVIDER_MESSAGES = 10
_WARMUP_RECORDER_REQUESTS = 3
_EVENTS_PER_REQUEST = 7
# Committed offsets are read this often: the resolution of every timing (runs last seconds).
_POLL_S = 0.05
_RUN_TIMEOUT_S = 240.0
_START_TIMEOUT_S = 90.0
TARGET_RATIO = 0.5


# --- pure helpers (unit-tested) ----------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    def text(self) -> str:
        return f"{self.median:.0f} ({self.low:.0f}-{self.high:.0f})"


def spread(values: Sequence[float]) -> Spread:
    """Median with min and max of repeated measurements."""
    if not values:
        raise ValueError("no measurements")
    return Spread(statistics.median(values), min(values), max(values))


def ratio(stage: Sequence[float], raw: Sequence[float]) -> float:
    """Stage / raw, as median over median (each side's repeats are independent runs)."""
    return statistics.median(stage) / statistics.median(raw)


def reached(committed: dict[TopicPartition, int], targets: dict[TopicPartition, int]) -> bool:
    """True once every partition's committed offset is at its target (an empty partition,
    target 0, has nothing to commit, so a missing offset counts as 0)."""
    return all(committed.get(tp, 0) >= end for tp, end in targets.items())


_REPLAY_ROW = re.compile(r"^\W*(events read|events applied|time)\W+([\d.]+)", re.MULTILINE)


def parse_replay_output(text: str) -> dict[str, float]:
    """`events read`, `events applied` and `time` (seconds) from `vidpipe replay records`."""
    found = {name: float(value) for name, value in _REPLAY_ROW.findall(text)}
    missing = {"events read", "events applied", "time"} - set(found)
    if missing:
        raise RuntimeError(f"replay records printed no {sorted(missing)}:\n{text}")
    return found


# --- infrastructure ---------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    """The parent's environment without any VIDPIPE_* or provider setting of the caller's."""
    dropped = ("VIDPIPE_", "AZURE_OPENAI_", "OPENAI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Infra:
    """What every run shares: the broker, the emulator, PostgreSQL, a scratch folder."""

    bootstrap: str
    emulator_url: str
    pg_port: int
    workdir: Path
    jobs: list[JobRef] = field(default_factory=list)

    @property
    def endpoint_host(self) -> str:
        return self.emulator_url.removeprefix("http://")

    def stage_env(self, prefix: str, database_url: str, storage_dir: Path) -> dict[str, str]:
        return {
            **_clean_env(),
            "VIDPIPE_KAFKA_BOOTSTRAP": self.bootstrap,
            "VIDPIPE_TOPIC_PREFIX": prefix,
            "VIDPIPE_DATABASE_URL": database_url,
            "VIDPIPE_STORAGE_URL": f"file://{storage_dir}",
            "VIDPIPE_AZURE_ENDPOINT": self.emulator_url,
            "VIDPIPE_AZURE_API_KEY": EMULATOR_KEY,
            # Quotas lifted: the emulator allows any number of jobs, so must the submitter.
            "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": "1000000",
            "VIDPIPE_DEFAULT_PROVIDER": "azure-sora",
        }

    def new_pg_database(self, name: str) -> str:
        admin = f"host=127.0.0.1 port={self.pg_port} user=postgres dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{name}"


def _start_emulator(workdir: Path) -> tuple[ManagedProcess, str]:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "vidpipe", "emulator", "--host", "127.0.0.1", "--port", str(port)]
    env = {**_clean_env(), "VIDPIPE_EMULATOR_API_KEY": EMULATOR_KEY}
    process = ManagedProcess("emulator", argv, env, workdir / "emulator.log").start()
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/", timeout=0.5)
            break
        except httpx.TransportError:
            if not process.running or time.monotonic() > deadline:
                process.stop(5)
                raise RuntimeError(f"the emulator did not answer:\n{process.log_tail()}") from None
            time.sleep(0.1)
    response = httpx.post(
        f"{url}/_emulator/config", json=_EMULATOR_CONFIG, headers={"api-key": EMULATOR_KEY}
    )
    response.raise_for_status()
    return process, url


async def _create_jobs(emulator_url: str, count: int, seconds: int) -> list[JobRef]:
    """`count` finished Azure jobs at the emulator (the poller's and fetcher's subjects)."""
    async with httpx.AsyncClient(
        base_url=f"{emulator_url}{_AZURE_API}",
        headers={"api-key": EMULATOR_KEY},
        params={"api-version": "preview"},
    ) as client:
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> JobRef:
            async with gate:
                body = {
                    "model": "sora",
                    "prompt": f"bench job {i}",
                    "width": 480,
                    "height": 480,
                    "n_seconds": seconds,
                }
                created = await client.post("video/generations/jobs", json=body)
                created.raise_for_status()
                job_id = str(created.json()["id"])
                deadline = time.monotonic() + 30
                while True:
                    seen = (await client.get(f"video/generations/jobs/{job_id}")).json()
                    if seen["status"] == "succeeded":
                        return JobRef(job_id, str(seen["generations"][0]["id"]))
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"emulator job {job_id} stuck in {seen['status']}")
                    await asyncio.sleep(0.02)

        return list(await asyncio.gather(*(one(i) for i in range(count))))


class _Feeder:
    """The bench's producer, started before any clock: what a run publishes, and where each
    partition's log ends after it (from the sends' own offsets, so no extra broker call falls
    inside a timing)."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )

    async def __aenter__(self) -> _Feeder:
        await self._producer.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._producer.stop()

    async def publish(
        self, messages: Sequence[Message], *, every_partition_of: int = 0
    ) -> dict[TopicPartition, int]:
        """Publish `messages`; the end offset of every partition written. With
        `every_partition_of=N` (the warm-up), a topic's keys are dealt round its N partitions
        (each key still on one partition, so a request's order holds) instead of hashed, so every
        input partition has taken a write (its new leader is ready) before the clock starts."""
        dealt: dict[str, dict[bytes, int]] = defaultdict(dict)
        sends = []
        for m in messages:
            partition = None
            if every_partition_of:
                keys = dealt[m.topic]
                partition = keys.setdefault(m.key, len(keys) % every_partition_of)
            sends.append(
                await self._producer.send(
                    m.topic, m.value, key=m.key, headers=list(m.headers), partition=partition
                )
            )
        ends: dict[TopicPartition, int] = {}
        for sent in await asyncio.gather(*sends):
            tp = TopicPartition(sent.topic, sent.partition)
            ends[tp] = max(ends.get(tp, 0), sent.offset + 1)
        return ends


async def _ends(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    return await end_offsets(bootstrap, sorted(set(topics)))


async def _published(bootstrap: str, topic: str) -> int:
    """Records on `topic` (fresh per run, so everything on it came from the measured process)."""
    return sum((await _ends(bootstrap, [topic])).values())


class _GroupWatch:
    """Reads a group's committed offsets every _POLL_S through one long-lived admin client
    (what vidpipe.ops.offsets.committed_offsets reads, without a new client per look: on two
    cores that client's start-up would be measurable load)."""

    def __init__(self, bootstrap: str) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-watch")

    async def __aenter__(self) -> _GroupWatch:
        await self._admin.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._admin.close()

    async def until(
        self,
        group: str,
        targets: dict[TopicPartition, int],
        process: ManagedProcess,
        timeout_s: float,
    ) -> float:
        """Wait until `group` has committed `targets`; the perf_counter time it was seen."""
        deadline = time.monotonic() + timeout_s
        committed: dict[TopicPartition, int] = {}
        while time.monotonic() < deadline:
            try:
                offsets = await self._admin.list_consumer_group_offsets(group)
                committed = {tp: m.offset for tp, m in offsets.items() if m.offset >= 0}
            except KafkaError:  # the group's coordinator is still being set up
                committed = {}
            if reached(committed, targets):
                return time.perf_counter()
            if not process.running:
                raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
            await asyncio.sleep(_POLL_S)
        behind = {f"{tp.topic}/{tp.partition}": (committed.get(tp), e) for tp, e in targets.items()}
        raise TimeoutError(
            f"{group} behind after {timeout_s:.0f} s: {behind}\n{process.log_tail()}"
        )


# --- one run ----------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """One measured process over one preloaded stream."""

    label: str
    group: str
    process: ManagedProcess
    warmup: list[Message]
    timed: list[Message]
    partitions: int


async def _timed_run(infra: Infra, spec: RunSpec) -> dict[str, float]:
    """Messages/s of the timed part (and how long the process took to be ready); the process
    is stopped whatever happens."""
    async with _Feeder(infra.bootstrap) as feeder, _GroupWatch(infra.bootstrap) as watch:
        await feeder.publish(spec.warmup, every_partition_of=spec.partitions)
        # Every input partition (an untouched one ends at 0, which counts as reached).
        ends = await _ends(infra.bootstrap, [m.topic for m in spec.warmup + spec.timed])
        launched = time.perf_counter()
        spec.process.start()
        try:
            ready = await watch.until(spec.group, ends, spec.process, _START_TIMEOUT_S)
            started = time.perf_counter()
            ends.update(await feeder.publish(spec.timed))
            finished = await watch.until(spec.group, ends, spec.process, _RUN_TIMEOUT_S)
        finally:
            stopping = time.perf_counter()
            spec.process.stop(20)
    return {
        "msgs_per_s": len(spec.timed) / (finished - started),
        "seconds": finished - started,
        "ready_s": ready - launched,
        "stop_s": time.perf_counter() - stopping,
    }


def _new_prefix() -> str:
    return f"b{uuid.uuid4().hex[:8]}."


def raw_process(
    kind: str, prefix: str, group: str, env: dict[str, str], logs: Path
) -> ManagedProcess:
    argv = [sys.executable, "-m", "bench.stage_alone", "raw", kind, "--group", group]
    return ManagedProcess(f"raw-{kind}", argv, env, logs / f"raw-{kind}-{prefix}log")


@dataclass
class CaseResult:
    stage_rates: list[float] = field(default_factory=list)
    raw_rates: list[float] = field(default_factory=list)
    messages: int = 0
    #: Every run's figures in the order run: variant, repeat, msgs_per_s, seconds (timed part),
    #: ready_s (start until the warm-up was committed), stop_s (SIGTERM until it exited).
    runs: list[dict[str, Any]] = field(default_factory=list)


# A case builds (warm-up, timed) messages for a prefix.
Build = Callable[[Topics], tuple[list[Message], list[Message]]]


@dataclass
class Case:
    name: str
    stage: str
    raw_kind: str
    build: Build
    #: The output topic whose record count proves the work (None: count the database's rows).
    output: Callable[[Topics], str] | None
    backend: str = "sqlite"


async def _prepare_run(infra: Infra, case: Case, variant: str) -> tuple[RunSpec, Topics, str, Path]:
    prefix = _new_prefix()
    settings = Settings(kafka_bootstrap=infra.bootstrap, topic_prefix=prefix)
    await ensure_all_topics(settings, infra.bootstrap)
    topics = settings.topics
    run_dir = infra.workdir / prefix.rstrip(".")
    run_dir.mkdir()
    if case.backend == "postgres":
        database_url = infra.new_pg_database(f"{prefix.rstrip('.')}_{variant}")
    else:
        database_url = f"sqlite:///{run_dir / 'records.db'}"
    env = infra.stage_env(prefix, database_url, run_dir / "videos")
    warmup, timed = case.build(topics)
    if variant == "stage":
        group = settings.group_id(case.stage)
        process = ManagedProcess(
            case.stage, stage_argv(case.stage), env, run_dir / f"{case.stage}.log"
        )
    else:
        group = f"{prefix}raw.{case.raw_kind}"
        process = raw_process(case.raw_kind, prefix, group, env, run_dir)
    spec = RunSpec(case.name, group, process, warmup, timed, settings.topic_partitions)
    return spec, topics, database_url, run_dir


async def _check_output(
    infra: Infra, case: Case, topics: Topics, database_url: str, n: int
) -> None:
    """The measured process did the work: every output record, or every row."""
    if case.output is not None:
        got = await _published(infra.bootstrap, case.output(topics))
        if got < n:
            raise RuntimeError(f"{case.name}: {got} of {n} records on {case.output(topics)}")
        return
    rows = _count_rows(database_url)
    if rows < n:
        raise RuntimeError(f"{case.name}: {rows} of {n} events in the database")


def _count_rows(database_url: str) -> int:
    """Rows in the recorder's `events` log, or the raw loop's `raw_events` table."""
    total = 0
    for table in ("events", "raw_events"):
        query = f"SELECT count(*) FROM {table}"  # noqa: S608 - fixed names
        try:
            if database_url.startswith("sqlite"):
                with contextlib.closing(sqlite3.connect(database_url.split("///", 1)[1])) as db:
                    total += int(db.execute(query).fetchone()[0])
            else:
                with psycopg.connect(database_url) as conn:
                    row = conn.execute(query).fetchone()
                    total += int(row[0]) if row else 0
        except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
            continue
    return total


def _replay(infra: Infra, source_url: str, backend: str, run_dir: Path, events: int) -> float:
    """`vidpipe replay records` of `source_url` into a fresh database: events/s it reports."""
    if backend == "postgres":
        target = infra.new_pg_database(f"{run_dir.name}_replay")
    else:
        target = f"sqlite:///{run_dir / 'replayed.db'}"
    env = {**_clean_env(), "COLUMNS": "200", "VIDPIPE_DATABASE_URL": source_url}
    argv = [sys.executable, "-m", "vidpipe", "replay", "records", "--target-url", target]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"replay records failed ({done.returncode}):\n{done.stderr[-2000:]}")
    figures = parse_replay_output(done.stdout)
    if figures["events applied"] < events:
        raise RuntimeError(f"replay applied {figures['events applied']:.0f} of {events} events")
    if figures["time"] <= 0:  # printed with two decimals: a run this short says nothing
        raise RuntimeError(f"replay records took {figures['time']} s; replay more events")
    return figures["events read"] / figures["time"]


async def _measure_case(
    infra: Infra, case: Case, repeats: int, replays: list[float] | None
) -> CaseResult:
    result = CaseResult()
    for repeat in range(repeats):
        # Stage then raw within each repeat: drift on a shared machine hits both alike.
        for variant in ("stage", "raw"):
            spec, topics, database_url, run_dir = await _prepare_run(infra, case, variant)
            figures = await _timed_run(infra, spec)
            total = len(spec.warmup) + len(spec.timed)
            await _check_output(infra, case, topics, database_url, total)
            result.messages = len(spec.timed)
            rates = result.stage_rates if variant == "stage" else result.raw_rates
            rates.append(figures["msgs_per_s"])
            result.runs.append({"variant": variant, "repeat": repeat, **figures})
            if variant == "stage" and replays is not None:
                replays.append(_replay(infra, database_url, case.backend, run_dir, total))
    return result


# --- the cases --------------------------------------------------------------------------------


def _cases(infra: Infra, provider_n: int, recorder_requests: int) -> list[Case]:
    warm_jobs = infra.jobs[:_WARMUP_PROVIDER_MESSAGES]
    timed_jobs = infra.jobs[_WARMUP_PROVIDER_MESSAGES : _WARMUP_PROVIDER_MESSAGES + provider_n]
    host = infra.endpoint_host

    def submitter(t: Topics) -> tuple[list[Message], list[Message]]:
        tag = uuid.uuid4().hex[:6]  # fresh request ids: each is a new provider job
        return (
            generation_requests(_WARMUP_PROVIDER_MESSAGES, f"w{tag}", t),
            generation_requests(provider_n, f"t{tag}", t),
        )

    def poller(t: Topics) -> tuple[list[Message], list[Message]]:
        return poll_checks(warm_jobs, "w", t, host), poll_checks(timed_jobs, "t", t, host)

    def fetcher(t: Topics) -> tuple[list[Message], list[Message]]:
        return job_successes(warm_jobs, "w", t, host), job_successes(timed_jobs, "t", t, host)

    def recorder(t: Topics) -> tuple[list[Message], list[Message]]:
        return (
            recorder_messages(_WARMUP_RECORDER_REQUESTS, "w", t),
            recorder_messages(recorder_requests, "t", t),
        )

    return [
        Case(
            "submitter (GenerationRequested -> create -> JobSubmitted)",
            "submitter",
            "submitter",
            submitter,
            lambda t: t.job_submitted,
        ),
        Case(
            "poller step (PollDue -> status GET -> JobSucceeded)",
            "poller",
            "poller",
            poller,
            lambda t: t.job_succeeded,
        ),
        Case(
            "fetcher (JobSucceeded -> 5 s MP4 -> folder -> VideoStored)",
            "fetcher",
            "fetcher",
            fetcher,
            lambda t: t.video_stored,
        ),
        Case("recorder, SQLite", "recorder", "recorder", recorder, None, "sqlite"),
        Case("recorder, PostgreSQL", "recorder", "recorder", recorder, None, "postgres"),
    ]


def run(
    quick: bool = False, *, only: Sequence[str] = (), keep_dir: Path | None = None
) -> BenchResult:
    """The benchmark; `only` picks cases by their stage name (`recorder` both backends),
    `keep_dir` keeps every process's log there (the default is a temp dir, removed)."""
    from vidpipe.dev.kafka import LocalKafka
    from vidpipe.dev.postgres import LocalPostgres

    provider_n, recorder_requests, repeats = (200, 500, 2) if quick else (1000, 2000, 3)
    samples: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    with contextlib.ExitStack() as stack:
        if keep_dir is None:
            keep_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vidpipe-b-")))
        workdir = keep_dir
        workdir.mkdir(parents=True, exist_ok=True)
        kafka = LocalKafka()
        stack.callback(kafka.stop)
        kafka.start()
        pg = LocalPostgres()
        stack.callback(pg.stop)
        pg.start()
        emulator, emulator_url = _start_emulator(workdir)
        stack.callback(emulator.stop, 5)
        infra = Infra(kafka.bootstrap_servers, emulator_url, pg.port, workdir)
        infra.jobs = asyncio.run(
            _create_jobs(emulator_url, _WARMUP_PROVIDER_MESSAGES + provider_n, seconds=5)
        )
        replays: dict[str, list[float]] = {"sqlite": [], "postgres": []}
        raw_inserts: dict[str, list[float]] = {}
        for case in _cases(infra, provider_n, recorder_requests):
            if only and case.stage not in only:
                continue
            is_recorder = case.stage == "recorder"
            measured = asyncio.run(
                _measure_case(infra, case, repeats, replays[case.backend] if is_recorder else None)
            )
            if is_recorder:
                raw_inserts[case.backend] = measured.raw_rates
            rows.append(
                _row(case.name, measured.messages, measured.stage_rates, measured.raw_rates)
            )
            samples.append(
                {
                    "case": case.name,
                    "messages": measured.messages,
                    "stage_msgs_per_s": measured.stage_rates,
                    "raw_msgs_per_s": measured.raw_rates,
                    "runs": measured.runs,
                }
            )
        recorder_events = (recorder_requests + _WARMUP_RECORDER_REQUESTS) * _EVENTS_PER_REQUEST
        for backend, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
            if backend not in raw_inserts:
                continue
            name = f"replay records, {label}"
            rows.append(_row(name, recorder_events, replays[backend], raw_inserts[backend]))
            samples.append(
                {
                    "case": name,
                    "messages": recorder_events,
                    "stage_msgs_per_s": replays[backend],
                    "raw_msgs_per_s": raw_inserts[backend],
                }
            )
    return BenchResult(
        name="stage_alone",
        title="Each stage alone on a preloaded topic vs a raw aiokafka loop (messages/s)",
        columns=[
            "stage",
            "messages",
            "stage msg/s, median (min-max)",
            "raw loop msg/s, median (min-max)",
            "stage / raw",
            f">= {TARGET_RATIO}x",
        ],
        rows=rows,
        samples=samples,
        details={
            "provider_messages": provider_n,
            "recorder_requests": recorder_requests,
            "events_per_request": _EVENTS_PER_REQUEST,
            "repeats": repeats,
            "warmup_provider_messages": _WARMUP_PROVIDER_MESSAGES,
            "warmup_recorder_requests": _WARMUP_RECORDER_REQUESTS,
            "poll_resolution_s": _POLL_S,
            "emulator_config": _EMULATOR_CONFIG,
        },
        notes=[
            "each run a fresh process on fresh topics; time from the timed messages' publish"
            " until the group's committed offsets reach the end; median (min-max) of"
            f" {repeats} runs, stage and raw alternated",
            "raw loop: aiokafka getmany, per message the same HTTP call (httpx) or per batch"
            " the INSERTs (sqlite3 / psycopg, one commit per batch), sends awaited per batch,"
            " then commit; no validation, no dedupe, no projection, no logging",
            "replay records: the CLI's own reported time over the recorder run's database"
            " (warm-up events included) into a fresh one; baseline: the same run's raw"
            " consume + insert of the same events",
            "emulator: one uvicorn process, jobs finish at once, no quota; stages log at the"
            " default INFO level",
        ],
    )


def _row(name: str, messages: int, stage: list[float], raw: list[float]) -> list[str]:
    factor = ratio(stage, raw)
    return [
        name,
        str(messages),
        spread(stage).text(),
        spread(raw).text(),
        f"{factor:.2f}x",
        "yes" if factor >= TARGET_RATIO else "no",
    ]


# --- the raw loops (run as `python -m bench.stage_alone raw KIND`) ----------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


class _RawStep:
    """One raw loop's per-message work; `flush` ends a batch (before the sends are awaited)."""

    topics: list[str]

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[str, bytes]]:
        raise NotImplementedError

    async def flush(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class _HttpStep(_RawStep):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.t = settings.topics
        endpoint = os.environ["VIDPIPE_AZURE_ENDPOINT"]
        self.http = httpx.AsyncClient(
            base_url=f"{endpoint}{_AZURE_API}",
            headers={"api-key": os.environ["VIDPIPE_AZURE_API_KEY"]},
            params={"api-version": "preview"},
            timeout=30,
        )

    async def aclose(self) -> None:
        await self.http.aclose()


class _RawSubmitter(_HttpStep):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.topics = [self.t.generation_requested]

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[str, bytes]]:
        req = json.loads(record.value or b"{}")
        width, height = str(req["size"]).split("x")
        body = {
            "model": req.get("model") or "sora",
            "prompt": req["prompt"],
            "width": int(width),
            "height": int(height),
            "n_seconds": req["seconds"],
            "n_variants": req["variants"],
        }
        answer = await self.http.post(
            "video/generations/jobs", json=body, headers={"Idempotency-Key": req["request_id"]}
        )
        answer.raise_for_status()
        out = {
            "event_id": str(uuid.uuid4()),
            "event_type": "JobSubmitted",
            "request_id": req["request_id"],
            "occurred_at": _now(),
            "provider": "azure-sora",
            "provider_job_id": answer.json()["id"],
            "request": req,
        }
        return [(self.t.job_submitted, json.dumps(out).encode())]


class _RawPoller(_HttpStep):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # job.submitted too, so bench.raw_pipeline can chain the loops (empty when alone).
        self.topics = [self.t.due("poller"), self.t.job_submitted]

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[str, bytes]]:
        due = json.loads(record.value or b"{}")
        answer = await self.http.get(f"video/generations/jobs/{due['provider_job_id']}")
        answer.raise_for_status()
        job = answer.json()
        done = job["status"] == "succeeded"
        out = {
            "event_id": str(uuid.uuid4()),
            "event_type": "JobSucceeded" if done else "JobProgressed",
            "request_id": due["request_id"],
            "occurred_at": _now(),
            "provider": due["provider"],
            "provider_job_id": due["provider_job_id"],
            "generation_ids": [g["id"] for g in job.get("generations", [])],
            "request": due.get("request"),
        }
        return [(self.t.job_succeeded if done else self.t.job_progressed, json.dumps(out).encode())]


class _RawFetcher(_HttpStep):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.topics = [self.t.job_succeeded]
        self.folder = Path(settings.storage_url.removeprefix("file://"))
        self.folder.mkdir(parents=True, exist_ok=True)

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[str, bytes]]:
        event = json.loads(record.value or b"{}")
        outputs = []
        for generation_id in event["generation_ids"]:
            path = self.folder / f"{event['request_id']}-{generation_id}.mp4"
            partial = path.with_suffix(".part")
            digest = hashlib.sha256()
            size = 0
            url = f"video/generations/{generation_id}/content/video"
            async with self.http.stream("GET", url) as answer:
                answer.raise_for_status()
                with partial.open("wb") as f:
                    async for chunk in answer.aiter_bytes(64 * 1024):
                        f.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                    f.flush()
                    os.fsync(f.fileno())
            partial.rename(path)
            out = {
                "event_id": str(uuid.uuid4()),
                "event_type": "VideoStored",
                "request_id": event["request_id"],
                "occurred_at": _now(),
                "generation_id": generation_id,
                "storage_url": path.as_uri(),
                "size_bytes": size,
                "sha256": digest.hexdigest(),
            }
            outputs.append((self.t.video_stored, json.dumps(out).encode()))
        return outputs


_RAW_COLUMNS = "event_id, request_id, event_type, topic, occurred_at, recorded_at, payload"


def _row_of(record: ConsumerRecord[bytes, bytes]) -> tuple[str, ...]:
    value = (record.value or b"{}").decode()
    event = json.loads(value)
    return (
        event["event_id"],
        event["request_id"],
        event["event_type"],
        record.topic,
        event["occurred_at"],
        _now(),
        value,
    )


class _RawSqliteRecorder(_RawStep):
    def __init__(self, settings: Settings) -> None:
        self.topics = [t for t in settings.topics.public() if t != settings.topics.deadletter]
        self.db = sqlite3.connect(settings.database_url.split("///", 1)[1])
        # The pragmas vidpipe.db sets on SQLite: WAL, synchronous=NORMAL.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE raw_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT,"
            " request_id TEXT, event_type TEXT, topic TEXT, occurred_at TEXT, recorded_at TEXT,"
            " payload TEXT)"
        )
        self.pending: list[tuple[str, ...]] = []

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[str, bytes]]:
        self.pending.append(_row_of(record))
        return []

    async def flush(self) -> None:
        with self.db:  # one transaction per consumer batch
            self.db.executemany(
                f"INSERT INTO raw_events ({_RAW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                self.pending,
            )
        self.pending.clear()

    async def aclose(self) -> None:
        self.db.close()


class _RawPostgresRecorder(_RawStep):
    def __init__(self, settings: Settings, conn: psycopg.AsyncConnection[Any]) -> None:
        self.topics = [t for t in settings.topics.public() if t != settings.topics.deadletter]
        self.conn = conn
        self.pending: list[tuple[str, ...]] = []

    @classmethod
    async def open(cls, settings: Settings) -> _RawPostgresRecorder:
        conn = await psycopg.AsyncConnection.connect(settings.database_url)
        await conn.execute(
            "CREATE TABLE raw_events (seq BIGSERIAL PRIMARY KEY, event_id TEXT, request_id TEXT,"
            " event_type TEXT, topic TEXT, occurred_at TIMESTAMPTZ, recorded_at TIMESTAMPTZ,"
            " payload JSON)"
        )
        await conn.commit()
        return cls(settings, conn)

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[str, bytes]]:
        self.pending.append(_row_of(record))
        return []

    async def flush(self) -> None:
        async with self.conn.transaction(), self.conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO raw_events ({_RAW_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",  # noqa: S608
                self.pending,
            )
        self.pending.clear()

    async def aclose(self) -> None:
        await self.conn.close()


async def _open_step(kind: str, settings: Settings) -> _RawStep:
    if kind == "submitter":
        return _RawSubmitter(settings)
    if kind == "poller":
        return _RawPoller(settings)
    if kind == "fetcher":
        return _RawFetcher(settings)
    if kind == "recorder":
        if settings.database_url.startswith("sqlite"):
            return _RawSqliteRecorder(settings)
        return await _RawPostgresRecorder.open(settings)
    raise SystemExit(f"unknown raw loop {kind!r}")


async def _raw_loop(kind: str, group: str) -> None:
    """Consume → work → send → await the sends → commit, per fetched batch, until SIGTERM."""
    settings = Settings()
    bootstrap = settings.kafka_bootstrap or ""
    step = await _open_step(kind, settings)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        *step.topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    headers = [("content-type", b"application/json")]
    # Where the loop's time went (seconds per phase, batches, messages): printed at exit into
    # the process's log, to tell a slow baseline's cause from the bench's.
    spent: defaultdict[str, float] = defaultdict(float)
    try:
        while not stop.is_set():
            began = time.perf_counter()
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batch:
                continue
            phase = time.perf_counter()
            spent["fetch_s"] += phase - began
            sends: list[Awaitable[Any]] = []
            for records in batch.values():
                spent["messages"] += len(records)
                for record in records:
                    for topic, value in await step.handle(record):
                        key = record.key
                        sends.append(await producer.send(topic, value, key=key, headers=headers))
            phase = _lap(spent, "handle_s", phase)
            await step.flush()
            phase = _lap(spent, "flush_s", phase)
            await asyncio.gather(*sends)
            phase = _lap(spent, "sends_s", phase)
            await consumer.commit()
            _lap(spent, "commit_s", phase)
            spent["batches"] += 1
    finally:
        print(json.dumps({"raw_loop": kind, **spent}), flush=True)
        await consumer.stop()
        await producer.stop()
        await step.aclose()


def _lap(spent: defaultdict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    spent[name] += now - since
    return now


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command")
    raw = commands.add_parser("raw", help="run one raw loop (the benchmark starts these)")
    raw.add_argument("kind", choices=["submitter", "poller", "fetcher", "recorder"])
    raw.add_argument("--group", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", action="append", default=[], help="a stage name (repeatable)")
    parser.add_argument("--keep-dir", type=Path, help="keep every process's log here")
    args = parser.parse_args()
    if args.command == "raw":
        asyncio.run(_raw_loop(args.kind, args.group))
    else:
        print(run(quick=args.quick, only=args.only, keep_dir=args.keep_dir).markdown())


if __name__ == "__main__":
    _main()

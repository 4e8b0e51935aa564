"""Generations through every stage on a three-broker KRaft cluster that loses brokers.

Three local JVMs, each in a network namespace of its own (`LocalKafkaCluster(isolated=True)`);
topics with replication factor 3 and min.insync.replicas 2, every producer acks=all and
idempotent. While the requests are published and worked on: one broker is stopped and started
again, one is cut off the network (its link taken down: clients, replication and the quorum all
lose it) and reconnected, and the leader of a `generation.requested` partition is SIGKILLed and
started again. Afterwards the books (records, events, storage, the emulator's jobs, the
dead-letter topic) must show every request stored once, one row each, one provider job each.

`make test` runs 200 requests over 100 s; VIDPIPE_CLUSTER_REQUESTS (and VIDPIPE_CLUSTER_WINDOW_S)
make the long run of `make chaos`. The table is printed (`-s`) and kept in .vidpipe/chaos/.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.registry import STAGES
from tests.chaos.conftest import CHAOS_KEY, CONCURRENT_JOBS
from tests.chaos.runner import (
    ChaosRun,
    _publish_all,
    _read_books,
    _wait_quiet,
    _wait_terminal,
    _watch_for_crashes,
)
from tests.e2e.harness import close_pipeline, open_pipeline
from vidpipe.dev.emulator.config import EmulatorConfig
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.dev.kafka import LocalKafkaCluster

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

REQUESTS = int(os.environ.get("VIDPIPE_CLUSTER_REQUESTS", "200"))
# Two requests a second: publishing lasts past the last fault, so every fault meets traffic.
WINDOW_S = float(os.environ.get("VIDPIPE_CLUSTER_WINDOW_S", str(max(100.0, REQUESTS / 2))))
DRAIN_S = float(os.environ.get("VIDPIPE_CLUSTER_DRAIN_S", str(150 + REQUESTS / 2)))
REPORT_DIR = Path(os.environ.get("VIDPIPE_CHAOS_REPORT_DIR", ".vidpipe/chaos"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalKafkaCluster]:
    with LocalKafkaCluster(tmp_path / "cluster", 3, isolated=True) as running:
        yield running


@pytest.fixture
def cluster_emulator() -> Iterator[EmulatorThread]:
    config = EmulatorConfig(
        api_key=CHAOS_KEY, time_scale=10.0, max_concurrent_jobs=CONCURRENT_JOBS, seed=1
    )
    with EmulatorThread(config) as server:
        yield server


async def _leader_of(bootstrap: str, topic: str, partition: int) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for item in described[0]["partitions"]:
        if item["partition"] == partition:
            return int(item["leader"])
    raise AssertionError(f"{topic}/{partition} not described: {described}")


async def _faults(run: ChaosRun, cluster: LocalKafkaCluster, topic: str) -> float:
    """Stop/start, cut/reconnect, kill the leader: one after the other, each healed before the
    next, so two brokers are never lost at once (min.insync.replicas=2 of 3 allows one)."""

    async def at(share: float) -> None:
        wait = run._started + share * run.window_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # the plan's timetable, not a wait for a condition

    await at(0.15)
    run.note("broker 3 stopping")
    await asyncio.to_thread(cluster.node(3).stop)
    await asyncio.sleep(3)
    await asyncio.to_thread(cluster.node(3).start)
    run.broker_restarts += 1
    run.note("broker 3 back")

    await at(0.4)
    run.note("broker 2 cut off the network")
    cluster.cut(2)
    # Longer than replica.lag.time.max.ms (10 s) and the broker session (9 s): the cluster
    # moves leadership away and shrinks the ISR, as it would for a real partition.
    await asyncio.sleep(14)
    cluster.reconnect(2)
    run.broker_restarts += 1
    run.note("broker 2 reconnected")

    await at(0.7)
    leader = await _leader_of(run.pipeline.bootstrap_servers, topic, 0)
    run.note(f"SIGKILL broker {leader}, leader of {topic}/0")
    await asyncio.to_thread(cluster.kill, leader)
    killed_at = time.monotonic()
    await asyncio.sleep(3)
    await asyncio.to_thread(cluster.node(leader).start)
    run.broker_restarts += 1
    run.note(f"broker {leader} back")
    return killed_at


async def _publish(run: ChaosRun) -> float:
    await _publish_all(run)
    run.note("last request published")
    return time.monotonic()


@pytest.mark.timeout(int(WINDOW_S + DRAIN_S + 300))
async def test_every_request_ends_once_while_the_cluster_loses_brokers(
    cluster: LocalKafkaCluster,
    cluster_emulator: EmulatorThread,
    test_database_url: str,
    unique_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    began = time.monotonic()
    replication = {
        "VIDPIPE_TOPIC_REPLICATION_FACTOR": "3",
        "VIDPIPE_TOPIC_MIN_INSYNC_REPLICAS": "2",
    }
    # Here too: the dev stack creates the topics from this process's settings.
    for name, value in replication.items():
        monkeypatch.setenv(name, value)
    pipeline = await open_pipeline(
        bootstrap_servers=cluster.bootstrap_servers,
        database_url=test_database_url,
        prefix=unique_prefix,
        tmp_path=tmp_path,
        provider_env={
            "VIDPIPE_AZURE_ENDPOINT": cluster_emulator.azure_endpoint,
            "VIDPIPE_AZURE_API_KEY": CHAOS_KEY,
            "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": str(CONCURRENT_JOBS),
            "VIDPIPE_OPENAI_BASE_URL": cluster_emulator.openai_base_url,
            "VIDPIPE_OPENAI_API_KEY": CHAOS_KEY,
            "VIDPIPE_OPENAI_MAX_CONCURRENT_JOBS": str(CONCURRENT_JOBS),
        },
        extra_env={
            **replication,
            "VIDPIPE_HTTP_TIMEOUT_S": "5",
            "VIDPIPE_SHUTDOWN_TIMEOUT_S": "5",
            "VIDPIPE_HEALTH_INTERVAL_S": "1",
        },
    )
    run = ChaosRun(
        pipeline=pipeline,
        kafka=cluster.node(1),
        emulator=cluster_emulator,
        stages=STAGES,
        requests=REQUESTS,
        window_s=WINDOW_S,
        drain_timeout_s=DRAIN_S,
        seed=0,
    )
    topic = pipeline.settings.topics.generation_requested
    try:
        for stage in STAGES:
            run.pipeline.start(stage)
        for stage in STAGES:
            await run.pipeline.wait_for_group(stage, 1, timeout_s=120)
        run._started = time.monotonic()
        watch = asyncio.create_task(_watch_for_crashes(run))
        try:
            async with asyncio.TaskGroup() as group:
                faults = group.create_task(_faults(run, cluster, topic))
                published = group.create_task(_publish(run))
            calm = time.monotonic()
            run.note("faults over, every request published; draining")
            pending = await _wait_terminal(run)
            drained_s = time.monotonic() - calm
            if not pending:
                await _wait_quiet(run, timeout_s=120)
        finally:
            watch.cancel()
        report = await _read_books(run, [], drained_s=drained_s, pending=pending)
        replicas = await _replication_of(pipeline.bootstrap_servers, topic)
    finally:
        await close_pipeline(pipeline)
    kept = report.write(REPORT_DIR)
    print(
        f"\n{report.table()}\nwhole test {time.monotonic() - began:.0f} s; "
        f"{topic}: {replicas}\n(kept in {kept})\n" + "\n".join(run.log)
    )
    assert report.problems == [], "\n".join([*report.problems, "--- what happened ---", *run.log])
    assert report.broker_restarts == 3
    assert report.requests == REQUESTS
    # The last fault (the leader's kill) came while requests were still being published.
    assert faults.result() < published.result(), "the faults ended before the traffic did"
    assert replicas == "3 replicas, min.insync.replicas=2", replicas


async def _replication_of(bootstrap: str, topic: str) -> str:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    counts = {len(p["replicas"]) for p in described[0]["partitions"]}
    entries = configs[0].to_object()["resources"][0]["config_entries"]
    isr = next(
        e["config_value"]
        for e in entries
        if e.get("config_names", e.get("config_name")) == "min.insync.replicas"
    )
    return f"{'/'.join(map(str, sorted(counts)))} replicas, min.insync.replicas={isr}"

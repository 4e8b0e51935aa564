"""How the dev stack and the test fixtures choose between a container and a local process
(vidpipe/dev/servers.py), on a real engine: the image there -> a container that is really
Kafka; the engine up but the image missing -> one line and the local path; VIDPIPE_DEV_BACKEND
=docker -> the container or an error, never a silent fallback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from vidpipe.bus.admin import ensure_topics
from vidpipe.dev.docker import LABEL
from vidpipe.dev.servers import resolve_kafka, resolve_postgres
from vidpipe.errors import ConfigurationError, DevStackError

MISSING = "vidpipe/not-built:none"  # never built, and no registry to pull it from


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("VIDPIPE_KAFKA_BOOTSTRAP", "VIDPIPE_TEST_DATABASE_URL", "VIDPIPE_DEV_DOCKER"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _labelled(kind: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label={LABEL}={kind}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.split()


async def test_auto_with_the_image_runs_kafka_in_a_container(
    docker_ready: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("VIDPIPE_DEV_BACKEND", "auto")
    clean_env.setenv("VIDPIPE_KAFKA_IMAGE", docker_ready["VIDPIPE_KAFKA_IMAGE"])
    before = set(_labelled("kafka"))
    handle = resolve_kafka()
    try:
        assert handle.source == "docker"
        assert len(set(_labelled("kafka")) - before) == 1
        topic = f"t{uuid.uuid4().hex[:8]}.docker"
        await ensure_topics(handle.bootstrap_servers, [topic], partitions=1)
        producer = AIOKafkaProducer(bootstrap_servers=handle.bootstrap_servers, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"through the container")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=handle.bootstrap_servers, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            message = await consumer.getone()
        finally:
            await consumer.stop()
        assert message.value == b"through the container"
    finally:
        handle.stop()
    assert set(_labelled("kafka")) - before == set(), "the container outlived its handle"


def test_auto_without_the_image_says_so_in_one_line_and_runs_locally(
    docker_ready: dict[str, str], clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("VIDPIPE_DEV_BACKEND", "auto")
    clean_env.setenv("VIDPIPE_POSTGRES_IMAGE", MISSING)
    with caplog.at_level(logging.INFO, logger="vidpipe.dev.servers"):
        handle = resolve_postgres()
    try:
        assert handle.source == "local"
        said = [r.getMessage() for r in caplog.records if r.name == "vidpipe.dev.servers"]
        assert len(said) == 1, said
        assert MISSING in said[0] and "local" in said[0]
        with psycopg.connect(handle.url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        handle.stop()


def test_forced_docker_fails_on_an_image_it_cannot_have(
    docker_ready: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("VIDPIPE_DEV_BACKEND", "docker")
    clean_env.setenv("VIDPIPE_KAFKA_IMAGE", MISSING)
    with pytest.raises(DevStackError, match="cannot be pulled"):
        resolve_kafka()


def test_an_unknown_backend_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("VIDPIPE_DEV_BACKEND", "podman")
    with pytest.raises(ConfigurationError, match="podman"):
        resolve_postgres()


@pytest.mark.timeout(600)
def test_the_demo_runs_on_a_kafka_container(
    docker_ready: dict[str, str], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `vidpipe demo` as a user runs it (its own state folder here), the broker from Docker.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPIPE_")}
    env["VIDPIPE_DEV_BACKEND"] = "docker"
    env["VIDPIPE_KAFKA_IMAGE"] = docker_ready["VIDPIPE_KAFKA_IMAGE"]
    before = set(_labelled("kafka"))
    demo = subprocess.Popen(
        [sys.executable, "-m", "vidpipe", "demo", "--timeout", "240"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: set[str] = set()
    deadline = time.monotonic() + 400
    while demo.poll() is None and time.monotonic() < deadline:
        seen |= set(_labelled("kafka")) - before
        time.sleep(0.5)
    if demo.poll() is None:
        demo.kill()
    out = demo.communicate(timeout=60)[0]
    assert demo.returncode == 0, out[-4000:]
    assert len(seen) == 1, f"the demo's broker was not one container: {seen}"
    assert out.count("opens in PyAV") == 4, out[-4000:]
    assert set(_labelled("kafka")) - before == set(), "the demo left its broker running"

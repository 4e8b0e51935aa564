"""Kafka and PostgreSQL as containers, through testcontainers, when a Docker engine answers.

A `docker` binary on PATH proves nothing (CI images often have the client and no daemon), so
`docker_engine_available` pings the engine. The images are the public ones a user pulls
(`apache/kafka:3.9.1`, `postgres:16`) unless VIDPIPE_KAFKA_IMAGE / VIDPIPE_POSTGRES_IMAGE name
others (the local images of `docker/`, built without a registry). Whether an image may be pulled
is the caller's choice (`servers.py`): a pull is slow, so the default path only uses images the
engine already has.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from typing import Any

from testcontainers.core.config import testcontainers_config  # type: ignore[import-untyped]
from testcontainers.core.container import DockerContainer  # type: ignore[import-untyped]
from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]

from vidpipe.bus.admin import wait_for_broker
from vidpipe.dev.processes import free_ports, run_coro_sync
from vidpipe.errors import BrokerNotReadyError, KafkaStartError, PostgresStartError

__all__ = [
    "DEFAULT_KAFKA_IMAGE",
    "DEFAULT_POSTGRES_IMAGE",
    "ContainerHandle",
    "docker_engine_available",
    "ensure_image",
    "kafka_image",
    "postgres_image",
    "start_kafka_container",
    "start_postgres_container",
]

log = logging.getLogger(__name__)

# The images compose.yaml defaults to: Apache Kafka 3.9.1 (the version the local path runs).
DEFAULT_KAFKA_IMAGE = "apache/kafka:3.9.1"
DEFAULT_POSTGRES_IMAGE = "postgres:16"
# The Docker SDK (testcontainers' own client), imported by name: the checkout's top-level
# `docker/` folder (the images' build files) would otherwise pass for it in mypy's eyes.
_sdk: Any = importlib.import_module("docker")
_sdk_errors: Any = importlib.import_module("docker.errors")

# Every container this module starts carries it, so a crashed run's leftovers can be found.
LABEL = "io.vidpipe.dev"


def kafka_image() -> str:
    return os.environ.get("VIDPIPE_KAFKA_IMAGE") or DEFAULT_KAFKA_IMAGE


def postgres_image() -> str:
    return os.environ.get("VIDPIPE_POSTGRES_IMAGE") or DEFAULT_POSTGRES_IMAGE


def _client(timeout_s: float = 10.0) -> Any:
    # version="auto": the engine may be older than the SDK's default API version (Debian's
    # 20.10 speaks 1.41).
    return _sdk.from_env(timeout=max(1, round(timeout_s)), version="auto")


def docker_engine_available(timeout_s: float = 2.0) -> bool:
    """True only if a Docker engine answers a ping within `timeout_s`; never raises."""
    try:
        client = _client(timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure means "no usable engine", which is an answer, not an error
        log.debug("no Docker engine answered", exc_info=True)
        return False


def ensure_image(image: str, *, pull: bool) -> str | None:
    """None when the engine has `image` (pulled first if `pull`), else why it cannot be had."""
    client = _client(600)
    try:
        try:
            client.images.get(image)
            return None
        except _sdk_errors.ImageNotFound:
            if not pull:
                return f"image {image} is not on this engine (docker pull {image} to use it)"
        started = time.monotonic()
        try:
            client.images.pull(image)
        except _sdk_errors.DockerException as exc:
            return f"image {image} cannot be pulled ({str(exc).splitlines()[0][:200]})"
        log.info("pulled %s in %.0f s", image, time.monotonic() - started)
        return None
    finally:
        client.close()


def _without_ryuk() -> None:
    # Ryuk (testcontainers' reaper) is itself an image from a registry; without it on the
    # engine it cannot start, and every handle here stops its container anyway. An explicit
    # TESTCONTAINERS_RYUK_DISABLED is the user's call.
    if os.environ.get("TESTCONTAINERS_RYUK_DISABLED") is None and ensure_image(
        testcontainers_config.ryuk_image, pull=False
    ):
        testcontainers_config.ryuk_disabled = True


class ContainerHandle:
    """A started testcontainers container and how to reach it."""

    def __init__(self, container: Any, address: str, image: str) -> None:
        self._container = container
        self.address = address  # bootstrap "host:port" for Kafka, a URL for PostgreSQL
        self.image = image

    @property
    def container_id(self) -> str:
        return str(self._container.get_wrapped_container().id)

    def stop(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):  # already gone is fine at teardown
                self._container.stop()
            self._container = None


def _logs_tail(container: Any, lines: int = 40) -> str:
    with contextlib.suppress(Exception):
        out, err = container.get_logs()
        text: str = (out + err).decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])
    return "(no logs)"


def start_kafka_container(image: str | None = None, timeout_s: float = 120) -> ContainerHandle:
    """A single-node KRaft broker in a container, on a loopback port of the host.

    Configured through the official image's KAFKA_* environment (the local image of
    `docker/kafka` takes the same), with the local broker's small-box settings. The host port is
    chosen first so the advertised listener names it.
    """
    image = image or kafka_image()
    _without_ryuk()
    (port,) = free_ports(1)
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_NUM_PARTITIONS": "3",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "5",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "5",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_LOG_RETENTION_HOURS": "24",
        "KAFKA_HEAP_OPTS": "-Xmx512m -Xms256m",
    }
    container = (
        DockerContainer(image)
        .with_envs(**env)
        .with_bind_ports(9092, ("127.0.0.1", port))
        .with_kwargs(labels={LABEL: "kafka"})
    )
    container.start()
    bootstrap = f"127.0.0.1:{port}"
    try:
        run_coro_sync(lambda: wait_for_broker(bootstrap, timeout_s, give_up=_exited(container)))
    except BrokerNotReadyError as exc:
        tail = _logs_tail(container)
        container.stop()
        raise KafkaStartError(
            f"{exc}\n--- tail of the {image} container's log ---\n{tail}"
        ) from exc
    except BaseException:
        container.stop()
        raise
    return ContainerHandle(container, bootstrap, image)


def _exited(container: Any) -> Any:
    def reason() -> str | None:
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        status = str(wrapped.status)
        return None if status in ("created", "running") else f"the container is {status}"

    return reason


def start_postgres_container(image: str | None = None) -> ContainerHandle:
    """PostgreSQL with database `vidpipe` in a container, on a random loopback port."""
    image = image or postgres_image()
    _without_ryuk()
    # A throwaway container on a loopback port: a fixed password is fine here.
    container = (
        PostgresContainer(
            image,
            username="postgres",
            password="postgres",  # noqa: S106
            dbname="vidpipe",
            driver=None,
        )
        .with_bind_ports(5432, ("127.0.0.1",))
        .with_kwargs(labels={LABEL: "postgres"})
    )
    try:
        container.start()  # waits until psql inside answers over TCP
    except Exception as exc:
        tail = _logs_tail(container)
        container.stop()
        raise PostgresStartError(
            f"the {image} container did not become ready: {exc}\n--- its log ---\n{tail}"
        ) from exc
    # Bound to the host's loopback above; testcontainers' own host guess may name a gateway.
    port = container.get_exposed_port(5432)
    return ContainerHandle(
        container, f"postgresql://postgres:postgres@127.0.0.1:{port}/vidpipe", image
    )

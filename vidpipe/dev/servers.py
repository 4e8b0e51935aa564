"""The real servers for dev, demo and tests, found or started in this order:

Kafka:      given / VIDPIPE_KAFKA_BOOTSTRAP (used as is) -> Docker engine (testcontainers)
            -> LocalKafka. Asked for a kept `data_dir` (`vidpipe up`): a LocalKafka on it
            first when Java is found, since a container's log would go with the container.
PostgreSQL: given / VIDPIPE_TEST_DATABASE_URL -> Docker engine -> LocalPostgres.

Set VIDPIPE_DEV_DOCKER=0 to skip the Docker step even when an engine answers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vidpipe.dev.docker import (
    docker_engine_available,
    start_kafka_container,
    start_postgres_container,
)
from vidpipe.dev.jars import DEFAULT_KAFKA_VERSION
from vidpipe.dev.kafka import LocalKafka, java_available
from vidpipe.dev.postgres import LocalPostgres

__all__ = [
    "KafkaHandle",
    "PostgresHandle",
    "Source",
    "resolve_kafka",
    "resolve_postgres",
]

log = logging.getLogger(__name__)

Source = Literal["env", "docker", "local"]


def _nothing() -> None:
    """Stop for servers we did not start: they are not ours to stop."""


@dataclass
class KafkaHandle:
    """A reachable broker; `bootstrap` is its bootstrap servers ("host:port")."""

    bootstrap_servers: str
    source: Source
    _stop: Callable[[], None] = field(default=_nothing, repr=False)

    def stop(self) -> None:
        self._stop()


@dataclass
class PostgresHandle:
    url: str
    source: Source
    _stop: Callable[[], None] = field(default=_nothing, repr=False)

    def stop(self) -> None:
        self._stop()


def _docker_allowed(use_docker: bool | None) -> bool:
    if use_docker is None:
        use_docker = os.environ.get("VIDPIPE_DEV_DOCKER", "1").lower() not in (
            "0",
            "false",
            "no",
        )
    return use_docker and docker_engine_available()


def resolve_kafka(
    bootstrap_servers: str | None = None,
    *,
    use_docker: bool | None = None,
    kafka_version: str | None = None,
    data_dir: Path | None = None,
) -> KafkaHandle:
    """A reachable Kafka: the given/env broker address, else a container, else local jars.

    `bootstrap_servers` None falls back to VIDPIPE_KAFKA_BOOTSTRAP. Servers found through the
    environment are never stopped by `handle.stop()`; started ones are. With `data_dir`, a
    started broker keeps its log there across stops (a LocalKafka; without Java, a throwaway
    container, with a warning).
    """
    given = bootstrap_servers or os.environ.get("VIDPIPE_KAFKA_BOOTSTRAP")
    if given:
        return KafkaHandle(given, "env")
    version = kafka_version or os.environ.get("VIDPIPE_KAFKA_VERSION") or DEFAULT_KAFKA_VERSION
    if data_dir is not None:
        if java_available():
            kept = LocalKafka(version, data_dir=data_dir, keep=True).start()
            return KafkaHandle(kept.bootstrap_servers, "local", kept.stop)
        log.warning("no Java: the broker runs in a container and its log goes when it stops")
    if _docker_allowed(use_docker):
        try:
            container = start_kafka_container()
        except Exception as exc:  # e.g. image pull refused: the local broker still works
            log.warning("Kafka container failed (%s); using local Kafka jars instead", exc)
            container = None
        if container is not None:
            log.info("Kafka from a Docker container at %s", container.address)
            return KafkaHandle(container.address, "docker", container.stop)
    local = LocalKafka(version).start()
    return KafkaHandle(local.bootstrap_servers, "local", local.stop)


def resolve_postgres(
    env_url: str | None = None, *, use_docker: bool | None = None
) -> PostgresHandle:
    """A reachable PostgreSQL: the given/env URL, else a container, else a local cluster.

    `env_url` None falls back to VIDPIPE_TEST_DATABASE_URL.
    """
    url = env_url or os.environ.get("VIDPIPE_TEST_DATABASE_URL")
    if url:
        return PostgresHandle(url, "env")
    if _docker_allowed(use_docker):
        try:
            container = start_postgres_container()
        except Exception as exc:
            log.warning("PostgreSQL container failed (%s); using a local cluster instead", exc)
            container = None
        if container is not None:
            log.info("PostgreSQL from a Docker container")
            return PostgresHandle(container.address, "docker", container.stop)
    local = LocalPostgres().start()
    return PostgresHandle(local.url, "local", local.stop)

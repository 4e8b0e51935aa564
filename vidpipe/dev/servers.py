"""The real servers for dev, demo and tests, found or started in this order:

Kafka:      given / VIDPIPE_KAFKA_BOOTSTRAP (used as is) -> a container (testcontainers)
            -> LocalKafka. Asked for a kept `data_dir` (`vidpipe up`): a LocalKafka on it
            first when Java is found, since a container's log would go with the container.
PostgreSQL: given / VIDPIPE_TEST_DATABASE_URL -> a container -> LocalPostgres.

VIDPIPE_DEV_BACKEND chooses the middle step:
  auto   (default) a container when a Docker engine answers and already has the image
         (VIDPIPE_KAFKA_IMAGE / VIDPIPE_POSTGRES_IMAGE, public defaults); a pull only when the
         local path cannot run here (no Java / no PostgreSQL binaries). `make demo` on a fresh
         clone therefore never waits on a registry. Engine up but no image: one line, local.
  docker the container or an error: the image is pulled if missing, no fallback (CI uses this
         to run the integration tests on the Docker path).
  local  never Docker.
VIDPIPE_DEV_DOCKER=0 (older name) means `local`.
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
    ensure_image,
    kafka_image,
    postgres_image,
    start_kafka_container,
    start_postgres_container,
)
from vidpipe.dev.jars import DEFAULT_KAFKA_VERSION
from vidpipe.dev.kafka import LocalKafka, java_available
from vidpipe.dev.postgres import LocalPostgres, find_postgres_binaries
from vidpipe.errors import ConfigurationError, DevStackError

__all__ = [
    "Backend",
    "KafkaHandle",
    "PostgresHandle",
    "Source",
    "dev_backend",
    "resolve_kafka",
    "resolve_postgres",
]

log = logging.getLogger(__name__)

Source = Literal["env", "docker", "local"]
Backend = Literal["auto", "docker", "local"]


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


def dev_backend(use_docker: bool | None = None) -> Backend:
    """The backend asked for: `use_docker` (True: docker, False: local), else the environment."""
    if use_docker is not None:
        return "docker" if use_docker else "local"
    if os.environ.get("VIDPIPE_DEV_DOCKER", "").lower() in ("0", "false", "no"):
        return "local"
    backend = (os.environ.get("VIDPIPE_DEV_BACKEND") or "auto").lower()
    if backend not in ("auto", "docker", "local"):
        raise ConfigurationError(
            f"VIDPIPE_DEV_BACKEND must be auto, docker or local, not {backend!r}"
        )
    return backend  # type: ignore[return-value]  # checked just above


def _local_postgres_possible() -> bool:
    try:
        find_postgres_binaries()
    except DevStackError:
        return False
    return True


def _container_image(what: str, image: str, backend: Backend, local_possible: bool) -> bool:
    """Whether to start `image`: True, False (use the local path, said in one line), or raise."""
    if backend == "local":
        return False
    if not docker_engine_available():
        if backend == "docker":
            raise DevStackError(
                "VIDPIPE_DEV_BACKEND=docker but no Docker engine answers "
                "(scripts/ensure-docker.sh starts one)"
            )
        return False
    # A pull can take minutes: the default path pulls only when there is no local way.
    why_not = ensure_image(image, pull=backend == "docker" or not local_possible)
    if why_not is None:
        return True
    if backend == "docker":
        raise DevStackError(f"VIDPIPE_DEV_BACKEND=docker: {why_not}")
    log.warning("a Docker engine answers but %s; using the local %s", why_not, what)
    return False


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
    backend = dev_backend(use_docker)
    if data_dir is not None and backend != "docker":
        if java_available():
            kept = LocalKafka(version, data_dir=data_dir, keep=True).start()
            return KafkaHandle(kept.bootstrap_servers, "local", kept.stop)
        log.warning("no Java: the broker runs in a container and its log goes when it stops")
    if _container_image("Kafka jars", kafka_image(), backend, java_available()):
        container = start_kafka_container()
        log.info("Kafka from a %s container at %s", container.image, container.address)
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
    backend = dev_backend(use_docker)
    if _container_image("PostgreSQL", postgres_image(), backend, _local_postgres_possible()):
        container = start_postgres_container()
        log.info("PostgreSQL from a %s container", container.image)
        return PostgresHandle(container.address, "docker", container.stop)
    local = LocalPostgres().start()
    return PostgresHandle(local.url, "local", local.stop)

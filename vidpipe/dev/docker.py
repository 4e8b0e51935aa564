"""Docker, only when an engine really answers.

A `docker` binary on PATH proves nothing (CI images often have the client and no daemon), so
`docker_engine_available` pings the engine. The container starters import testcontainers
lazily: it is an optional extra, and without it the caller falls back to the local path.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import logging
import os
import socket
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_KAFKA_IMAGE",
    "DEFAULT_POSTGRES_IMAGE",
    "ContainerHandle",
    "docker_engine_available",
    "start_kafka_container",
    "start_postgres_container",
]

log = logging.getLogger(__name__)

# cp-kafka 7.9 is Apache Kafka 3.9 (the version the local path runs); KRaft mode.
DEFAULT_KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"
DEFAULT_POSTGRES_IMAGE = "postgres:15-alpine"
_DEFAULT_SOCKET = "/var/run/docker.sock"


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the Docker engine API), standard library only."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def docker_engine_available(timeout_s: float = 2.0) -> bool:
    """True only if a Docker engine answers GET /_ping within `timeout_s`; never raises."""
    try:
        docker_sdk = importlib.import_module("docker")
    except ImportError:
        docker_sdk = None
    try:
        if docker_sdk is not None:
            client = docker_sdk.from_env(timeout=max(1, round(timeout_s)))
            try:
                return bool(client.ping())
            finally:
                client.close()
        return _raw_ping(timeout_s)
    except Exception:  # any failure means "no usable engine", which is an answer, not an error
        log.debug("no Docker engine answered", exc_info=True)
        return False


def _raw_ping(timeout_s: float) -> bool:
    host = os.environ.get("DOCKER_HOST") or f"unix://{_DEFAULT_SOCKET}"
    parts = urlsplit(host)
    conn: http.client.HTTPConnection
    if parts.scheme == "unix":
        if not os.path.exists(parts.path):
            return False
        conn = _UnixHTTPConnection(parts.path, timeout_s)
    elif parts.scheme in ("tcp", "http") and parts.hostname:
        # TLS engines (DOCKER_TLS_VERIFY) need the SDK and its certificates; not pinged raw.
        if os.environ.get("DOCKER_TLS_VERIFY"):
            return False
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 2375, timeout=timeout_s)
    else:
        return False
    try:
        conn.request("GET", "/_ping")
        response = conn.getresponse()
        return response.status == 200 and response.read(16).strip() == b"OK"
    finally:
        conn.close()


class ContainerHandle:
    """A started testcontainers container and how to reach it."""

    def __init__(self, container: Any, address: str) -> None:
        self._container = container
        self.address = address  # bootstrap "host:port" for Kafka, a URL for PostgreSQL

    def stop(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):  # already gone is fine at teardown
                self._container.stop()
            self._container = None


def _testcontainers_module(name: str) -> Any | None:
    try:
        return importlib.import_module(f"testcontainers.{name}")
    except ImportError:
        log.info(
            "a Docker engine answers but the `testcontainers` package is not installed; "
            "using the local %s instead",
            name,
        )
        return None


def start_kafka_container(image: str = DEFAULT_KAFKA_IMAGE) -> ContainerHandle | None:
    """Start a KRaft Kafka container; None when testcontainers is missing (use local)."""
    module = _testcontainers_module("kafka")
    if module is None:
        return None
    container = module.KafkaContainer(image).with_kraft()
    container.start()
    try:
        return ContainerHandle(container, str(container.get_bootstrap_server()))
    except Exception:
        container.stop()
        raise


def start_postgres_container(image: str = DEFAULT_POSTGRES_IMAGE) -> ContainerHandle | None:
    """Start a PostgreSQL container with database `vidpipe`; None without testcontainers."""
    module = _testcontainers_module("postgres")
    if module is None:
        return None
    # A throwaway container on a random host port: a fixed password is fine here.
    container = module.PostgresContainer(
        image,
        username="postgres",
        password="postgres",  # noqa: S106
        dbname="vidpipe",
    )
    container.start()
    try:
        # Built by hand: get_connection_url() adds a SQLAlchemy driver suffix that varies
        # between testcontainers versions.
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5432)
        url = f"postgresql://postgres:postgres@{host}:{port}/vidpipe"
        return ContainerHandle(container, url)
    except Exception:
        container.stop()
        raise

"""Shared fixtures: the real Kafka broker and PostgreSQL server, once per test session.

Resolution follows design.md (env -> Docker engine -> local binaries); see vidpipe.dev.
These fixtures never skip: a test that asks for Kafka or PostgreSQL and cannot get one
errors with the reason, so a broken environment cannot pass as green.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from vidpipe.dev.servers import KafkaHandle, PostgresHandle, resolve_kafka, resolve_postgres

log = logging.getLogger("vidpipe.tests")


@pytest.fixture(scope="session")
def kafka_handle() -> Iterator[KafkaHandle]:
    """The session's Kafka (started here unless VIDPIPE_KAFKA_BOOTSTRAP names one)."""
    # Plain sync fixture: start/stop must not depend on the tests' event loop.
    handle = resolve_kafka(os.environ.get("VIDPIPE_KAFKA_BOOTSTRAP"))
    log.info("Kafka for this session: %s (%s)", handle.bootstrap_servers, handle.source)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_handle: KafkaHandle) -> str:
    """Bootstrap servers ("host:port") of the session's Kafka."""
    return kafka_handle.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_handle() -> Iterator[PostgresHandle]:
    """The session's PostgreSQL (started here unless VIDPIPE_TEST_DATABASE_URL names one)."""
    handle = resolve_postgres(os.environ.get("VIDPIPE_TEST_DATABASE_URL"))
    log.info("PostgreSQL for this session: %s", handle.source)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_handle: PostgresHandle) -> str:
    """A postgresql:// URL of a database the tests may create tables in."""
    return postgres_handle.url


@pytest.fixture
def unique_prefix() -> str:
    """A fresh topic prefix ("t1a2b3c4d.") so tests sharing the broker never share topics."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def test_database_url(postgres_url: str, unique_prefix: str) -> str:
    """A fresh database per test on the session's PostgreSQL server: the submitter's quota
    slots and the records of one test never leak into the next."""
    name = unique_prefix.rstrip(".")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(postgres_url).set(database=name).render_as_string(hide_password=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """No test may skip here: a real-broker test that skips would pass as green without Kafka."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped tests count as failures in vidpipe: {report.longrepr}"

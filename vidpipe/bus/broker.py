"""The Kafka broker every stage runs on: the failure model and metrics on every subscriber."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import structlog
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CollectorRegistry
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter

from schemas.events import Event
from schemas.topics import Topics
from vidpipe.bus.deadletter import (
    JOB_FAILED_STAGE,
    DeadLetterMiddleware,
    FailureHandling,
    RedeliveryBackoff,
    decode_or_poison,
    parse_leniently,
)
from vidpipe.bus.health import StageHealth
from vidpipe.bus.publisher import KafkaPublisher
from vidpipe.bus.security import KafkaSecurity
from vidpipe.bus.tracing import broker_middlewares
from vidpipe.metrics import Metrics, StageMetricsMiddleware

__all__ = ["BROKER_UNREACHABLE", "PatientKafkaBroker", "make_broker", "until_broker_answers"]

T = TypeVar("T")
log = structlog.get_logger("vidpipe.bus")

#: What a broker that is down, restarting or still loading its metadata raises.
BROKER_UNREACHABLE: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)


async def until_broker_answers(call: Callable[[], Awaitable[T]], *, stage: str, what: str) -> T:
    """Run `call` until it gets past an unreachable broker: retried without bound, with capped,
    jittered back-off, since the broker is the world (a stage that exits instead only makes its
    orchestrator restart it into the same wait)."""

    def waiting(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "broker_unreachable",
            stage=stage,
            step=what,
            attempt=state.attempt_number,
            error=type(error).__name__,
        )

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(BROKER_UNREACHABLE),
        wait=wait_exponential_jitter(initial=0.5, max=5.0),
        before_sleep=waiting,
        reraise=True,
    )

    async def attempt() -> T:
        # A coroutine function, so tenacity awaits each try (it calls a plain lambda sync).
        return await call()

    result: T = await retrying(attempt)
    return result


class PatientKafkaBroker(KafkaBroker):
    """FastStream's Kafka broker, but a start that meets an unreachable broker (down, restarting,
    topics not in its metadata yet) waits for it instead of failing the stage's start-up."""

    stage_name: str = "stage"
    #: The failure model of this broker's subscribers, for a batch handler that dead-letters
    #: its own poison records (`make_broker` sets it).
    failures: FailureHandling

    async def start(self) -> None:
        await until_broker_answers(self._start_once, stage=self.stage_name, what="start")

    async def _start_once(self) -> None:
        try:
            await KafkaBroker.start(self)
        except BROKER_UNREACHABLE:
            # Stop what started before the failure (consumers, the producer), so the next
            # attempt begins clean and nothing is left unclosed.
            try:
                await KafkaBroker.stop(self)
            except BROKER_UNREACHABLE as exc:
                log.debug("broker_stop_failed", stage=self.stage_name, error=type(exc).__name__)
            raise


def make_broker(
    bootstrap_servers: str,
    *,
    stage: str,
    topics: Topics,
    publishes: Iterable[type[Event]] = (),
    registry: CollectorRegistry | None = None,
    backoff: RedeliveryBackoff | None = None,
    health: StageHealth | None = None,
    max_letter_bytes: int = 900_000,
    graceful_timeout_s: float | None = 15.0,
    security: KafkaSecurity | None = None,
    domain: Metrics | None = None,
    linger_ms: int = 0,
) -> tuple[PatientKafkaBroker, KafkaPublisher]:
    """A broker whose every subscriber follows the failure model, plus the stage's publisher.

    `publishes` are the event types the stage writes (anything else is refused); `backoff`
    holds the stage's count of failed deliveries and `health` what /readyz reports (fresh ones
    when not given). Every body is decoded through `decode_or_poison` and every record parsed
    through `parse_leniently`, so no bytes can fail outside the middleware's reach. `security`
    is TLS/SASL for the connection (None: from the VIDPIPE_KAFKA_* environment). `domain`: the
    stage's `vidpipe.metrics.Metrics`, made current around each delivery. `linger_ms`: how long
    the producer gathers records for one partition before sending them as one request.
    """
    if security is None:
        security = KafkaSecurity.from_env()
    middlewares: list[Any] = []
    # Outermost: spans and log context cover all the rest (vidpipe.bus.tracing).
    middlewares.extend(broker_middlewares())
    if registry is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=registry, app_name=stage))
    if domain is not None:
        # The stage's domain metrics current in every handler (and the dead letters, inside).
        middlewares.append(StageMetricsMiddleware.factory(domain))
    broker = PatientKafkaBroker(
        # A list: FastStream hands a string to aiokafka as one host, so "a:9092,b:9092" (every
        # multi-broker cluster) would be looked up as a single name and never resolve.
        [server.strip() for server in bootstrap_servers.split(",") if server.strip()],
        client_id=f"vidpipe-{stage}",
        logger=logging.getLogger(f"vidpipe.{stage}.broker"),
        # FastStream's "Received"/"Processed" line per message: DEBUG, so that at INFO a stage
        # logs what it did (one line per outcome), not two more lines per message it read.
        log_level=logging.DEBUG,
        middlewares=middlewares,
        parser=parse_leniently,
        decoder=decode_or_poison,
        # SIGTERM: in-flight handlers get this long to finish; what they did not finish stays
        # uncommitted and is delivered again.
        graceful_timeout=graceful_timeout_s,
        # A produce call returns once the broker has the record (acks=all on one node is cheap).
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        security=security.faststream_security(),
    )
    broker.stage_name = stage
    reports = stage in JOB_FAILED_STAGE
    publisher = KafkaPublisher(
        broker, topics, stage, publishes=publishes, reports_job_failures=reports
    )
    handling = FailureHandling(
        stage=stage,
        publish_dead_letter=publisher.publish_dead_letter,
        publish_job_failed=publisher.publish_job_failed if reports else None,
        backoff=backoff or RedeliveryBackoff(),
        health=health or StageHealth(stage),
        max_letter_bytes=max_letter_bytes,
    )
    broker.failures = handling
    broker.add_middleware(DeadLetterMiddleware.factory(handling))
    return broker, publisher

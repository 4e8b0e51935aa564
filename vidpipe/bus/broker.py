"""The Kafka broker every stage runs on: the failure model and metrics on every subscriber."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CollectorRegistry

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

__all__ = ["make_broker"]


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
) -> tuple[KafkaBroker, KafkaPublisher]:
    """A broker whose every subscriber follows the failure model, plus the stage's publisher.

    `publishes` are the event types the stage writes (anything else is refused); `backoff`
    holds the stage's count of failed deliveries and `health` what /readyz reports (fresh ones
    when not given). Every body is decoded through `decode_or_poison` and every record parsed
    through `parse_leniently`, so no bytes can fail outside the middleware's reach.
    """
    middlewares: list[Any] = []
    if registry is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=registry, app_name=stage))
    broker = KafkaBroker(
        bootstrap_servers,
        client_id=f"vidpipe-{stage}",
        logger=logging.getLogger(f"vidpipe.{stage}.broker"),
        middlewares=middlewares,
        parser=parse_leniently,
        decoder=decode_or_poison,
        # SIGTERM: in-flight handlers get this long to finish; what they did not finish stays
        # uncommitted and is delivered again.
        graceful_timeout=graceful_timeout_s,
        # A produce call returns once the broker has the record (acks=all on one node is cheap).
        acks="all",
        enable_idempotence=True,
    )
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
    broker.add_middleware(DeadLetterMiddleware.factory(handling))
    return broker, publisher

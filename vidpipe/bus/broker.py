"""The Kafka broker every stage runs on: dead letters and metrics on every subscriber."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CollectorRegistry

from schemas.events import Event
from schemas.topics import Topics
from vidpipe.bus.deadletter import DeadLetterMiddleware, RedeliveryBackoff
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
) -> tuple[KafkaBroker, KafkaPublisher]:
    """A broker whose every subscriber dead-letters poison, plus the stage's publisher.

    `publishes` are the event types the stage writes (anything else is refused); `backoff`
    holds the stage's count of failed deliveries (a fresh one when not given).
    """
    middlewares: list[Any] = []
    if registry is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=registry, app_name=stage))
    broker = KafkaBroker(
        bootstrap_servers,
        client_id=f"vidpipe-{stage}",
        logger=logging.getLogger(f"vidpipe.{stage}.broker"),
        middlewares=middlewares,
        # A produce call returns once the broker has the record (acks=all on one node is cheap).
        acks="all",
        enable_idempotence=True,
    )
    publisher = KafkaPublisher(broker, topics, stage, publishes=publishes)
    broker.add_middleware(
        DeadLetterMiddleware.factory(
            stage, publisher.publish_dead_letter, backoff or RedeliveryBackoff()
        )
    )
    return broker, publisher

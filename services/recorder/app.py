"""Recorder wiring: every public event topic -> the records database, a consumer batch at a time."""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaMessage

from schemas.events import PUBLIC_EVENTS, Event
from services.recorder.handlers import RecorderDeps, handle_batch
from vidpipe.db.records import Records
from vidpipe.settings import Settings
from vidpipe.stage import Deps, Resources, Stage, records_as_they_are

__all__ = ["create_stage"]

#: How long the consumer waits for a first record when none is there (then again as long).
BATCH_WAIT_MS = 50
#: The broker holds a fetch until this much is there or `LINGER_MS` has passed: while events
#: trickle in, batches still fill (one transaction for many), at most `LINGER_MS` later.
FETCH_MIN_BYTES = 64 * 1024
LINGER_MS = 100


def create_stage(settings: Settings, *, bootstrap_servers: str | None = None) -> Stage:
    stage = Stage("recorder", settings, bootstrap_servers=bootstrap_servers)
    topics = stage.topics
    model_for_topic: dict[str, type[Event]] = {topics.for_event(m): m for m in PUBLIC_EVENTS}

    @stage.dependencies
    async def build_deps(resources: Resources) -> RecorderDeps:
        records = Records(await resources.engine())

        async def count_statuses() -> None:
            stage.domain.set_requests(await records.status_counts())

        stage.sample(count_statuses)
        return RecorderDeps(
            records=records,
            failures=stage.failures,
            model_for_topic=model_for_topic,
        )

    @stage.subscriber(
        *model_for_topic,
        batch=True,
        max_records=settings.records_batch_max,
        batch_timeout_ms=BATCH_WAIT_MS,
        fetch_min_bytes=FETCH_MIN_BYTES,
        fetch_max_wait_ms=LINGER_MS,
        decoder=records_as_they_are,
    )
    async def on_events(_body: Any, message: KafkaMessage, deps: Deps[RecorderDeps]) -> None:
        await handle_batch(message.raw_message, deps)

    stage.batch_models["recorder:on_events"] = dict(model_for_topic)

    return stage

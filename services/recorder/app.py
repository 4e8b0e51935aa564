"""Recorder wiring: every public event topic -> the records database."""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaMessage

from schemas.events import PUBLIC_EVENTS, Event
from services.recorder.handlers import handle_event
from vidpipe.db.records import Records
from vidpipe.settings import Settings
from vidpipe.stage import Deps, Resources, Stage

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap_servers: str | None = None) -> Stage:
    stage = Stage("recorder", settings, bootstrap_servers=bootstrap_servers)
    topics = stage.topics
    # Each topic carries one event type, so the topic (not a field the producer may have left
    # out) decides the model: a bare upstream request without `event_type` is still recorded.
    model_for_topic: dict[str, type[Event]] = {topics.for_event(m): m for m in PUBLIC_EVENTS}

    @stage.dependencies
    async def build_deps(resources: Resources) -> Records:
        return Records(await resources.engine())

    @stage.subscriber(*model_for_topic)
    async def on_event(body: dict[str, Any], message: KafkaMessage, records: Deps[Records]) -> None:
        topic: str = message.raw_message.topic  # type: ignore[union-attr]
        event = model_for_topic[topic].model_validate(body)
        await handle_event(event, topic, records)

    return stage

"""The checked-in AsyncAPI document is the apps' own: regenerate it when a stage changes."""

from __future__ import annotations

import json
from typing import Any

from faststream.kafka.publisher.usecase import LogicPublisher

from services.asyncapi import ASYNCAPI_FILE, render_asyncapi
from services.registry import STAGES, create_stage
from vidpipe.settings import Settings


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ASYNCAPI_FILE.read_text(encoding="utf-8"))
    return document


def test_asyncapi_document_matches_the_apps() -> None:
    assert ASYNCAPI_FILE.read_text(encoding="utf-8") == render_asyncapi(), "run `make schemas`"


def test_the_request_contract_is_documented() -> None:
    document = _document()
    addresses = {c["address"] for c in document["channels"].values()}
    assert "vidpipe.generation.requested" in addresses
    assert "GenerationRequested" in json.dumps(document["components"]["schemas"])


def test_every_stage_documents_what_it_reads_and_exactly_what_it_sends() -> None:
    channels = _document()["channels"]
    for name in STAGES:
        stage = create_stage(name, Settings(kafka_bootstrap="kafka:9092"))
        # The broker's publishers are the ones `publish` sends through: one per declared event
        # type, plus the dead letters every stage can write. None is there for the docs only.
        sends = {
            (p.specification.name, p.topic)
            for p in stage.broker.publishers
            if isinstance(p, LogicPublisher)
        }
        assert len(sends) == len(stage.broker.publishers)
        expected_sends = {
            (f"{name}:{event.__name__}", stage.topics.for_event(event))
            for event in stage.publisher.declared
        } | {(f"{name}:DeadLetter", stage.topics.deadletter)}
        if stage.publisher.reports_job_failures:  # the failure path's JobFailed (bus.deadletter)
            expected_sends.add((f"{name}:JobFailed", stage.topics.job_failed))
        assert sends == expected_sends, name
        # Subscribers are titled `<stage>:<handler>` (FastStream appends a topic to the
        # name of one reading several).
        reads = {
            (":".join(subscriber.specification.name.split(":")[:2]), topic)
            for subscriber in stage.broker.subscribers
            for topic in subscriber.topic_names  # type: ignore[attr-defined]
        }
        # A handler reading several topics gets a channel per topic, `<title>:<topic>`.
        documented = {
            (key.removesuffix(f":{channel['address']}"), channel["address"])
            for key, channel in channels.items()
            if key.startswith(f"{name}:")
        }
        assert documented == sends | reads, name


def test_timers_release_to_one_spelling_of_topic() -> None:
    addresses = {c["address"] for c in _document()["channels"].values()}
    assert {"vidpipe.poller.due", "vidpipe.submitter.due", "vidpipe.redownloader.due"} <= addresses
    assert not any(address.endswith(".retry") and "submitter" in address for address in addresses)

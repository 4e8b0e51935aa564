"""The composition root: deps reach handlers, resources close, undeclared events are refused.

FastStream's in-memory `TestKafkaBroker` stands in for Kafka; the lifespan is the app's own
(`stage.app.lifespan_context`, as `FastStream.run` enters it). The same stages on a real broker,
as processes: tests/e2e/test_pipeline.py.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaMessage, TestKafkaBroker
from faststream.kafka.subscriber.usecase import LogicSubscriber

from schemas.events import GenerationRequested, JobFailed, JobSubmitted
from schemas.topics import TIMER_STAGES
from services.failover.handlers import FailoverDeps
from services.fetcher.handlers import FetcherDeps
from services.notifier.handlers import NotifierDeps
from services.placeholder.handlers import PlaceholderDeps
from services.poller.handlers import PollerDeps
from services.recorder.handlers import RecorderDeps
from services.redownloader.handlers import RedownloaderDeps
from services.registry import (
    CORE_STAGES,
    FALLBACK_STAGES,
    REGISTRY,
    STAGES,
    create_stage,
    describe,
    entry,
)
from services.submitter.handlers import SubmitterDeps
from vidpipe import stage as stage_module
from vidpipe.errors import StageWiringError
from vidpipe.settings import Settings
from vidpipe.stage import DEPS, Deps, Resources, Stage

NOWHERE = "127.0.0.1:9"  # never dialled: TestKafkaBroker patches the broker, lifespans skip it

DEPS_TYPES: dict[str, type] = {
    "submitter": SubmitterDeps,
    "poller": PollerDeps,
    "fetcher": FetcherDeps,
    "recorder": RecorderDeps,
    "placeholder": PlaceholderDeps,
    "notifier": NotifierDeps,
    "redownloader": RedownloaderDeps,
    "failover": FailoverDeps,
}


@dataclass
class Opened:
    """A resource stand-in that records when it is closed, in one shared log."""

    name: str
    log: list[str]

    async def aclose(self) -> None:
        self.log.append(self.name)

    async def dispose(self) -> None:  # what an AsyncEngine has instead of aclose
        self.log.append(self.name)


@dataclass
class Seen:
    deps: list[Any] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    headers: list[dict[str, Any]] = field(default_factory=list)


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "topic_prefix": "u.",
        "database_url": f"sqlite:///{tmp_path / 'vidpipe.db'}",
        "storage_url": f"file://{tmp_path / 'videos'}",
        "webhook_secret": None,
        "metrics_port": None,
    }
    return Settings(**{**values, **overrides})


def _request(request_id: str = "r1") -> GenerationRequested:
    return GenerationRequested.model_validate({"request_id": request_id, "prompt": "a fox"})


def _submitted(request_id: str = "r1") -> JobSubmitted:
    return JobSubmitted(
        event_id=uuid.uuid4(), request_id=request_id, provider="azure-sora", provider_job_id="j1"
    )


def _echo_stage(settings: Settings, seen: Seen) -> Stage:
    """A stage that answers each request with a JobSubmitted, through the deps it was given."""
    stage = Stage("echo", settings, bootstrap_servers=NOWHERE, publishes=(JobSubmitted,))

    @dataclass
    class EchoDeps:
        publisher: Any
        token: str

    @stage.dependencies
    async def build_deps(resources: Resources) -> EchoDeps:
        return EchoDeps(publisher=stage.publisher, token="the-deps")

    @stage.subscriber(stage.topics.generation_requested)
    async def on_requested(event: GenerationRequested, deps: Deps[Any]) -> None:
        seen.deps.append(deps)
        await deps.publisher.publish(_submitted(event.request_id))

    @stage.broker.subscriber(stage.topics.job_submitted, group_id="observer")
    async def observe(body: dict[str, Any], message: KafkaMessage) -> None:
        seen.keys.append(message.raw_message.key)  # type: ignore[union-attr]
        seen.headers.append(dict(message.headers))

    return stage


# --- (a) the deps reach the handler ----------------------------------------------------------


async def test_the_lifespan_hands_the_deps_to_every_handler_through_the_context(
    tmp_path: Path,
) -> None:
    seen = Seen()
    stage = _echo_stage(_settings(tmp_path), seen)
    async with stage.app.lifespan_context(), TestKafkaBroker(stage.broker) as broker:
        await broker.publish(
            _request("r1").model_dump_json().encode(), stage.topics.generation_requested
        )
        await broker.publish(
            _request("r2").model_dump_json().encode(), stage.topics.generation_requested
        )
    assert [d.token for d in seen.deps] == ["the-deps", "the-deps"]
    assert seen.deps[0] is seen.deps[1]  # built once per process, not per message
    # Sent by the stage's declared publisher, keyed by request id, typed in a header.
    assert seen.keys == [b"r1", b"r2"]
    assert seen.headers[0]["event-type"] == "JobSubmitted"
    assert seen.headers[0]["content-type"] == "application/json"
    # Out of the lifespan, the context no longer holds them.
    assert stage.app.context.get(DEPS) is None


@pytest.mark.parametrize("name", STAGES)
async def test_every_registered_stage_builds_its_deps_and_releases_them(
    name: str, tmp_path: Path
) -> None:
    stage = create_stage(name, _settings(tmp_path), bootstrap_servers=NOWHERE)
    async with stage.app.lifespan_context():
        assert isinstance(stage.app.context.get(DEPS), DEPS_TYPES[name])
    assert stage.app.context.get(DEPS) is None


# --- (b) everything opened is closed, also when start-up fails halfway -----------------------


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every resource `Resources` opens is an `Opened` logging its close here."""
    log: list[str] = []

    def providers(**_: Any) -> dict[str, Opened]:
        return {name: Opened(f"provider {name}", log) for name in ("azure-sora", "openai-videos")}

    async def engine(url: str, **_: Any) -> Opened:
        return Opened("engine", log)

    async def tables(engine: Any) -> None:
        return None

    monkeypatch.setattr(stage_module, "open_providers", providers)
    monkeypatch.setattr(stage_module, "open_storage", lambda settings: Opened("storage", log))
    monkeypatch.setattr(stage_module, "open_engine", engine)
    monkeypatch.setattr(stage_module, "create_tables", tables)
    monkeypatch.setattr(stage_module, "InputImageFetcher", lambda **_: Opened("image fetcher", log))
    return log


async def test_shutdown_closes_everything_the_stage_opened_newest_first(
    closed: list[str], tmp_path: Path
) -> None:
    stage = create_stage("submitter", _settings(tmp_path), bootstrap_servers=NOWHERE)
    async with stage.app.lifespan_context():
        assert closed == []
    assert closed == ["image fetcher", "engine", "provider openai-videos", "provider azure-sora"]


async def test_a_start_that_fails_halfway_closes_what_it_had_opened(
    closed: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def tables_fail(engine: Any) -> None:
        raise ConnectionError("database down")

    monkeypatch.setattr(stage_module, "create_tables", tables_fail)
    stage = create_stage("submitter", _settings(tmp_path), bootstrap_servers=NOWHERE)
    with pytest.raises(ConnectionError, match="database down"):
        async with stage.app.lifespan_context():
            raise AssertionError("the stage must not start")
    # The engine was opened before its tables failed; the image fetcher was never opened.
    assert closed == ["engine", "provider openai-videos", "provider azure-sora"]
    assert stage.app.context.get(DEPS) is None


async def test_a_failing_close_is_logged_and_the_others_still_close(tmp_path: Path) -> None:
    log: list[str] = []

    class Broken:
        async def aclose(self) -> None:
            raise OSError("cannot close")

    stage = Stage("unit", _settings(tmp_path), bootstrap_servers=NOWHERE)

    @stage.dependencies
    async def build_deps(resources: Resources) -> list[Any]:
        return [
            resources.adopt(Opened("first", log), "first"),
            resources.adopt(Broken(), "broken"),
            resources.adopt(Opened("last", log), "last"),
        ]

    async with stage.app.lifespan_context():
        pass
    assert log == ["last", "first"]


async def test_the_metrics_server_listens_while_the_stage_runs_and_stops_with_it(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stage = Stage("unit", _settings(tmp_path, metrics_port=port), bootstrap_servers=NOWHERE)
    url = f"http://127.0.0.1:{port}/metrics"
    async with httpx.AsyncClient(timeout=5) as client:
        async with stage.app.lifespan_context():
            assert (await client.get(url)).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.get(url)


async def test_readyz_says_why_the_stage_is_not_ready_and_healthz_that_it_lives(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, metrics_port=0, health_interval_s=0.05)
    stage = Stage("unit", settings, bootstrap_servers=NOWHERE)

    @stage.dependencies
    async def build(resources: Resources) -> None:
        await resources.engine()  # a reachable database: only the broker is missing

    async with httpx.AsyncClient(timeout=5) as client, stage.app.lifespan_context():
        base = f"http://127.0.0.1:{stage.health_port}"
        deadline = asyncio.get_running_loop().time() + 10
        while (live := await client.get(f"{base}/healthz")).status_code != 200:
            assert asyncio.get_running_loop().time() < deadline, live.text
            await asyncio.sleep(0.05)
        ready = await client.get(f"{base}/readyz")
        assert ready.status_code == 503
        assert ready.json()["reasons"] == ["broker not connected"]
        assert "vidpipe_stage_ready 0.0" in (await client.get(f"{base}/metrics")).text


# --- (c) publishing what the stage did not declare is refused --------------------------------


async def test_publishing_an_undeclared_event_type_is_refused_with_what_to_do(
    tmp_path: Path,
) -> None:
    stage = Stage("unit", _settings(tmp_path), bootstrap_servers=NOWHERE, publishes=(JobSubmitted,))
    failed = JobFailed(
        event_id=uuid.uuid4(), request_id="r1", stage="submit", reason_code="x", message="m"
    )
    async with TestKafkaBroker(stage.broker):
        with pytest.raises(StageWiringError) as refused:
            await stage.publisher.publish(failed)
        await stage.publisher.publish(_submitted())  # the declared one goes
    message = str(refused.value)
    assert "'unit'" in message
    assert "JobFailed" in message
    assert "JobSubmitted" in message
    assert "publishes=" in message
    assert stage.publisher.declared == (JobSubmitted,)


def test_every_stage_declares_what_its_handlers_publish() -> None:
    declared = {
        name: {
            e.__name__
            for e in create_stage(name, Settings(), bootstrap_servers=NOWHERE).publisher.declared
        }
        for name in STAGES
    }
    assert declared == {
        "submitter": {"JobSubmitted", "JobFailed", "JobCancelled"},
        "poller": {"JobProgressed", "JobSucceeded", "JobFailed"},
        "fetcher": {"VideoStored", "DownloadUnavailable"},
        "recorder": set(),
        "placeholder": {"VideoStored"},
        "notifier": {"UserNotified"},
        "redownloader": {"VideoStored", "DownloadRetryScheduled", "DownloadGaveUp"},
        "failover": {"GenerationRequested"},
    }


# --- wiring mistakes fail at start, not message by message -----------------------------------


async def test_a_stage_with_subscribers_but_no_dependencies_refuses_to_start(
    tmp_path: Path,
) -> None:
    stage = Stage("unit", _settings(tmp_path), bootstrap_servers=NOWHERE)

    @stage.subscriber(stage.topics.generation_requested)
    async def on_requested(event: GenerationRequested, deps: Deps[Any]) -> None:
        return None

    # Without deps in the context every message would fail validation and be dead-lettered.
    with pytest.raises(StageWiringError, match=r"no @stage\.dependencies"):
        async with stage.app.lifespan_context():
            pass


def test_a_stage_declares_its_dependencies_once(tmp_path: Path) -> None:
    stage = Stage("unit", _settings(tmp_path), bootstrap_servers=NOWHERE)

    async def build_deps(resources: Resources) -> None:
        return None

    stage.dependencies(build_deps)
    with pytest.raises(StageWiringError, match="twice"):
        stage.dependencies(build_deps)


def test_subscribers_join_the_stage_group_and_are_named_after_the_stage(tmp_path: Path) -> None:
    stage = create_stage("poller", _settings(tmp_path), bootstrap_servers=NOWHERE)
    subscribers = [s for s in stage.broker.subscribers if isinstance(s, LogicSubscriber)]
    assert len(subscribers) == len(stage.broker.subscribers) == 2
    assert {s.group_id for s in subscribers} == {"u.poller"}
    titles = {s.specification.name for s in stage.broker.subscribers}
    # A subscriber of several topics (timed checks and webhooks' hints) is titled by its first.
    assert titles == {"poller:on_submitted", "poller:on_due:u.poller.due"}


# --- timers: one spelling, `{prefix}{stage}.due` ---------------------------------------------


def test_the_stages_with_timers_are_the_ones_the_topic_list_names() -> None:
    with_timers = {
        name for name in STAGES if create_stage(name, Settings(), bootstrap_servers=NOWHERE).timers
    }
    assert with_timers == set(TIMER_STAGES)


@pytest.mark.parametrize("name", TIMER_STAGES)
def test_a_timer_stage_reads_what_its_timers_release(name: str) -> None:
    stage = create_stage(name, Settings(topic_prefix="u."), bootstrap_servers=NOWHERE)
    read = {t for s in stage.broker.subscribers for t in s.topic_names}  # type: ignore[attr-defined]
    assert f"u.{name}.due" in read
    assert stage.topics.due(name) == f"u.{name}.due"
    assert {f"u.timers.{name}", f"u.{name}.due"} <= set(stage.topics.internal())


# --- the registry ---------------------------------------------------------------------------


def test_the_registry_lists_each_stage_once_in_pipeline_order() -> None:
    assert STAGES == CORE_STAGES + FALLBACK_STAGES
    assert CORE_STAGES == ("submitter", "poller", "fetcher", "recorder")
    assert FALLBACK_STAGES == ("placeholder", "notifier", "redownloader", "failover")
    assert len(set(STAGES)) == len(REGISTRY)
    for registered in REGISTRY:
        assert registered.module == f"services.{registered.name}.app"
        assert registered.summary.endswith(".") and "\n" not in registered.summary
        assert describe(registered.name) == registered.summary
        assert (
            create_stage(registered.name, Settings(), bootstrap_servers=NOWHERE).name
            == registered.name
        )


def test_an_unknown_stage_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown stage 'nope'; known: submitter, poller"):
        entry("nope")
    with pytest.raises(ValueError, match="unknown stage"):
        create_stage("nope", Settings(), bootstrap_servers=NOWHERE)

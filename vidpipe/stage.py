"""The composition root: builds each stage's collaborators from settings and wires its app.

Every service process calls `Stage(...)` once; its handlers stay plain functions that receive
their collaborators, so tests build the same stages with other collaborators passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import structlog
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import Event
from vidpipe.bus import KafkaPublisher, TimerRelay, make_broker
from vidpipe.bus.admin import ensure_all_topics
from vidpipe.db.tables import open_engine
from vidpipe.errors import ConfigurationError
from vidpipe.logs import configure_logging
from vidpipe.net.guard import fetch_bounded
from vidpipe.providers import build_provider
from vidpipe.providers.base import InputImage, ProviderClient
from vidpipe.settings import Settings
from vidpipe.storage import VideoStorage, storage_from_url

__all__ = ["Stage", "open_providers", "open_storage", "resolve_bootstrap"]

log = structlog.get_logger("vidpipe.stage")

Hook = Callable[[], Awaitable[None]]
HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[None]])


def resolve_bootstrap(settings: Settings) -> str:
    """The broker address a service process connects to. Services never start a broker."""
    if not settings.kafka_bootstrap:
        raise ConfigurationError(
            "VIDPIPE_KAFKA_BOOTSTRAP is not set: point it at a broker, "
            "or use `vidpipe up`, which starts one"
        )
    return settings.kafka_bootstrap


class Stage:
    """One service process: a broker with dead letters, a publisher, optional timers, an app."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        bootstrap: str | None = None,
        timers: bool = False,
    ) -> None:
        self.name = name
        self.settings = settings
        self.bootstrap = bootstrap or resolve_bootstrap(settings)
        self.topics = settings.topics
        self.registry = CollectorRegistry()
        self.broker: KafkaBroker
        self.publisher: KafkaPublisher
        self.broker, self.publisher = make_broker(
            self.bootstrap, stage=name, topics=self.topics, registry=self.registry
        )
        self.app = FastStream(self.broker, on_startup=[self._ensure_topics])
        self._closers: list[Hook] = []
        self.relay: TimerRelay | None = None
        if timers:
            self.app.after_startup(self._start_relay)
        self.app.on_shutdown(self._close)
        if settings.metrics_port:
            self.app.on_startup(self._serve_metrics)

    def subscriber(self, *topics: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """A subscriber in this stage's consumer group, committing only after the work is done."""
        options.setdefault("group_id", self.settings.group_id(self.name))
        options.setdefault("ack_policy", AckPolicy.NACK_ON_ERROR)
        options.setdefault("auto_offset_reset", "earliest")
        subscriber = self.broker.subscriber(*topics, **options)

        def register(handler: HandlerT) -> HandlerT:
            subscriber(handler)
            return handler

        return register

    def publishes(self, *events: type[Event]) -> None:
        """Declare what this stage writes, so the AsyncAPI document shows it (docs only: the
        stage publishes through `self.publisher`, keyed by request id)."""
        for event in events:
            self.broker.publisher(
                self.topics.for_event(event),
                title=f"{self.name}:{event.__name__}",
                schema=event,
                description=(event.__doc__ or event.__name__).strip().splitlines()[0],
            )

    def on_startup(self, hook: Hook) -> None:
        self.app.on_startup(hook)

    def closing(self, hook: Hook) -> None:
        self._closers.append(hook)

    def open_providers(self) -> dict[str, ProviderClient]:
        """A client per configured provider, closed when the stage stops."""
        providers = open_providers(self.settings)
        for client in providers.values():
            self.closing(client.aclose)
        return providers

    def open_storage(self) -> VideoStorage:
        """The configured video storage, closed when the stage stops."""
        storage = open_storage(self.settings)
        self.closing(storage.aclose)
        return storage

    async def open_engine(self) -> AsyncEngine:
        engine = await open_engine(self.settings.database_url)
        self.closing(engine.dispose)
        return engine

    async def _ensure_topics(self) -> None:
        report = await ensure_all_topics(self.settings, self.bootstrap)
        created = [t for t, state in report.items() if state == "created"]
        if created:
            log.info("topics_created", stage=self.name, topics=created)

    async def _start_relay(self) -> None:
        self.relay = TimerRelay(
            bootstrap=self.bootstrap,
            timer_topic=self.topics.timers(self.name),
            group_id=self.settings.group_id(f"{self.name}.timers"),
            publish_raw=self.publisher.publish_raw,
            publish_dead_letter=self.publisher.publish_dead_letter,
            stage=self.name,
        )
        await self.relay.start()
        self.closing(self.relay.stop)

    async def _serve_metrics(self) -> None:
        assert self.settings.metrics_port is not None
        start_http_server(self.settings.metrics_port, addr="0.0.0.0", registry=self.registry)  # noqa: S104

    async def _close(self) -> None:
        for hook in reversed(self._closers):
            with contextlib.suppress(Exception):
                await hook()
        self._closers.clear()

    def run(self) -> None:
        """Run until SIGINT/SIGTERM (FastStream handles both)."""
        configure_logging(self.settings.log_level, self.settings.log_format)
        log.info("stage_starting", stage=self.name, topics_prefix=self.topics.prefix)
        asyncio.run(self.app.run())


def open_providers(settings: Settings) -> dict[str, ProviderClient]:
    """A client for every provider that has credentials (none is an error at submit time)."""
    clients: dict[str, ProviderClient] = {}
    for name in settings.providers.configured():
        clients[name] = build_provider(name, settings.providers, timeout_s=settings.http_timeout_s)
    return clients


def open_storage(settings: Settings) -> VideoStorage:
    return storage_from_url(settings.storage_url, base_dir=Path.cwd())


def image_fetcher(settings: Settings) -> Callable[[str], Awaitable[InputImage]]:
    """Input images come from user-supplied URLs: fetched through the SSRF guard, size-bounded."""
    client = httpx.AsyncClient(timeout=settings.http_timeout_s, follow_redirects=False)

    async def fetch(url: str) -> InputImage:
        data, content_type = await fetch_bounded(
            url,
            client=client,
            max_bytes=settings.max_input_image_bytes,
            allow_private=settings.allow_private_urls,
        )
        extension = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(
            content_type, "png"
        )
        return InputImage(data=data, content_type=content_type, filename=f"input.{extension}")

    return fetch

"""The composition root: one `Stage` per service process builds and wires everything it runs.

A stage's app.py says what the stage is and nothing else:

    stage = Stage("fetcher", settings, publishes=(VideoStored, DownloadUnavailable))

    @stage.dependencies
    async def build_deps(resources: Resources) -> FetcherDeps:
        return FetcherDeps(providers=resources.providers(), storage=resources.storage(), ...)

    @stage.subscriber(stage.topics.job_succeeded)
    async def on_succeeded(event: JobSucceeded, deps: Deps[FetcherDeps]) -> None:
        await handle_job_succeeded(event, deps)

FastStream runs the stage's `lifespan` around the broker. It calls the one dependency factory,
whose `Resources` register everything they open on one `AsyncExitStack`, and puts the result in
the app context under "deps", where `Deps[...]` (FastStream's `Context("deps")`) hands it to
each handler. On the way out, or when start-up fails halfway, everything opened is closed,
newest first. Handlers stay plain functions of (event, deps), so tests call them with other
collaborators.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import structlog
from faststream import Context, FastStream
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import Event
from schemas.topics import timer_topics as timer_topics_of
from vidpipe.bus import KafkaPublisher, RedeliveryBackoff, TimerRelay, make_broker
from vidpipe.bus.address import broker_address
from vidpipe.bus.admin import ensure_all_topics
from vidpipe.bus.batches import handle_keyed_batch
from vidpipe.bus.broker import BROKER_UNREACHABLE, until_broker_answers
from vidpipe.bus.deadletter import FailureHandling
from vidpipe.bus.health import HealthServer, StageHealth
from vidpipe.bus.lag import GroupLag
from vidpipe.bus.security import KafkaSecurity
from vidpipe.bus.tracing import configure_tracing
from vidpipe.db.tables import create_tables, open_engine
from vidpipe.errors import StageWiringError
from vidpipe.logs import configure_logging
from vidpipe.metrics import Metrics, activate
from vidpipe.net.images import InputImageFetcher
from vidpipe.providers import open_providers
from vidpipe.providers.base import ProviderClient
from vidpipe.settings import Settings
from vidpipe.storage import VideoStorage, storage_from_url

__all__ = [
    "DEPS",
    "Deps",
    "Resources",
    "Stage",
    "open_storage",
    "records_as_they_are",
]

log = structlog.get_logger("vidpipe.stage")

#: The app-context name the dependencies are kept under.
DEPS = "deps"

T = TypeVar("T")
#: A handler parameter FastStream fills with the stage's dependencies: `deps: Deps[FetcherDeps]`.
Deps = Annotated[T, Context(DEPS)]

Close = Callable[[], Awaitable[None]]
HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[None]])
EventHandlerT = TypeVar("EventHandlerT", bound=Callable[[Any, Any], Awaitable[None]])
DepsT = TypeVar("DepsT")
DepsFactory = Callable[["Resources"], Awaitable[DepsT]]


#: How long a keyed-batch consumer waits for a first record when none is there (then again).
KEYED_BATCH_WAIT_MS = 50


async def records_as_they_are(msg: Any, _original: Any) -> None:
    """The decoder of a batch subscriber whose handler reads each record itself
    (`message.raw_message`), so one unreadable record never fails its batch."""
    return None


class _Closable(Protocol):
    async def aclose(self) -> None: ...


ClosableT = TypeVar("ClosableT", bound=_Closable)


async def _select_one(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return True


def open_storage(settings: Settings) -> VideoStorage:
    return storage_from_url(
        settings.storage_url,
        base_dir=Path.cwd(),
        public=settings.supabase_public_bucket,
        signed_url_ttl_s=settings.supabase_signed_url_ttl_s,
        tus_threshold_bytes=settings.supabase_tus_threshold_bytes,
    )


class Resources:
    """What a stage's dependency factory opens; each is closed when the stage stops.

    Every method registers what it opened on the stage's exit stack before handing it out, so
    a factory that fails halfway leaves nothing open.
    """

    def __init__(self, stage: str, settings: Settings, stack: contextlib.AsyncExitStack) -> None:
        self.stage = stage
        self.settings = settings
        self._stack = stack
        #: The engines opened, so the stage's readiness probe can check the database.
        self.engines: list[AsyncEngine] = []

    def closing(self, close: Close, what: str) -> None:
        """Call `close` when the stage stops. A failing close is logged; the others still run."""

        async def close_and_log() -> None:
            try:
                await close()
            except Exception:
                log.warning("close_failed", stage=self.stage, resource=what, exc_info=True)

        self._stack.push_async_callback(close_and_log)

    def adopt(self, resource: ClosableT, what: str) -> ClosableT:
        """Close `resource` (anything with `aclose()`) when the stage stops."""
        self.closing(resource.aclose, what)
        return resource

    def providers(self) -> dict[str, ProviderClient]:
        """A client per configured provider."""
        return {
            name: self.adopt(client, f"provider {name}")
            for name, client in open_providers(timeout_s=self.settings.http_timeout_s).items()
        }

    def storage(self) -> VideoStorage:
        """The configured video storage."""
        return self.adopt(open_storage(self.settings), "storage")

    async def engine(self) -> AsyncEngine:
        """The database engine, with every table created."""
        engine = await open_engine(self.settings.database_url, create=False)
        self.closing(engine.dispose, "database engine")
        await create_tables(engine)
        self.engines.append(engine)
        return engine

    def image_fetcher(self) -> InputImageFetcher:
        """Fetches user-supplied input images through the SSRF guard, size-bounded."""
        fetcher = InputImageFetcher(
            max_bytes=self.settings.max_input_image_bytes,
            allow_private=self.settings.allow_private_urls,
            timeout_s=self.settings.http_timeout_s,
        )
        return self.adopt(fetcher, "input image fetcher")


class Stage:
    """One service process: a broker with dead letters and metrics, the publisher of the events
    it declares, optional durable timers, and a FastStream app whose lifespan owns resources."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        bootstrap_servers: str | None = None,
        timers: bool = False,
        publishes: Sequence[type[Event]] = (),
    ) -> None:
        self.name = name
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers or broker_address(settings)
        self.topics = settings.topics
        self.timers = timers
        self.metrics = CollectorRegistry()
        #: The domain metrics (vidpipe.metrics) on the same registry; current in the stage's tasks.
        self.domain = Metrics(name, self.metrics)
        #: Gauges read on an interval while metrics are served (`sample`), and the consumer
        #: groups whose lag is sampled (every subscriber's, the timer relay's).
        self._samplers: list[Callable[[], Awaitable[None]]] = []
        self._groups: set[str] = set()
        #: Failed deliveries of this stage's messages, and the wait before each comes again.
        self.backoff = RedeliveryBackoff(
            first_s=settings.handler_backoff_first_s,
            max_s=settings.handler_backoff_max_s,
            max_attempts=settings.handler_max_attempts,
        )
        #: What /readyz and /healthz report (served on the metrics port).
        self.health = StageHealth(
            name, registry=self.metrics, probe_interval_s=settings.health_interval_s
        )
        #: The port /healthz, /readyz and the metrics are served on, once the stage runs.
        self.health_port: int | None = None
        #: How every Kafka client of the stage authenticates (TLS/SASL from these settings).
        self.security = KafkaSecurity.from_settings(settings)
        patient, publisher = make_broker(
            self.bootstrap_servers,
            stage=name,
            topics=self.topics,
            publishes=publishes,
            registry=self.metrics,
            backoff=self.backoff,
            health=self.health,
            max_letter_bytes=settings.deadletter_max_bytes,
            graceful_timeout_s=settings.shutdown_timeout_s,
            security=self.security,
            domain=self.domain,
            linger_ms=settings.kafka_linger_ms,
        )
        self.broker: KafkaBroker = patient
        self.publisher: KafkaPublisher = publisher
        #: The failure model every subscriber follows (a batch handler dead-letters through it).
        self.failures: FailureHandling = patient.failures
        self.relay: TimerRelay | None = None
        #: The event type of each topic a `keyed_batches` subscriber reads, by its title (the
        #: AsyncAPI document is told, since a batch subscriber's handler takes raw records).
        self.batch_models: dict[str, dict[str, type[BaseModel]]] = {}
        self._deps_factory: DepsFactory[Any] | None = None
        self._resources: Resources | None = None
        self.app = FastStream(self.broker, lifespan=self.lifespan, on_startup=[self._ensure_topics])
        if timers:
            # After the broker connects (the relay publishes through it); stopped before it
            # disconnects, so no timer is released into a closed producer.
            self.app.after_startup(self._start_relay)
            self.app.on_shutdown(self._stop_relay)

    def dependencies(self, factory: DepsFactory[DepsT]) -> DepsFactory[DepsT]:
        """Declare the one async factory of what this stage's handlers need (as `Deps[...]`)."""
        if self._deps_factory is not None:
            raise StageWiringError(f"stage {self.name!r} declares its dependencies twice")
        self._deps_factory = factory
        return factory

    def subscriber(self, *topics: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """A subscriber in this stage's consumer group, committing only after the work is done;
        `consumer_workers` consumers of it when it reads one topic one message at a time.

        Named `<stage>:<handler>` in the AsyncAPI document, so stages reading one topic stay
        apart there.
        """
        options.setdefault("group_id", self.settings.group_id(self.name))
        options.setdefault("ack_policy", AckPolicy.NACK_ON_ERROR)
        options.setdefault("auto_offset_reset", "earliest")
        self._groups.add(str(options["group_id"]))
        workers = self.settings.consumer_workers
        if workers > 1 and len(topics) == 1 and not options.get("batch"):
            # FastStream's partition-parallel subscriber: one consumer per worker, each in the
            # group with its own partitions, committing after its own work (order per
            # partition kept, offsets only after the work, as with one consumer).
            options.setdefault("max_workers", workers)

        def register(handler: HandlerT) -> HandlerT:
            title = options.get("title") or f"{self.name}:{handler.__name__}"
            self.broker.subscriber(*topics, **{**options, "title": title})(handler)
            return handler

        return register

    def keyed_batches(
        self, models: Mapping[str, type[BaseModel]], **options: Any
    ) -> Callable[[EventHandlerT], EventHandlerT]:
        """A subscriber of `models`' topics (each topic's event type) for a handler of one event,
        `handler(event, deps)`, fed a consumer batch at a time: the batch's requests handled
        side by side, each request's messages in order, offsets committed after the whole batch
        (`vidpipe.bus.batches`). `consumer_workers` does not apply: the batch is the parallelism.
        """
        concurrency = self.settings.handler_concurrency

        def register(handler: EventHandlerT) -> EventHandlerT:
            self.batch_models[f"{self.name}:{handler.__name__}"] = dict(models)

            async def on_batch(_body: Any, message: KafkaMessage, deps: Deps[Any]) -> None:
                async def handle(event: Any) -> None:
                    await handler(event, deps)

                await handle_keyed_batch(
                    message.raw_message,
                    models=models,
                    handle=handle,
                    failures=self.failures,
                    concurrency=concurrency,
                )

            on_batch.__name__ = handler.__name__
            self.subscriber(
                *models,
                **{
                    "batch": True,
                    "max_records": self.settings.consumer_batch_max,
                    "batch_timeout_ms": KEYED_BATCH_WAIT_MS,
                    "decoder": records_as_they_are,
                    **options,
                },
            )(on_batch)
            return handler

        return register

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Open the stage's resources and dependencies; close all of them on the way out."""
        if self._deps_factory is None and self.broker.subscribers:
            raise StageWiringError(
                f"stage {self.name!r} has subscribers but no @stage.dependencies factory"
            )
        # Before the broker starts its consumers: their tasks inherit this stage's metrics.
        activate(self.domain)
        async with contextlib.AsyncExitStack() as stack:
            resources = Resources(self.name, self.settings, stack)
            self._resources = resources
            stack.callback(self._forget_resources)
            stack.callback(self._samplers.clear)  # the next run's factory registers its own
            if self.settings.metrics_port is not None:
                self._serve_metrics(resources, self.settings.metrics_port)
            if self._deps_factory is not None:
                deps = await self._deps_factory(resources)
                self.app.context.set_global(DEPS, deps)
                stack.callback(self.app.context.reset_global, DEPS)
            probe = asyncio.create_task(self._probe_forever(resources), name="health-probe")

            async def stop_probe() -> None:
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe

            stack.push_async_callback(stop_probe)
            yield

    def _forget_resources(self) -> None:
        self._resources = None

    def _serve_metrics(self, resources: Resources, port: int) -> None:
        """Metrics, /healthz and /readyz on `port` (0: any free port, see `health_port`)."""
        server = HealthServer(self.health, self.metrics, port)
        server.start()
        self.health_port = server.port

        async def stop() -> None:
            # shutdown() waits for the serving thread's loop to notice: not on the event loop.
            await asyncio.to_thread(server.stop)

        resources.closing(stop, "metrics server")
        sampler = asyncio.create_task(self._sample_forever(), name="metrics-sampler")

        async def stop_sampler() -> None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

        resources.closing(stop_sampler, "metrics sampler")

    def sample(self, sampler: Callable[[], Awaitable[None]]) -> None:
        """Run `sampler` (it sets gauges of `self.domain`) every `metrics_interval_s` while
        metrics are served; a failing sample is logged and the next one tried."""
        self._samplers.append(sampler)

    async def _sample_forever(self) -> None:
        """Consumer lag of the stage's groups, timers pending, and every `sample`."""
        groups = set(self._groups)
        timer_topics: set[str] = set()
        if self.timers:
            groups.add(self.settings.group_id(f"{self.name}.timers"))
            timer_topics = set(timer_topics_of(self.topics.timers(self.name)))
        lag = GroupLag(
            self.bootstrap_servers,
            sorted(groups),
            client_id=f"vidpipe-{self.name}-metrics",
            security=self.security,
        )
        try:
            while True:
                try:
                    self.domain.set_lag(await lag.read(), timer_topics)
                except Exception as exc:  # the broker away: the next sample tries again
                    log.debug("lag_sample_failed", stage=self.name, error=type(exc).__name__)
                for sample in list(self._samplers):
                    try:
                        await sample()
                    except Exception as exc:
                        log.debug("sample_failed", stage=self.name, error=type(exc).__name__)
                await asyncio.sleep(self.settings.metrics_interval_s)
        finally:
            await lag.aclose()

    async def _probe_forever(self, resources: Resources) -> None:
        """Check the broker and the database every `health_interval_s`, for /readyz."""
        interval = self.settings.health_interval_s
        while True:
            broker_ok = await self._probe(self.broker.ping(timeout=max(1.0, interval)))
            checks = [await self._probe(_select_one(engine)) for engine in resources.engines]
            database_ok = all(checks) if checks else None
            self.health.probed(broker_ok=broker_ok, database_ok=database_ok)
            await asyncio.sleep(interval)

    async def _probe(self, check: Awaitable[bool]) -> bool:
        try:
            # At least a second: a broker round trip may take longer than a short interval.
            async with asyncio.timeout(max(1.0, self.settings.health_interval_s)):
                return await check
        except Exception as exc:  # any failure of a probe means "not reachable", nothing more
            log.debug("health_probe_failed", stage=self.name, error=type(exc).__name__)
            return False

    async def _ensure_topics(self) -> None:
        report = await until_broker_answers(
            lambda: ensure_all_topics(self.settings, self.bootstrap_servers),
            stage=self.name,
            what="ensure topics",
        )
        created = [t for t, state in report.items() if state == "created"]
        if created:
            log.info("topics_created", stage=self.name, topics=created)

    async def _start_relay(self) -> None:
        if self._resources is None:
            raise StageWiringError(f"stage {self.name!r}: start it through its app's lifespan")
        self.relay = TimerRelay(
            bootstrap_servers=self.bootstrap_servers,
            timer_topic=self.topics.timers(self.name),
            group_id=self.settings.group_id(f"{self.name}.timers"),
            publish_raw=self.publisher.publish_raw,
            publish_dead_letter=self.publisher.publish_dead_letter,
            stage=self.name,
            targets=[self.topics.due(self.name)],
            security=self.security,
        )
        # Registered before it starts: a start that fails halfway still stops what it began.
        self._resources.closing(self.relay.stop, "timer relay")
        relay = self.relay

        async def start_once() -> None:
            try:
                await relay.start()
            except BROKER_UNREACHABLE:
                await relay.stop()  # a clean slate for the next attempt
                raise

        await until_broker_answers(start_once, stage=self.name, what="start timer relay")

    async def _stop_relay(self) -> None:
        if self.relay is not None:
            await self.relay.stop()  # stopping twice is harmless: the exit stack stops it again

    def run(self) -> None:
        """Run until SIGINT/SIGTERM (FastStream handles both)."""
        configure_logging(self.settings.log_level, self.settings.log_format)
        log.info("stage_starting", stage=self.name, topics_prefix=self.topics.prefix)
        # Off unless OTEL_* says where spans go (vidpipe.bus.tracing).
        tracing = configure_tracing(self.name)
        try:
            asyncio.run(self.app.run())
        finally:
            if tracing is not None:
                tracing.shutdown()  # sends the spans still buffered

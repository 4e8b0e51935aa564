"""Submitter logic with in-memory collaborators: one job per request, quota waits durably."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import idna
import pytest

from schemas.events import MESSAGE_MAX_CHARS, GenerationRequested, JobFailed, JobSubmitted
from schemas.topics import Topics
from services.submitter.handlers import (
    SubmitterDeps,
    handle_generation_requested,
    handle_job_finished,
)
from vidpipe.db.ledger import BatchedLedger, Ledger
from vidpipe.db.tables import open_engine
from vidpipe.errors import (
    AuthenticationFailed,
    InputFetchError,
    ProviderUnavailable,
    RateLimited,
    UnsafeURLError,
)
from vidpipe.net.guard import fetch_bounded
from vidpipe.net.images import InputImageFetcher
from vidpipe.providers.base import InputImage, ProviderJob, VideoSpec
from vidpipe.testing import FakeProvider, MemoryPublisher

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def _no_image(url: str) -> InputImage:
    raise AssertionError("no image expected")


# Every test on the plain ledger and on the batched one the stages run: the same answers.
@pytest.fixture(params=[Ledger, BatchedLedger])
async def ledger(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    engine = await open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield request.param(engine)
    await engine.dispose()


def _deps(
    ledger: Ledger, provider: FakeProvider, quota: int = 2
) -> tuple[SubmitterDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    return (
        SubmitterDeps(
            providers={provider.name: provider},
            ledger=ledger,
            publisher=publisher,
            topics=Topics("t."),
            default_provider="azure-sora",
            quota=lambda _name: quota,
            fetch_image=_no_image,
            clock=lambda: NOW,
        ),
        publisher,
    )


def _req(rid: str) -> GenerationRequested:
    return GenerationRequested.model_validate({"request_id": rid, "prompt": "a fox"})


async def test_resent_request_starts_one_job_and_repeats_the_same_event(ledger: Ledger) -> None:
    provider = FakeProvider()
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("r1"), deps)
    await handle_generation_requested(_req("r1"), deps)
    assert len(provider.created) == 1
    assert provider.created[0][1] == "r1"  # the request id is the Idempotency-Key
    submitted = publisher.of_type(JobSubmitted)
    assert len(submitted) == 2
    assert submitted[0].event_id == submitted[1].event_id


async def test_over_quota_waits_on_a_timer_and_goes_when_a_slot_frees(ledger: Ledger) -> None:
    provider = FakeProvider()
    deps, publisher = _deps(ledger, provider, quota=2)
    for rid in ("a", "b", "c"):
        await handle_generation_requested(_req(rid), deps)
    assert len(provider.created) == 2
    assert len(publisher.scheduled) == 1
    _delay, topic, key, payload = publisher.scheduled[0]
    assert (topic, key) == ("t.submitter.due", "c")
    await handle_job_finished("a", deps)
    await handle_job_finished("a", deps)  # a redelivered finish frees one slot, not two
    assert await ledger.in_use("azure-sora") == 1
    await handle_generation_requested(GenerationRequested.model_validate(payload), deps)
    assert len(provider.created) == 3
    assert await ledger.in_use("azure-sora") == 2


async def test_rate_limit_waits_as_long_as_retry_after(ledger: Ledger) -> None:
    provider = FakeProvider(create_error=RateLimited("slow down", status_code=429, retry_after=7))
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("r"), deps)
    assert publisher.scheduled[0][0] == 7
    assert await ledger.in_use("azure-sora") == 0
    assert publisher.events == []


async def test_terminal_error_fails_the_request_and_frees_the_slot(ledger: Ledger) -> None:
    provider = FakeProvider(create_error=AuthenticationFailed("401", status_code=401))
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("r"), deps)
    (failed,) = publisher.of_type(JobFailed)
    assert isinstance(failed, JobFailed)
    assert failed.reason_code == "authentication_failed"
    assert await ledger.in_use("azure-sora") == 0


async def test_unknown_provider_fails_clearly(ledger: Ledger) -> None:
    deps, publisher = _deps(ledger, FakeProvider())
    req = GenerationRequested.model_validate({"request_id": "r", "prompt": "x", "provider": "nope"})
    await handle_generation_requested(req, deps)
    (failed,) = publisher.of_type(JobFailed)
    assert isinstance(failed, JobFailed)
    assert failed.reason_code == "unknown_provider"


async def test_events_are_stamped_by_the_stages_clock(ledger: Ledger) -> None:
    deps, publisher = _deps(ledger, FakeProvider())
    await handle_generation_requested(_req("ok"), deps)
    await handle_generation_requested(_req("ok"), deps)  # the re-announcement too
    deps.providers = {"azure-sora": FakeProvider(create_error=AuthenticationFailed("401"))}
    await handle_generation_requested(_req("no"), deps)
    assert [e.event_type for e in publisher.events] == ["JobSubmitted", "JobSubmitted", "JobFailed"]
    assert {e.occurred_at for e in publisher.events} == {NOW}


async def test_a_long_failure_message_is_clipped_to_the_contracts_limit(ledger: Ledger) -> None:
    provider = FakeProvider(create_error=AuthenticationFailed("denied " * 500))
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("r"), deps)
    (failed,) = publisher.of_type(JobFailed)
    assert isinstance(failed, JobFailed)
    assert failed.message == ("denied " * 500)[:MESSAGE_MAX_CHARS]


# --- no paid job twice ---------------------------------------------------------------------


async def test_a_lost_create_answer_is_reconciled_not_resent(ledger: Ledger) -> None:
    provider = FakeProvider(lose_create_answers=1)
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("r"), deps)
    # The job exists at the provider, its answer was lost: wait, keeping the slot and the intent.
    assert len(provider.jobs) == 1 and publisher.events == []
    assert len(publisher.scheduled) == 1
    assert await ledger.in_use("azure-sora") == 1
    await handle_generation_requested(_req("r"), deps)
    assert len(provider.created) == 1, "a second paid job was started"
    assert len(provider.list_calls) == 1
    (submitted,) = publisher.of_type(JobSubmitted)
    assert isinstance(submitted, JobSubmitted)
    assert submitted.provider_job_id == provider.jobs[0].job_id
    assert await ledger.in_use("azure-sora") == 1


class _Crash(BaseException):
    """The process dying: not an Exception, so no handler rule catches it."""


class _CrashingProvider(FakeProvider):
    """Dies once around a create: "before" it reaches the provider (after the intent is
    written), or "after" the provider made the job (before the ledger write)."""

    def __init__(self, when: str) -> None:
        super().__init__()
        self.when: str | None = when

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        if self.when == "before":
            self.when = None
            raise _Crash("before the create")
        job = await super().create_job(spec, idempotency_key=idempotency_key)
        if self.when == "after":
            self.when = None
            raise _Crash("after the create")
        return job


async def test_a_crash_between_create_and_ledger_write_adopts_the_job(ledger: Ledger) -> None:
    provider = _CrashingProvider("after")
    deps, publisher = _deps(ledger, provider)
    with pytest.raises(_Crash):
        await handle_generation_requested(_req("r"), deps)
    await handle_generation_requested(_req("r"), deps)  # the redelivery after the restart
    assert len(provider.created) == 1
    (submitted,) = publisher.of_type(JobSubmitted)
    assert isinstance(submitted, JobSubmitted)
    assert submitted.provider_job_id == "task_1"


async def test_an_intent_whose_create_never_arrived_creates(ledger: Ledger) -> None:
    provider = _CrashingProvider("before")
    deps, publisher = _deps(ledger, provider)
    with pytest.raises(_Crash):
        await handle_generation_requested(_req("r"), deps)
    assert provider.jobs == []
    await handle_generation_requested(_req("r"), deps)
    assert len(provider.list_calls) == 1 and len(provider.jobs) == 1
    assert len(publisher.of_type(JobSubmitted)) == 1


async def test_another_requests_job_is_never_adopted(ledger: Ledger) -> None:
    provider = _CrashingProvider("none")
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("first"), deps)  # same prompt, its own job
    provider.when = "before"
    with pytest.raises(_Crash):
        await handle_generation_requested(_req("second"), deps)
    await handle_generation_requested(_req("second"), deps)
    submitted = [e for e in publisher.of_type(JobSubmitted) if isinstance(e, JobSubmitted)]
    jobs = {e.request_id: e.provider_job_id for e in submitted}
    assert jobs == {"first": "task_1", "second": "task_2"}


async def test_a_5xx_on_create_keeps_the_claim_and_reconciles(ledger: Ledger) -> None:
    provider = FakeProvider(create_error=ProviderUnavailable("503", status_code=503))
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("r"), deps)
    assert await ledger.in_use("azure-sora") == 1 and len(publisher.scheduled) == 1
    provider.create_error = None
    await handle_generation_requested(_req("r"), deps)
    assert len(provider.list_calls) == 1
    assert len(publisher.of_type(JobSubmitted)) == 1


# --- every failure path frees the slot -----------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        httpx.DecodingError("bad gzip"),
        idna.IDNAError("bad label"),
        UnicodeError("label too long"),
        RuntimeError("anything"),
        InputFetchError("HTTP 404"),
    ],
)
async def test_any_image_fetch_error_fails_and_frees_the_slot(
    ledger: Ledger, error: Exception
) -> None:
    async def broken(url: str) -> InputImage:
        raise error

    provider = FakeProvider()
    deps, publisher = _deps(ledger, provider, quota=1)
    deps.fetch_image = broken
    await handle_generation_requested(_image_req("r"), deps)
    (failed,) = publisher.of_type(JobFailed)
    assert isinstance(failed, JobFailed) and failed.reason_code
    assert provider.created == []
    assert await ledger.in_use("azure-sora") == 0
    # The quota of 1 is free again: the next request goes.
    await handle_generation_requested(_req("next"), deps)
    assert len(provider.created) == 1


def _image_req(rid: str, url: str = "https://images.example/cat.png") -> GenerationRequested:
    return GenerationRequested.model_validate(
        {"request_id": rid, "prompt": "a fox", "input_image_url": url}
    )


async def _serve(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _gzip_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = b"this is not gzip at all" * 10
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    writer.close()


async def _redirect_to_unencodable(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await reader.readuntil(b"\r\n\r\n")
    # A 70-character label: the IDNA codec refuses it (labels are at most 63).
    location = b"http://" + b"a" * 70 + b".example/cat.png"
    writer.write(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % location)
    await writer.drain()
    writer.close()


@pytest.mark.parametrize("serve", [_gzip_garbage, _redirect_to_unencodable])
async def test_a_hostile_image_server_ends_in_job_failed_with_the_slot_released(
    ledger: Ledger,
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> None:
    """The real fetcher over a real socket: the bytes the server sends are the test."""
    server, port = await _serve(serve)
    provider = FakeProvider()
    deps, publisher = _deps(ledger, provider, quota=1)
    async with InputImageFetcher(max_bytes=100_000, allow_private=True) as fetcher:
        # Requests may only name https URLs; the test server speaks plain HTTP on loopback.
        async def fetch_local(url: str) -> InputImage:
            return await fetcher(f"http://127.0.0.1:{port}/cat.png")

        deps.fetch_image = fetch_local
        try:
            await handle_generation_requested(_image_req("r"), deps)
        finally:
            server.close()
            await server.wait_closed()
    (failed,) = publisher.of_type(JobFailed)
    assert isinstance(failed, JobFailed)
    assert failed.reason_code == "unsafe_input_url"
    assert await ledger.in_use("azure-sora") == 0
    assert provider.created == []


async def test_the_guard_turns_garbled_answers_into_input_fetch_errors() -> None:
    for serve in (_gzip_garbage, _redirect_to_unencodable):
        server, port = await _serve(serve)
        try:
            async with httpx.AsyncClient() as client:
                with pytest.raises(UnsafeURLError) as caught:
                    await fetch_bounded(
                        f"http://127.0.0.1:{port}/cat.png",
                        client=client,
                        max_bytes=100_000,
                        allow_private=True,
                    )
        finally:
            server.close()
            await server.wait_closed()
        # Terminal: retrying the same URL serves the same garbage.
        assert getattr(caught.value, "retryable", False) is False

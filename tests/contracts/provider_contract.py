"""What every `ProviderClient` promises, as sets of tests a backend's test class inherits.

A backend's test class defines a `backend` fixture (a `ProviderBackend`: a way to open a client
in a given situation, and the spec to send it) and inherits the contract parts that apply to it.
`ProviderContract` is all of them; a backend that cannot show a case (the scripted FakeProvider
has no keys to refuse) inherits the parts one by one and leaves that case out, visibly, rather
than skipping it at run time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import pytest

from vidpipe.errors import (
    AuthenticationFailed,
    ContentPolicyViolation,
    CreateOutcomeUnknown,
    DownloadNotAvailable,
    NotFound,
    RateLimited,
)
from vidpipe.providers import PROVIDER_NAMES, ProviderClient, ProviderJob, VideoSpec
from vidpipe.storage.validation import Mp4StreamValidator

#: What the backend must arrange for a client: a working one, or one that meets a given failure.
Situation = Literal[
    "ok", "rate_limited", "content_policy", "bad_key", "download_missing", "drop_after_create"
]

# Where a job's status may go next; a job never moves backwards.
_ORDER = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}
_POLL_DEADLINE_S = 20.0


class ProviderBackend(Protocol):
    #: Secrets the backend's clients hold; no error may quote them.
    secrets: tuple[str, ...]

    def client(self, situation: Situation = "ok") -> AbstractAsyncContextManager[ProviderClient]:
        """An open client that meets `situation`; closed on exit."""
        ...

    def spec(self, situation: Situation = "ok") -> VideoSpec:
        """The spec whose job meets `situation` (e.g. a prompt carrying an emulator directive)."""
        ...


def fresh_key() -> str:
    """An idempotency key no other test uses (a server may remember keys across tests)."""
    return f"contract-{uuid.uuid4().hex}"


async def poll_until_terminal(client: ProviderClient, job_id: str) -> list[ProviderJob]:
    """Every status seen until the job is terminal, honouring (but capping) the poll hint."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _POLL_DEADLINE_S
    seen: list[ProviderJob] = []
    while True:
        job = await client.get_job(job_id)
        seen.append(job)
        if job.terminal:
            return seen
        assert loop.time() < deadline, f"job stuck in {job.raw_status}"
        await asyncio.sleep(min(job.poll_after_s or 0.02, 0.05))


async def succeeded_job(backend: ProviderBackend, client: ProviderClient) -> ProviderJob:
    created = await client.create_job(backend.spec("ok"), idempotency_key=fresh_key())
    job = (await poll_until_terminal(client, created.job_id))[-1]
    assert job.status == "succeeded", (job.raw_status, job.failure_code)
    return job


def assert_no_secret(exc: BaseException, secrets: tuple[str, ...]) -> None:
    for secret in secrets:
        assert secret not in str(exc) and secret not in repr(exc)


class CreatesJobs:
    async def test_is_a_provider_client(self, backend: ProviderBackend) -> None:
        async with backend.client() as client:
            assert isinstance(client, ProviderClient)
            assert client.name in PROVIDER_NAMES
            # A host (and port) only: it goes into events and records.
            assert client.endpoint_host
            assert not any(c in client.endpoint_host for c in "/@?#")

    async def test_create_job_returns_a_job_in_flight(self, backend: ProviderBackend) -> None:
        async with backend.client() as client:
            job = await client.create_job(backend.spec(), idempotency_key=fresh_key())
        assert job.job_id
        assert job.status in ("queued", "running")
        assert not job.terminal and job.raw_status


class WalksJobsToSucceeded:
    async def test_get_job_walks_forward_to_succeeded(self, backend: ProviderBackend) -> None:
        async with backend.client() as client:
            created = await client.create_job(backend.spec(), idempotency_key=fresh_key())
            seen = await poll_until_terminal(client, created.job_id)
        ranks = [_ORDER[job.status] for job in seen]
        assert ranks == sorted(ranks), [job.status for job in seen]
        done = seen[-1]
        assert done.status == "succeeded", (done.raw_status, done.failure_code)
        assert done.generation_ids
        assert done.failure_code is None
        assert done.expires_at is None or done.expires_at.tzinfo is not None


class StreamsVideos:
    async def test_download_streams_an_mp4(self, backend: ProviderBackend) -> None:
        async with backend.client() as client:
            job = await succeeded_job(backend, client)
            async with client.download(job.job_id, job.generation_ids[0]) as video:
                assert video.status_code == 200
                assert video.content_type.startswith("video/")
                validator = Mp4StreamValidator(
                    max_bytes=10**9, expected_length=video.content_length
                )
                async for chunk in video.chunks:
                    validator.feed(chunk)
        assert validator.finish().size_bytes > 0  # raises unless it is a whole MP4

    async def test_a_missing_download_is_download_not_available(
        self, backend: ProviderBackend
    ) -> None:
        async with backend.client("download_missing") as client:
            created = await client.create_job(
                backend.spec("download_missing"), idempotency_key=fresh_key()
            )
            job = (await poll_until_terminal(client, created.job_id))[-1]
            assert job.status == "succeeded"
            with pytest.raises(DownloadNotAvailable):
                async with client.download(job.job_id, job.generation_ids[0]):
                    pytest.fail("a missing video must not be handed over")


class RefusesUnknownJobs:
    async def test_an_unknown_job_is_not_found(self, backend: ProviderBackend) -> None:
        async with backend.client() as client:
            with pytest.raises(NotFound) as info:
                await client.get_job("task_no_such_job")
        assert not info.value.retryable


class CancelsJobs:
    async def test_cancel_job_stops_a_job_in_flight_and_refuses_an_unknown_one(
        self, backend: ProviderBackend
    ) -> None:
        async with backend.client() as client:
            # Slow, so the job is still queued when the cancel comes: fal cancels only those.
            spec = backend.spec()
            slow = dataclasses.replace(spec, prompt=f"{spec.prompt} [emulator:slow=50]")
            created = await client.create_job(slow, idempotency_key=fresh_key())
            assert await client.cancel_job(created.job_id) is True
            try:
                job = await client.get_job(created.job_id)
            except NotFound:
                pass  # cancelled by deleting it (Azure's jobs, /v1/videos)
            else:
                assert job.status in ("cancelled", "failed"), job.raw_status
            # Nothing to stop: an answer, not an error.
            assert await client.cancel_job("task_no_such_job") is False


class RefusesBadKeys:
    async def test_a_bad_key_is_authentication_failed_without_the_key(
        self, backend: ProviderBackend
    ) -> None:
        async with backend.client("bad_key") as client:
            with pytest.raises(AuthenticationFailed) as created:
                await client.create_job(backend.spec(), idempotency_key=fresh_key())
            with pytest.raises(AuthenticationFailed) as polled:
                await client.get_job("task_no_such_job")
            assert_no_secret(created.value, backend.secrets)
            assert_no_secret(polled.value, backend.secrets)
            assert not any(secret in repr(client) for secret in backend.secrets)


class ReportsRateLimits:
    async def test_a_rate_limit_is_rate_limited_with_retry_after(
        self, backend: ProviderBackend
    ) -> None:
        async with backend.client("rate_limited") as client:
            with pytest.raises(RateLimited) as info:
                await client.create_job(backend.spec("rate_limited"), idempotency_key=fresh_key())
        assert info.value.retryable
        assert info.value.retry_after is not None and info.value.retry_after > 0


class ReportsContentPolicy:
    async def test_a_refused_prompt_is_a_content_policy_violation(
        self, backend: ProviderBackend
    ) -> None:
        async with backend.client("content_policy") as client:
            with pytest.raises(ContentPolicyViolation) as info:
                await client.create_job(backend.spec("content_policy"), idempotency_key=fresh_key())
        assert not info.value.retryable
        assert_no_secret(info.value, backend.secrets)


def _unique(spec: VideoSpec, label: str) -> VideoSpec:
    """`spec` with a prompt no other test sends (a server keeps jobs across tests)."""
    return dataclasses.replace(spec, prompt=f"{label} {uuid.uuid4().hex} {spec.prompt}")


class ListsJobs:
    async def test_list_jobs_finds_a_created_job_with_what_it_was_asked(
        self, backend: ProviderBackend
    ) -> None:
        spec = _unique(backend.spec(), "listed")
        before = datetime.now(UTC) - timedelta(seconds=5)
        async with backend.client() as client:
            created = await client.create_job(spec, idempotency_key=fresh_key())
            listed = await client.list_jobs(before)
            later = await client.list_jobs(datetime.now(UTC) + timedelta(minutes=5))
        (found,) = [job for job in listed if job.job_id == created.job_id]
        assert found.prompt == spec.prompt
        assert (found.width, found.height, found.seconds) == (spec.width, spec.height, spec.seconds)
        assert found.created_at is not None and found.created_at >= before
        assert created.job_id not in {job.job_id for job in later}


class LosesCreateAnswers:
    async def test_a_lost_create_answer_is_outcome_unknown_and_the_job_is_listed(
        self, backend: ProviderBackend
    ) -> None:
        spec = _unique(backend.spec("drop_after_create"), "dropped")
        before = datetime.now(UTC) - timedelta(seconds=5)
        async with backend.client("drop_after_create") as client:
            with pytest.raises(CreateOutcomeUnknown) as info:
                await client.create_job(spec, idempotency_key=fresh_key())
            listed = await client.list_jobs(before)
        # Not re-sent by the client: exactly one job exists, and the list shows it.
        assert [job.prompt for job in listed].count(spec.prompt) == 1
        assert info.value.retryable is False


class ProviderContract(
    CancelsJobs,
    ListsJobs,
    LosesCreateAnswers,
    CreatesJobs,
    WalksJobsToSucceeded,
    StreamsVideos,
    RefusesUnknownJobs,
    RefusesBadKeys,
    ReportsRateLimits,
    ReportsContentPolicy,
):
    """The whole contract, for a real client talking to a real server."""

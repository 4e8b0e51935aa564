"""The provider contract, run against the real clients over HTTP to the emulator, and the fake.

The emulator (vidpipe.dev.emulator) serves every protocol on a loopback port inside the test's
event loop; nothing is mocked on either side. Situations are arranged the way a user of the
emulator would: prompt directives (`[emulator:rate_limit]`), a moderated word, a wrong key.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from tests.contracts.provider_contract import (
    CancelsJobs,
    CreatesJobs,
    ListsJobs,
    LosesCreateAnswers,
    ProviderBackend,
    ProviderContract,
    RefusesBadKeys,
    RefusesUnknownJobs,
    ReportsContentPolicy,
    ReportsRateLimits,
    Situation,
    StreamsVideos,
    WalksJobsToSucceeded,
    succeeded_job,
)
from tests.contracts.samples import fake_mp4
from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.errors import (
    ContentPolicyViolation,
    CreateOutcomeUnknown,
    DownloadNotAvailable,
    RateLimited,
    TerminalProviderError,
)
from vidpipe.net.retry import RetryPolicy
from vidpipe.providers import (
    AzureSoraConfig,
    FalConfig,
    GeminiConfig,
    OpenAIVideosConfig,
    ProviderClient,
    ProviderConfig,
    ProviderJob,
    ReplicateConfig,
    RunwayConfig,
    VideoSpec,
    build_provider,
)
from vidpipe.testing import FakeProvider

KEY = "emulator-contract-key-8c1d"
WRONG_KEY = "wrong-key-that-must-not-leak-42"
# 100x: the emulated ~7 s schedule takes ~70 ms of real time.
TIME_SCALE = 100.0
# The emulator refuses prompts with this word at create time (moderation_mode="reject").
MODERATED_WORD = "forbidden"

PROMPTS: dict[Situation, str] = {
    "ok": "a lighthouse at dusk",
    "bad_key": "a lighthouse at dusk",
    "rate_limited": "a busy lighthouse [emulator:rate_limit]",
    "content_policy": f"a {MODERATED_WORD} lighthouse",
    "download_missing": "a lost lighthouse [emulator:download=missing]",
    "drop_after_create": "an unanswered lighthouse [emulator:drop_after_create]",
}


async def _no_wait(_seconds: float) -> None:
    return None


@pytest.fixture(scope="module")
async def emulator() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(
        api_key=KEY,  # pydantic coerces str to SecretStr
        time_scale=TIME_SCALE,
        max_concurrent_jobs=None,
        moderation_mode="reject",
        moderation_words=[MODERATED_WORD],
    )
    async with EmulatorServer(config) as server:
        yield server


class EmulatorBackend:
    """A real provider client, built by the registry, talking HTTP to the emulator."""

    secrets = (KEY, WRONG_KEY)

    def __init__(self, name: str, config: Callable[[str], ProviderConfig]) -> None:
        self.name = name
        self._config = config

    @asynccontextmanager
    async def client(self, situation: Situation = "ok") -> AsyncIterator[ProviderClient]:
        config = self._config(WRONG_KEY if situation == "bad_key" else KEY)
        # Retries are recorded, not waited: a rate-limited create must not slow the suite.
        client = build_provider(
            self.name, config, timeout_s=10.0, retry=RetryPolicy(sleep=_no_wait)
        )
        try:
            yield client
        finally:
            await client.aclose()

    def spec(self, situation: Situation = "ok") -> VideoSpec:
        # 1280x720 for 4 s is valid for both protocols.
        return VideoSpec(prompt=PROMPTS[situation], width=1280, height=720, seconds=4)


class TestAzureSoraOverEmulator(ProviderContract):
    @pytest.fixture
    def backend(self, emulator: EmulatorServer) -> EmulatorBackend:
        return EmulatorBackend(
            "azure-sora",
            lambda key: AzureSoraConfig(endpoint=emulator.azure_endpoint, api_key=key),
        )


class TestOpenAIVideosOverEmulator(ProviderContract):
    @pytest.fixture
    def backend(self, emulator: EmulatorServer) -> EmulatorBackend:
        return EmulatorBackend(
            "openai-videos",
            lambda key: OpenAIVideosConfig(base_url=emulator.openai_base_url, api_key=key),
        )


class TestFalOverEmulator(
    CancelsJobs,
    CreatesJobs,
    WalksJobsToSucceeded,
    StreamsVideos,
    RefusesUnknownJobs,
    RefusesBadKeys,
    ReportsRateLimits,
    ReportsContentPolicy,
):
    """Left out: ListsJobs and LosesCreateAnswers (fal lists no queue); in their place, the lost
    create is outcome-unknown and reconciling it is refused, so it is never paid for twice."""

    @pytest.fixture
    def backend(self, emulator: EmulatorServer) -> EmulatorBackend:
        return EmulatorBackend(
            "fal", lambda key: FalConfig(base_url=emulator.base_url, api_key=key)
        )

    async def test_a_lost_create_is_outcome_unknown_and_cannot_be_reconciled(
        self, backend: EmulatorBackend, emulator: EmulatorServer
    ) -> None:
        before = emulator.state.stats["fal.jobs_created"]
        async with backend.client("drop_after_create") as client:
            with pytest.raises(CreateOutcomeUnknown) as lost:
                await client.create_job(backend.spec("drop_after_create"), idempotency_key="k")
            with pytest.raises(TerminalProviderError) as listed:
                await client.list_jobs(datetime.now(UTC) - timedelta(minutes=1))
        assert lost.value.retryable is False and not listed.value.retryable
        # Exactly one job was created: the client did not re-send the lost create.
        assert emulator.state.stats["fal.jobs_created"] == before + 1


class TestReplicateOverEmulator(
    CancelsJobs,
    LosesCreateAnswers,
    CreatesJobs,
    WalksJobsToSucceeded,
    StreamsVideos,
    RefusesUnknownJobs,
    RefusesBadKeys,
    ReportsRateLimits,
    ReportsContentPolicy,
):
    """ListsJobs is replaced by the test below: a prediction echoes its input, whose aspect ratio
    is not a size, so a listed job states its prompt and duration but no width or height."""

    @pytest.fixture
    def backend(self, emulator: EmulatorServer) -> EmulatorBackend:
        return EmulatorBackend(
            "replicate", lambda key: ReplicateConfig(base_url=emulator.base_url, api_token=key)
        )

    async def test_list_jobs_finds_a_created_job_with_its_prompt_and_duration(
        self, backend: EmulatorBackend
    ) -> None:
        spec = dataclasses.replace(backend.spec(), prompt=f"listed {uuid.uuid4().hex}")
        before = datetime.now(UTC) - timedelta(seconds=5)
        async with backend.client() as client:
            created = await client.create_job(spec, idempotency_key="unused")
            listed = await client.list_jobs(before)
            later = await client.list_jobs(datetime.now(UTC) + timedelta(minutes=5))
        (found,) = [job for job in listed if job.job_id == created.job_id]
        assert (found.prompt, found.seconds) == (spec.prompt, spec.seconds)
        assert (found.width, found.height) == (None, None)
        assert found.created_at is not None and found.created_at >= before
        assert created.job_id not in {job.job_id for job in later}

    async def test_a_succeeded_prediction_expires_an_hour_after_completion(
        self, backend: ProviderBackend
    ) -> None:
        async with backend.client() as client:
            job = await succeeded_job(backend, client)
        assert job.expires_at is not None
        assert timedelta(minutes=59) < job.expires_at - datetime.now(UTC) <= timedelta(hours=1)


class _Unlisted(
    CreatesJobs,
    WalksJobsToSucceeded,
    StreamsVideos,
    RefusesUnknownJobs,
    RefusesBadKeys,
    ReportsRateLimits,
    ReportsContentPolicy,
):
    """A protocol without a job list (Gemini's, Runway's): ListsJobs and LosesCreateAnswers are
    left out, and in their place a lost create is outcome-unknown, reconciling it is refused, and
    exactly one job was made (it is never re-sent, so never paid for twice)."""

    protocol = ""

    async def test_a_lost_create_is_outcome_unknown_and_cannot_be_reconciled(
        self, backend: EmulatorBackend, emulator: EmulatorServer
    ) -> None:
        before = emulator.state.stats[f"{self.protocol}.jobs_created"]
        async with backend.client("drop_after_create") as client:
            with pytest.raises(CreateOutcomeUnknown) as lost:
                await client.create_job(backend.spec("drop_after_create"), idempotency_key="k")
            with pytest.raises(TerminalProviderError) as listed:
                await client.list_jobs(datetime.now(UTC) - timedelta(minutes=1))
        assert lost.value.retryable is False and not listed.value.retryable
        assert emulator.state.stats[f"{self.protocol}.jobs_created"] == before + 1


class TestGeminiVeoOverEmulator(_Unlisted):
    protocol = "gemini"

    @pytest.fixture
    def backend(self, emulator: EmulatorServer) -> EmulatorBackend:
        return EmulatorBackend(
            "gemini", lambda key: GeminiConfig(base_url=emulator.base_url, api_key=key)
        )


class TestGeminiOmniOverEmulator(_Unlisted):
    """The Interactions API (a `gemini-*` model): the video comes inline, as base64."""

    protocol = "gemini"

    @pytest.fixture
    def backend(self, emulator: EmulatorServer) -> EmulatorBackend:
        return EmulatorBackend(
            "gemini",
            lambda key: GeminiConfig(
                base_url=emulator.base_url, api_key=key, model="gemini-omni-1.1-flash"
            ),
        )


class TestRunwayOverEmulator(_Unlisted):
    protocol = "runway"

    @pytest.fixture
    def backend(self, emulator: EmulatorServer) -> EmulatorBackend:
        return EmulatorBackend(
            "runway", lambda key: RunwayConfig(base_url=emulator.base_url, api_key=key)
        )

    async def test_a_succeeded_task_expires_within_a_day_of_its_creation(
        self, backend: ProviderBackend
    ) -> None:
        async with backend.client() as client:
            job = await succeeded_job(backend, client)
        assert job.expires_at is not None and job.created_at is not None
        assert job.expires_at - job.created_at == timedelta(hours=24)


class FakeBackend:
    """vidpipe.testing.FakeProvider, scripted for each situation."""

    secrets: tuple[str, ...] = ()

    @asynccontextmanager
    async def client(self, situation: Situation = "ok") -> AsyncIterator[ProviderClient]:
        expires = datetime.now(UTC) + timedelta(hours=1)
        fake = FakeProvider(
            video=fake_mp4(),
            statuses=[
                ProviderJob(job_id="task_1", status="running", raw_status="running"),
                ProviderJob(
                    job_id="task_1",
                    status="succeeded",
                    raw_status="succeeded",
                    generation_ids=["gen_1"],
                    expires_at=expires,
                ),
            ],
        )
        if situation == "rate_limited":
            fake.create_error = RateLimited("fake: slow down", status_code=429, retry_after=3.0)
        elif situation == "content_policy":
            fake.create_error = ContentPolicyViolation("fake: refused", status_code=400)
        elif situation == "download_missing":
            fake.download_errors = [DownloadNotAvailable("fake: gone", status_code=404)]
        elif situation == "drop_after_create":
            fake.lose_create_answers = 1
        try:
            yield fake
        finally:
            await fake.aclose()

    def spec(self, situation: Situation = "ok") -> VideoSpec:
        return VideoSpec(prompt=PROMPTS[situation])


class TestFakeProvider(
    CreatesJobs,
    ListsJobs,
    LosesCreateAnswers,
    WalksJobsToSucceeded,
    StreamsVideos,
    ReportsRateLimits,
    ReportsContentPolicy,
):
    """Left out: RefusesUnknownJobs and RefusesBadKeys (the fake answers from its script and
    holds no key, so there is no unknown job or wrong key to show)."""

    @pytest.fixture
    def backend(self) -> FakeBackend:
        return FakeBackend()

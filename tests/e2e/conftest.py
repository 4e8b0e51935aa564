"""Fixtures for end-to-end tests: the emulator, and pipelines of stage processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Pipeline, close_pipeline, open_pipeline
from vidpipe.dev.emulator.config import EmulatorConfig
from vidpipe.dev.emulator.server import EmulatorThread

EMULATOR_KEY = "test-emulator-key-1234"
# Emulated time runs five times faster: a 7 s job takes 1.4 s, a 40 s retention 8 s.
TIME_SCALE = 5.0

MakePipeline = Callable[..., Awaitable[Pipeline]]


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread(EmulatorConfig(api_key=EMULATOR_KEY, time_scale=TIME_SCALE)) as server:
        yield server


@pytest.fixture
def roomy_emulator(emulator: EmulatorThread) -> Iterator[EmulatorThread]:
    """The session's emulator without its per-key job quota, for tests with many jobs at once."""
    previous = emulator.state.config.max_concurrent_jobs
    emulator.update_config(max_concurrent_jobs=None)
    try:
        yield emulator
    finally:
        emulator.update_config(max_concurrent_jobs=previous)


@pytest.fixture
async def make_pipeline(
    kafka_bootstrap: str,
    test_database_url: str,
    unique_prefix: str,
    tmp_path: Path,
    emulator: EmulatorThread,
) -> AsyncIterator[MakePipeline]:
    opened: list[Pipeline] = []

    async def make(extra_env: dict[str, str] | None = None) -> Pipeline:
        pipe = await open_pipeline(
            bootstrap_servers=kafka_bootstrap,
            database_url=test_database_url,
            prefix=unique_prefix,
            tmp_path=tmp_path,
            provider_env={
                "VIDPIPE_AZURE_ENDPOINT": emulator.azure_endpoint,
                "VIDPIPE_AZURE_API_KEY": EMULATOR_KEY,
                "VIDPIPE_OPENAI_BASE_URL": emulator.openai_base_url,
                "VIDPIPE_OPENAI_API_KEY": EMULATOR_KEY,
            },
            extra_env=extra_env,
        )
        opened.append(pipe)
        return pipe

    try:
        yield make
    finally:
        for pipe in opened:
            await close_pipeline(pipe)


@pytest.fixture
async def pipeline(make_pipeline: MakePipeline) -> Pipeline:
    return await make_pipeline()

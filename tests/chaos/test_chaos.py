"""The fault suite: generations through every stage, each its own process, while stages are
SIGKILLed and restarted, the broker restarts, and the provider answers bursts of 429 and 5xx,
drops connections after create and holds answers past the client's timeout.

Afterwards the books must show: every request terminal (stored), one `projects` row each, no
video stored twice, at most one provider job per request, nothing in the dead-letter topic.
`make test` runs 80 requests over 30 s; `make chaos` 500 (VIDPIPE_CHAOS_REQUESTS and friends,
see tests/chaos/conftest.py). The table is printed (`-s`) and kept in .vidpipe/chaos/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.registry import STAGES
from tests.chaos.conftest import CHAOS_KEY, CONCURRENT_JOBS, ChaosSize
from tests.chaos.plan import plan_faults
from tests.chaos.runner import ChaosRun, run_chaos
from tests.e2e.harness import close_pipeline, open_pipeline
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.dev.kafka import LocalKafka

SIZE = ChaosSize.from_env(len(STAGES))
REPORT_DIR = Path(os.environ.get("VIDPIPE_CHAOS_REPORT_DIR", ".vidpipe/chaos"))


@pytest.mark.timeout(int(SIZE.window_s + SIZE.drain_timeout_s + 240))
async def test_every_request_ends_once_through_kills_broker_restarts_and_provider_faults(
    chaos_kafka: LocalKafka,
    chaos_emulator: EmulatorThread,
    test_database_url: str,
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    pipeline = await open_pipeline(
        bootstrap_servers=chaos_kafka.bootstrap_servers,
        database_url=test_database_url,
        prefix=unique_prefix,
        tmp_path=tmp_path,
        provider_env={
            "VIDPIPE_AZURE_ENDPOINT": chaos_emulator.azure_endpoint,
            "VIDPIPE_AZURE_API_KEY": CHAOS_KEY,
            "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": str(CONCURRENT_JOBS),
            "VIDPIPE_OPENAI_BASE_URL": chaos_emulator.openai_base_url,
            "VIDPIPE_OPENAI_API_KEY": CHAOS_KEY,
            "VIDPIPE_OPENAI_MAX_CONCURRENT_JOBS": str(CONCURRENT_JOBS),
        },
        extra_env={
            "VIDPIPE_HTTP_TIMEOUT_S": "2",
            "VIDPIPE_REDOWNLOAD_INITIAL_S": "1",
            "VIDPIPE_REDOWNLOAD_MAX_INTERVAL_S": "5",
            "VIDPIPE_SHUTDOWN_TIMEOUT_S": "5",
            "VIDPIPE_HEALTH_INTERVAL_S": "1",
        },
    )
    plan = plan_faults(
        SIZE.seed,
        window_s=SIZE.window_s,
        stages=STAGES,
        kills=SIZE.kills,
        broker_restarts=SIZE.broker_restarts,
        bursts=SIZE.bursts,
    )
    run = ChaosRun(
        pipeline=pipeline,
        kafka=chaos_kafka,
        emulator=chaos_emulator,
        stages=STAGES,
        requests=SIZE.requests,
        window_s=SIZE.window_s,
        drain_timeout_s=SIZE.drain_timeout_s,
        seed=SIZE.seed,
    )
    try:
        report = await run_chaos(run, plan)
    finally:
        await close_pipeline(pipeline)
    kept = report.write(REPORT_DIR)
    print(f"\n{report.table()}\n(kept in {kept})")
    assert report.problems == [], "\n".join([*report.problems, "--- what happened ---", *run.log])
    # The run must really have been hostile, or it proves nothing.
    assert report.kills >= len(STAGES) and report.broker_restarts >= 1
    assert report.rate_limited and report.server_errors and report.creates_dropped and report.slowed

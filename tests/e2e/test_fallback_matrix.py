"""Every fallback policy ends: each subset of the four fallbacks, under each failover timing and
each download outcome, through the real stages (each its own process) and the emulator.

One pipeline per timing (VIDPIPE_FAILOVER_WHEN is a stage setting); its 64 requests (16 policies
x 4 outcomes) are published at once, and the records must end as `EXPECTED` says. The outcomes
are emulator directives scoped to Azure, so a failover child (on OpenAI) downloads at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import pytest

from schemas.events import FallbackName
from tests.e2e.conftest import EMULATOR_KEY
from tests.e2e.harness import Pipeline, close_pipeline, make_request, open_pipeline
from vidpipe.db.records import ProjectView
from vidpipe.dev.emulator.config import EmulatorConfig
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.policy.fallbacks import ALL_FALLBACKS

# Emulated time runs ten times faster here: a job takes 0.7 s, `download_delay=100` is 10 s
# (long enough that the fetcher, busy with 64 requests one at a time, still finds it missing).
TIME_SCALE = 10.0
OUTCOMES: dict[str, str] = {
    "available": "",
    "late": "[emulator:azure.download=delayed] [emulator:azure.download_delay=100]",
    "never": "[emulator:azure.download=missing]",
    # The asset expires 2 s after the job starts, long before the retries would run out.
    "expired": "[emulator:azure.download=missing] [emulator:azure.retention=20]",
}
# Retries 0.5, 1, 1, ... s apart: a late video (10 s) is found, a missing one given up after
# 19.5 s.
SETTINGS = {
    "VIDPIPE_DOWNLOAD_ATTEMPTS": "1",
    "VIDPIPE_REDOWNLOAD_INITIAL_S": "0.5",
    "VIDPIPE_REDOWNLOAD_MAX_INTERVAL_S": "1",
    "VIDPIPE_REDOWNLOAD_MAX_ATTEMPTS": "20",
    "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": "100",
    "VIDPIPE_OPENAI_MAX_CONCURRENT_JOBS": "100",
}
STAGES = (
    "submitter",
    "poller",
    "fetcher",
    "recorder",
    "placeholder",
    "notifier",
    "redownloader",
    "failover",
)

# The spec. (retry in policy, failover in policy, timing) -> outcome -> (the request's final
# status, whether a failover child was made). "stored" after a child means the child's video,
# linked to the parent's row. The other two fallbacks never change where a request ends:
# `placeholder` leaves its stand-in on a request that is not stored, `notify` a message on any
# request whose download was unavailable. Nothing rests: with these settings every retry ends.
EXPECTED: dict[tuple[bool, bool, str], dict[str, tuple[str, bool]]] = {
    # Nothing pursues the real video: given up at once (DownloadGaveUp, 0 attempts).
    (False, False, "immediate"): {
        "late": ("gave_up", False),
        "never": ("gave_up", False),
        "expired": ("gave_up", False),
    },
    (False, False, "after_retry"): {
        "late": ("gave_up", False),
        "never": ("gave_up", False),
        "expired": ("gave_up", False),
    },
    # The redownloader alone: found when late, else its own verdict.
    (True, False, "immediate"): {
        "late": ("stored", False),
        "never": ("gave_up", False),
        "expired": ("expired", False),
    },
    (True, False, "after_retry"): {
        "late": ("stored", False),
        "never": ("gave_up", False),
        "expired": ("expired", False),
    },
    # Failover without retry acts at once, whatever the timing (the bug this matrix closes).
    (False, True, "immediate"): {
        "late": ("stored", True),
        "never": ("stored", True),
        "expired": ("stored", True),
    },
    (False, True, "after_retry"): {
        "late": ("stored", True),
        "never": ("stored", True),
        "expired": ("stored", True),
    },
    # Both: at once in parallel with the retries, or after them.
    (True, True, "immediate"): {
        "late": ("stored", True),
        "never": ("stored", True),
        "expired": ("stored", True),
    },
    (True, True, "after_retry"): {
        "late": ("stored", False),
        "never": ("stored", True),
        "expired": ("stored", True),
    },
}
POLICIES: list[tuple[FallbackName, ...]] = [
    combo for n in range(len(ALL_FALLBACKS) + 1) for combo in combinations(ALL_FALLBACKS, n)
]


@dataclass(frozen=True)
class Case:
    fallbacks: tuple[FallbackName, ...]
    outcome: str
    request_id: str

    @property
    def child_id(self) -> str:
        return f"{self.request_id}.failover"

    def expected(self, timing: str) -> tuple[str, bool, bool, bool]:
        """(status, failover child, placeholder shown, user message)."""
        if self.outcome == "available":
            return ("stored", False, False, False)
        status, child = EXPECTED[("retry" in self.fallbacks, "failover" in self.fallbacks, timing)][
            self.outcome
        ]
        placeholder = "placeholder" in self.fallbacks and status != "stored"
        return (status, child, placeholder, "notify" in self.fallbacks)


def _actual(view: ProjectView | None, child: ProjectView | None) -> tuple[str, bool, bool, bool]:
    if view is None:
        return ("absent", False, False, False)
    return (
        view.status,
        child is not None,
        bool(view.placeholder) and view.output_image_url is not None,
        view.user_message is not None,
    )


def _table(cases: list[Case], timing: str, views: dict[str, ProjectView]) -> str:
    lines = [
        f"timing={timing}   (status, child, placeholder shown, user message)",
        f"{'fallbacks':<36} {'outcome':<10} {'expected':<36} actual",
    ]
    for case in cases:
        want = case.expected(timing)
        got = _actual(views.get(case.request_id), views.get(case.child_id))
        mark = "" if want == got else "   <-- differs"
        policy = "+".join(case.fallbacks) or "(none)"
        lines.append(f"{policy:<36} {case.outcome:<10} {want!s:<36} {got}{mark}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def matrix_emulator() -> Iterator[EmulatorThread]:
    # Its own emulator: no concurrent-job limit, so 64 requests run side by side.
    config = EmulatorConfig(api_key=EMULATOR_KEY, time_scale=TIME_SCALE, max_concurrent_jobs=None)
    with EmulatorThread(config) as server:
        yield server


@pytest.fixture
async def matrix_pipeline(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    test_database_url: str,
    unique_prefix: str,
    tmp_path: Path,
    matrix_emulator: EmulatorThread,
) -> AsyncIterator[Pipeline]:
    pipeline = await open_pipeline(
        bootstrap_servers=kafka_bootstrap,
        database_url=test_database_url,
        prefix=unique_prefix,
        tmp_path=tmp_path,
        provider_env={
            "VIDPIPE_AZURE_ENDPOINT": matrix_emulator.azure_endpoint,
            "VIDPIPE_AZURE_API_KEY": EMULATOR_KEY,
            "VIDPIPE_OPENAI_BASE_URL": matrix_emulator.openai_base_url,
            "VIDPIPE_OPENAI_API_KEY": EMULATOR_KEY,
        },
        extra_env={**SETTINGS, "VIDPIPE_FAILOVER_WHEN": request.param},
    )
    try:
        yield pipeline
    finally:
        await close_pipeline(pipeline)


@pytest.mark.parametrize(
    "matrix_pipeline", ["immediate", "after_retry"], indirect=True, ids=lambda t: f"when={t}"
)
async def test_every_fallback_policy_ends(matrix_pipeline: Pipeline) -> None:
    pipeline = matrix_pipeline
    timing = pipeline.env["VIDPIPE_FAILOVER_WHEN"]
    prefix = pipeline.settings.topic_prefix
    cases: list[Case] = []
    requests = []
    for fallbacks in POLICIES:
        flags = "".join(f"{name[0]}{int(name in fallbacks)}" for name in ALL_FALLBACKS)
        for outcome, directives in OUTCOMES.items():
            request = make_request(
                prefix,
                f"{outcome}-{flags}",
                prompt=f"a heron {directives}",
                provider="azure-sora",
                seconds=4,
                fallbacks=list(fallbacks),
            )
            cases.append(Case(fallbacks, outcome, request.request_id))
            requests.append(request)
    for name in STAGES:
        pipeline.start(name)
    # Every stage reading before anything is published: a fetcher still starting would find
    # the late videos already there.
    await asyncio.gather(*(pipeline.wait_for_group(name, 1) for name in STAGES))
    await pipeline.publish(*requests)

    ids = [rid for case in cases for rid in (case.request_id, case.child_id)]
    started = time.monotonic()
    deadline = started + 120
    views: dict[str, ProjectView] = {}
    while time.monotonic() < deadline:
        views = await pipeline.records.many(ids)
        if all(
            case.expected(timing) == _actual(views.get(case.request_id), views.get(case.child_id))
            for case in cases
        ):
            print(
                f"timing={timing}: all 64 ended as specified in {time.monotonic() - started:.1f} s"
            )
            break
        pipeline._check_alive()
        await asyncio.sleep(0.5)
    else:
        made = await pipeline.records.many([c.child_id for c in cases])
        states = {rid: v.status for rid, v in made.items() if v.status != "stored"}
        raise AssertionError(
            f"not every policy ended as specified\n{_table(cases, timing, views)}\n"
            f"failover children not stored: {states}\n{pipeline._logs()}"
        )

    # Each failover child is a real video on the other provider, made once, linked to its parent.
    with_child = [c for c in cases if c.expected(timing)[1]]
    table = _table(cases, timing, views)
    for case in with_child:
        child = views[case.child_id]
        assert (child.status, child.provider) == ("stored", "openai-videos"), table
        assert views[case.request_id].failover_request_id == case.child_id, table
        assert await pipeline.count_events(case.child_id, "GenerationRequested") == 1

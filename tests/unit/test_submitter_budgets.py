"""The submitter with budgets: the estimate on JobSubmitted, over-budget requests fail or wait
and are never submitted, and a job's end settles its reservation (a SQLite ledger)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import (
    CancelRequested,
    GenerationRequested,
    JobFailed,
    JobSubmitted,
    JobSucceeded,
)
from schemas.topics import Topics
from services.submitter.handlers import (
    SubmitterDeps,
    handle_cancel_requested,
    handle_generation_requested,
    handle_job_finished,
)
from vidpipe.db.budgets import BudgetLedger
from vidpipe.db.ledger import Ledger
from vidpipe.db.tables import open_engine
from vidpipe.policy.budgets import Budget
from vidpipe.policy.prices import PRICE_VERSION
from vidpipe.providers.base import InputImage
from vidpipe.testing import FakeProvider, MemoryPublisher

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DAY = "day:2026-12-02:*"


async def _no_image(url: str) -> InputImage:
    raise AssertionError("no image expected")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield engine
    await engine.dispose()


def _deps(
    engine: AsyncEngine, provider: FakeProvider, *budgets: Budget
) -> tuple[SubmitterDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    deps = SubmitterDeps(
        providers={provider.name: provider},
        ledger=Ledger(engine),
        publisher=publisher,
        topics=Topics("t."),
        default_provider="azure-sora",
        quota=lambda _name: 10,
        fetch_image=_no_image,
        clock=lambda: NOW,
        budgets=budgets,
        budget_ledger=BudgetLedger(engine, clock=lambda: NOW),
        budget_wait_s=30.0,
    )
    return deps, publisher


def _req(rid: str, **fields: object) -> GenerationRequested:
    # azure-sora, 5 s at 1280x720: $0.50 at the built-in prices.
    return GenerationRequested.model_validate({"request_id": rid, "prompt": "a fox", **fields})


async def test_over_the_budget_a_request_fails_with_the_limit_and_the_spend(
    engine: AsyncEngine,
) -> None:
    provider = FakeProvider()
    deps, publisher = _deps(engine, provider, Budget(period="day", limit_usd=1.0))
    for rid in ("a", "b", "c"):
        await handle_generation_requested(_req(rid), deps)
    assert [key for _spec, key in provider.created] == ["a", "b"]  # c was never submitted
    submitted = [e for e in publisher.of_type(JobSubmitted) if isinstance(e, JobSubmitted)]
    assert [(e.cost_usd, e.price_version) for e in submitted] == [(0.5, PRICE_VERSION)] * 2
    (failed,) = publisher.of_type(JobFailed)
    assert isinstance(failed, JobFailed)
    assert (failed.request_id, failed.reason_code, failed.cost_usd) == ("c", "budget_exceeded", 0.0)
    assert "limit $1.00, spent $1.00" in failed.message and "this job $0.50" in failed.message
    assert deps.budget_ledger is not None
    assert await deps.budget_ledger.spent(DAY) == 1_000_000
    known = await deps.ledger.get("c")
    assert known is not None and known.state == "done"  # its slot is free
    # A redelivery of c changes nothing: it already failed.
    await handle_generation_requested(_req("c"), deps)
    assert len(provider.created) == 2


async def test_a_jobs_end_settles_its_reservation_once(engine: AsyncEngine) -> None:
    provider = FakeProvider()
    deps, publisher = _deps(engine, provider, Budget(period="day", limit_usd=1.0))
    ledger = deps.budget_ledger
    assert ledger is not None
    await handle_generation_requested(_req("a"), deps)
    await handle_generation_requested(_req("b"), deps)
    failed = JobFailed(
        event_id=uuid.uuid4(),
        request_id="a",
        provider="azure-sora",
        stage="poll",
        reason_code="output_moderation",
        message="moderated",
        cost_usd=0.0,
    )
    await handle_job_finished("a", deps, failed)
    await handle_job_finished("a", deps, failed)  # redelivered: settles nothing more
    assert await ledger.spent(DAY) == 500_000
    # b ends costing less than its estimate (a provider's own figure): the spend follows it.
    succeeded = JobSucceeded(
        event_id=uuid.uuid4(),
        request_id="b",
        provider="azure-sora",
        provider_job_id="job-b",
        generation_ids=["gen-b"],
        cost_usd=0.25,
    )
    await handle_job_finished("b", deps, succeeded)
    assert await ledger.spent(DAY) == 250_000
    # The room freed takes one more job, not two.
    await handle_generation_requested(_req("c"), deps)
    await handle_generation_requested(_req("d"), deps)
    assert [key for _spec, key in provider.created] == ["a", "b", "c"]
    assert [e.request_id for e in publisher.of_type(JobFailed)] == ["d"]


async def test_a_wait_budget_holds_the_request_on_a_timer_without_its_slot(
    engine: AsyncEngine,
) -> None:
    provider = FakeProvider()
    budget = Budget(period="day", limit_usd=0.5, key="tenant", on_exceed="wait")
    deps, publisher = _deps(engine, provider, budget)
    await handle_generation_requested(_req("a", metadata={"tenant": "t1"}), deps)
    await handle_generation_requested(_req("b", metadata={"tenant": "t1"}), deps)
    # Another tenant has its own bucket.
    await handle_generation_requested(_req("c", metadata={"tenant": "t2"}), deps)
    assert [key for _spec, key in provider.created] == ["a", "c"]
    assert publisher.of_type(JobFailed) == []
    ((delay, topic, key, _payload),) = publisher.scheduled
    assert (delay, topic, key) == (30.0, "t.submitter.due", "b")
    assert await deps.ledger.get("b") is None  # no slot held while it waits


async def test_without_budgets_nothing_is_reserved(engine: AsyncEngine) -> None:
    provider = FakeProvider()
    deps, publisher = _deps(engine, provider)
    await handle_generation_requested(_req("a", seconds=10, variants=2), deps)
    (submitted,) = publisher.of_type(JobSubmitted)
    assert isinstance(submitted, JobSubmitted) and submitted.cost_usd == 2.0
    assert deps.budget_ledger is not None and await deps.budget_ledger.reserved("a") == 0


async def test_a_cancelled_job_keeps_its_estimate_and_settles_once(engine: AsyncEngine) -> None:
    provider = FakeProvider()
    deps, _publisher = _deps(engine, provider, Budget(period="day", limit_usd=1.0))
    ledger = deps.budget_ledger
    assert ledger is not None
    await handle_generation_requested(_req("a"), deps)
    cancel = CancelRequested.model_validate({"request_id": "a"})
    await handle_cancel_requested(cancel, deps)
    await handle_cancel_requested(cancel, deps)
    assert provider.cancelled  # stopped at the provider
    # The provider had the job: its estimate stays spent, and it is no longer in flight.
    assert (await ledger.spent(DAY), await ledger.reserved("a")) == (500_000, 0)

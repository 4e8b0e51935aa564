"""Budget reservations on a real PostgreSQL: racers at the edge of a budget never overspend,
a request reserves in all its buckets or in none, and a job's end settles once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from vidpipe.db.budgets import BudgetLedger
from vidpipe.db.tables import budget_reservations, open_engine
from vidpipe.policy.budgets import Budget, charges_for

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
JOB = 500_000  # $0.50


@pytest.fixture
async def engines(test_database_url: str) -> AsyncIterator[list[AsyncEngine]]:
    # Three engines, three pools: three submitter replicas' worth of connections.
    opened = [await open_engine(test_database_url) for _ in range(3)]
    yield opened
    for engine in opened:
        await engine.dispose()


async def _race(
    engines: list[AsyncEngine], budgets: list[Budget], requests: list[tuple[str, dict[str, str]]]
) -> list[bool]:
    """Each request reserved by one of three racers, all at once; whether each got room."""
    ledgers = [BudgetLedger(engine, clock=lambda: NOW) for engine in engines]
    start = asyncio.Event()

    async def one(index: int, rid: str, metadata: dict[str, str]) -> bool:
        await start.wait()
        charges = charges_for(budgets, metadata, NOW)
        return await ledgers[index % 3].reserve(rid, charges, JOB) is None

    tasks = [asyncio.create_task(one(i, rid, md)) for i, (rid, md) in enumerate(requests)]
    await asyncio.sleep(0)  # every racer is waiting at the start line
    start.set()
    return list(await asyncio.gather(*tasks))


async def _reserved_sum(engine: AsyncEngine, bucket: str) -> int:
    async with engine.connect() as conn:
        total = (
            await conn.execute(
                select(func.coalesce(func.sum(budget_reservations.c.amount_micros), 0)).where(
                    budget_reservations.c.bucket == bucket
                )
            )
        ).scalar_one()
    return int(total)


async def test_three_racers_at_the_edge_of_a_budget_never_overspend(
    engines: list[AsyncEngine],
) -> None:
    budgets = [Budget(period="day", limit_usd=5.0)]  # room for exactly 10 jobs of $0.50
    requests: list[tuple[str, dict[str, str]]] = [
        (f"r{i}-{uuid.uuid4().hex[:6]}", {}) for i in range(30)
    ]
    won = await _race(engines, budgets, requests)
    ledger = BudgetLedger(engines[0])
    bucket = "day:2026-12-02:*"
    spent = await ledger.spent(bucket)
    print(f"\nbudget race: 30 requests, 3 racers, $5.00 limit: {sum(won)} reserved, ${spent / 1e6}")
    assert sum(won) == 10
    assert spent == 10 * JOB <= 5_000_000 + JOB
    assert await _reserved_sum(engines[0], bucket) == spent  # the counter is the rows' sum
    # A redelivered reservation of a winner reserves nothing more.
    winner = requests[won.index(True)][0]
    assert await ledger.reserve(winner, charges_for(budgets, {}, NOW), JOB) is None
    assert await ledger.spent(bucket) == spent


async def test_a_request_reserves_in_all_its_buckets_or_in_none(engines: list[AsyncEngine]) -> None:
    budgets = [
        Budget(period="day", limit_usd=3.0),
        Budget(period="day", limit_usd=2.0, key="tenant"),
    ]
    requests = [(f"m{i}-{uuid.uuid4().hex[:6]}", {"tenant": "ab"[i % 2]}) for i in range(24)]
    won = await _race(engines, budgets, requests)
    ledger = BudgetLedger(engines[0])
    total = await ledger.spent("day:2026-12-02:*")
    per_tenant = [await ledger.spent(f"day:2026-12-02:tenant={t}") for t in "ab"]
    assert sum(won) == 6 and total == 6 * JOB
    assert all(spent <= 2_000_000 for spent in per_tenant)
    # No tenant reservation outlived a global refusal (and the other way round).
    assert sum(per_tenant) == total
    for bucket in ("day:2026-12-02:*", "day:2026-12-02:tenant=a", "day:2026-12-02:tenant=b"):
        assert await _reserved_sum(engines[0], bucket) == await ledger.spent(bucket)


async def test_concurrent_settlements_of_one_job_apply_once(engines: list[AsyncEngine]) -> None:
    budgets = [Budget(period="month", limit_usd=10.0)]
    rid = f"s-{uuid.uuid4().hex[:6]}"
    ledgers = [BudgetLedger(engine) for engine in engines]
    assert await ledgers[0].reserve(rid, charges_for(budgets, {}, NOW), JOB) is None
    settled = await asyncio.gather(*(ledger.settle(rid, 200_000) for ledger in ledgers))
    assert sorted(settled) == [False, False, True]
    assert await ledgers[0].spent("month:2026-12:*") == 200_000
    assert await ledgers[0].reserved(rid) == 0

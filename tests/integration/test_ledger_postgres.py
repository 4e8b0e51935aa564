"""The submitter's ledger on a real PostgreSQL: the quota holds under concurrent claims."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from vidpipe.db.ledger import Ledger
from vidpipe.db.tables import open_engine, submissions


async def test_concurrent_claims_never_exceed_the_quota(postgres_url: str) -> None:
    engine = await open_engine(postgres_url)
    try:
        ledger = Ledger(engine)
        provider = f"prov-{uuid.uuid4().hex[:6]}"
        ids = [f"q-{uuid.uuid4().hex[:8]}" for _ in range(6)]
        results = await asyncio.gather(*(ledger.try_acquire(i, provider, 2) for i in ids))
        assert sum(results) == 2
        assert await ledger.in_use(provider) == 2
        winner = ids[results.index(True)]
        assert await ledger.try_acquire(winner, provider, 2) is True  # its own claim again
        assert await ledger.release(winner) is True
        assert await ledger.release(winner) is False  # a redelivered finish frees nothing more
        assert await ledger.in_use(provider) == 1
    finally:
        await engine.dispose()


async def test_a_claim_is_stamped_by_the_ledgers_clock(postgres_url: str) -> None:
    moment = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    engine = await open_engine(postgres_url)
    try:
        ledger = Ledger(engine, clock=lambda: moment)
        request_id = f"c-{uuid.uuid4().hex[:8]}"
        assert await ledger.try_acquire(request_id, f"prov-{uuid.uuid4().hex[:6]}", 1)
        async with engine.connect() as conn:
            stamps = (
                await conn.execute(
                    select(submissions.c.created_at, submissions.c.updated_at).where(
                        submissions.c.request_id == request_id
                    )
                )
            ).one()
        assert tuple(stamps) == (moment, moment)
    finally:
        await engine.dispose()

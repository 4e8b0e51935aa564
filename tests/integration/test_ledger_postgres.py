"""The submitter's ledger on a real PostgreSQL: the quota holds under concurrent claims."""

from __future__ import annotations

import asyncio
import uuid

from vidpipe.db.ledger import Ledger
from vidpipe.db.tables import open_engine


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

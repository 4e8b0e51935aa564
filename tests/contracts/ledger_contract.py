"""Ledger scenarios the SQLite unit tests and the PostgreSQL integration tests both run."""

from __future__ import annotations

import asyncio

from vidpipe.db.ledger import Ledger


async def race_cancels_against_a_batch_of_ends(
    cancels: Ledger, ends: Ledger, provider: str, rids: list[str]
) -> tuple[set[str], list[bool]]:
    """Every request in flight; a quarter cancelled first, another quarter cancelled while
    `ends` finishes all of them side by side. Checks that a request is announced exactly when
    its cancel did not win and that every slot is free; returns (won by a cancel, announced)."""
    for i, rid in enumerate(rids):
        assert await cancels.acquire(rid, provider, 10 * len(rids)) is not None
        await cancels.mark_in_flight(rid, provider_job_id=f"j{i}", endpoint_host="h", model=None)
    cancelling = rids[::2]
    early = [await cancels.cancel(rid) for rid in cancelling[: len(cancelling) // 2]]
    racing = cancelling[len(cancelling) // 2 :]
    claims, announced = await asyncio.gather(
        asyncio.gather(*(cancels.cancel(rid) for rid in racing)),
        asyncio.gather(*(ends.finish(rid) for rid in rids)),
    )
    won_by_cancel = {
        rid
        for rid, claim in zip(cancelling, [*early, *claims], strict=True)
        if claim.previous_state == "in_flight"
    }
    assert {rid for rid, a in zip(rids, announced, strict=True) if not a} == won_by_cancel
    assert await cancels.in_use(provider) == 0
    return won_by_cancel, list(announced)

"""The submitter's ledger on a real PostgreSQL: the quota holds under concurrent claims."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import select
from sqlalchemy.engine import make_url

from tests.contracts.ledger_contract import race_cancels_against_a_batch_of_ends
from vidpipe.db.ledger import BatchedLedger, Ledger
from vidpipe.db.tables import open_engine, submissions

# The plain ledger and the batched one the stages run: the same answers on PostgreSQL.
LEDGERS = pytest.mark.parametrize("ledger_type", [Ledger, BatchedLedger])


@LEDGERS
async def test_concurrent_claims_never_exceed_the_quota(
    postgres_url: str, ledger_type: type[Ledger]
) -> None:
    engine = await open_engine(postgres_url)
    try:
        ledger = ledger_type(engine)
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


@LEDGERS
async def test_a_claim_is_stamped_by_the_ledgers_clock(
    postgres_url: str, ledger_type: type[Ledger]
) -> None:
    moment = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    engine = await open_engine(postgres_url)
    try:
        ledger = ledger_type(engine, clock=lambda: moment)
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


@LEDGERS
async def test_an_intent_is_kept_from_the_first_create_and_jobs_held_are_known(
    postgres_url: str, ledger_type: type[Ledger]
) -> None:
    moments = iter(datetime(2026, 11, 24, 12, m, tzinfo=UTC) for m in range(10))
    engine = await open_engine(postgres_url)
    try:
        ledger = ledger_type(engine, clock=lambda: next(moments))
        provider = f"prov-{uuid.uuid4().hex[:6]}"
        first, other = f"i-{uuid.uuid4().hex[:8]}", f"i-{uuid.uuid4().hex[:8]}"
        assert await ledger.try_acquire(first, provider, 2)
        known = await ledger.get(first)
        assert known is not None and known.intent_at is None
        intent = await ledger.record_intent(first)
        assert await ledger.record_intent(first) == intent  # a second attempt keeps the first
        again = await ledger.get(first)
        assert again is not None and again.intent_at == intent
        assert await ledger.try_acquire(other, provider, 2)
        await ledger.mark_in_flight(other, provider_job_id="job-b", endpoint_host="h", model=None)
        assert await ledger.taken_jobs(provider, ["job-a", "job-b"]) == {"job-b"}
        assert await ledger.taken_jobs(f"{provider}-x", ["job-b"]) == set()
    finally:
        await engine.dispose()


async def test_create_tables_adds_the_intent_column_to_an_older_ledger(postgres_url: str) -> None:
    name = f"old_ledger_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
    ) as conn:
        # The submissions table as the previous version created it, with a claim in it.
        conn.execute(
            "CREATE TABLE submissions (request_id VARCHAR(128) PRIMARY KEY, provider VARCHAR(64)"
            " NOT NULL, state VARCHAR(16) NOT NULL, provider_job_id VARCHAR(256), endpoint_host"
            " VARCHAR(256), model VARCHAR(128), created_at TIMESTAMPTZ NOT NULL, updated_at"
            " TIMESTAMPTZ NOT NULL)"
        )
        conn.execute(
            "INSERT INTO submissions VALUES ('old', 'p', 'submitting', NULL, NULL, NULL, now(),"
            " now())"
        )
    engine = await open_engine(url)
    try:
        ledger = Ledger(engine)
        known = await ledger.get("old")
        assert known is not None and known.intent_at is None
        assert await ledger.record_intent("old") is not None
    finally:
        await engine.dispose()


async def test_a_cancel_and_the_jobs_end_never_both_win(postgres_url: str) -> None:
    # Separate engines stand for the submitter and the poller: real concurrent transactions.
    submitter, poller = await open_engine(postgres_url), await open_engine(postgres_url)
    try:
        cancels, ends = Ledger(submitter), Ledger(poller)
        provider = f"prov-{uuid.uuid4().hex[:6]}"
        wins = {"cancel": 0, "end": 0}
        for i in range(30):
            rid = f"x-{uuid.uuid4().hex[:8]}"
            assert await cancels.acquire(rid, provider, 100) is not None
            await cancels.mark_in_flight(
                rid, provider_job_id=f"j{i}", endpoint_host="h", model=None
            )
            claim, announced = await asyncio.gather(cancels.cancel(rid), ends.finish(rid))
            cancelled = claim.previous_state == "in_flight"
            assert cancelled != announced, (claim, announced)
            wins["cancel" if cancelled else "end"] += 1
            # Whoever lost, a second try changes nothing.
            assert (await cancels.cancel(rid)).previous_state in ("cancelled", "done")
            assert await ends.finish(rid) is announced
        assert await cancels.in_use(provider) == 0
        print(f"cancel vs end on PostgreSQL: {wins}")
    finally:
        await submitter.dispose()
        await poller.dispose()


async def test_cancels_and_a_batch_of_ends_never_both_win(postgres_url: str) -> None:
    # The poller's batched gate on its own engine against cancels on the submitter's.
    submitter, poller = await open_engine(postgres_url), await open_engine(postgres_url)
    try:
        cancels, gate = Ledger(submitter), BatchedLedger(poller)
        provider = f"prov-{uuid.uuid4().hex[:6]}"
        rids = [f"b-{uuid.uuid4().hex[:8]}" for _ in range(40)]
        won_by_cancel, announced = await race_cancels_against_a_batch_of_ends(
            cancels, gate, provider, rids
        )
        # Asked again (a redelivered batch), every request gets the same answer.
        assert list(await asyncio.gather(*(gate.finish(rid) for rid in rids))) == announced
        assert await cancels.cancelled_among(rids) == won_by_cancel
        print(f"cancels won {len(won_by_cancel)} of 20 against a batch of ends")
    finally:
        await submitter.dispose()
        await poller.dispose()


async def test_two_replicas_claiming_one_request_hold_one_slot(postgres_url: str) -> None:
    engines = [await open_engine(postgres_url), await open_engine(postgres_url)]
    try:
        ledgers = [BatchedLedger(engine) for engine in engines]
        provider = f"prov-{uuid.uuid4().hex[:6]}"
        for _ in range(10):
            rid = f"d-{uuid.uuid4().hex[:8]}"
            claims = await asyncio.gather(
                *(ledger.acquire(rid, provider, 100, known=None) for ledger in ledgers)
            )
            assert all(c is not None and c.state == "submitting" for c in claims), claims
        # Ten requests, each claimed by both replicas at once: ten slots, not twenty.
        assert await ledgers[0].in_use(provider) == 10
    finally:
        for engine in engines:
            await engine.dispose()

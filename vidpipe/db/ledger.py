"""The submitter's ledger: request -> provider job, and the per-provider concurrency quota.

Why a table and not memory: a redelivered or resent GenerationRequested must not start a second
paid job, and a restarted submitter must know how many jobs are still in flight. Every step is a
single conditional UPDATE/INSERT, atomic in SQLite and PostgreSQL alike, so replicas can share it.

The intent (`intent_at`) is written before each create: a claim that has one and no job id may
already have a paid job at the provider, so the submitter reconciles before creating again.

A cancel and the job's own end race for the same claim (`cancel` against `finish`/`release`):
each is one conditional UPDATE from `submitting`/`in_flight`, so exactly one wins, and the
`cancelled` row it leaves keeps the request from ever being submitted again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import RowMapping, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.events import utcnow
from vidpipe.db.coalesce import Coalescer
from vidpipe.db.tables import insert_ignore, provider_slots, submissions

__all__ = ["BatchedLedger", "CancelClaim", "Ledger", "NewClaim", "NotedJob", "Submission"]


@dataclass(frozen=True)
class Submission:
    request_id: str
    provider: str
    state: str
    provider_job_id: str | None
    endpoint_host: str | None
    model: str | None
    #: When a create was first sent for this claim; None: never sent (or the provider said no).
    intent_at: datetime | None = None


@dataclass(frozen=True)
class CancelClaim:
    """What `Ledger.cancel` found: the state before (None: no row), and the job it held."""

    previous_state: str | None
    provider: str | None
    provider_job_id: str | None


@dataclass(frozen=True)
class NewClaim:
    """A request with no row yet asking for one of `provider`'s `limit` slots."""

    request_id: str
    provider: str
    limit: int


@dataclass(frozen=True)
class NotedJob:
    """A provider's job to note on its request's claim (`Ledger.mark_in_flight`)."""

    request_id: str
    provider_job_id: str
    endpoint_host: str
    model: str | None


class Ledger:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        #: Stamps `created_at` / `updated_at`; tests pass a fixed one.
        self.clock = clock

    async def get(self, request_id: str) -> Submission | None:
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(submissions).where(submissions.c.request_id == request_id)
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else _submission(row)

    async def get_many(self, request_ids: Sequence[str]) -> dict[str, Submission]:
        """`get` for a batch, in one query: the rows found, by request id."""
        if not request_ids:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(submissions).where(submissions.c.request_id.in_(request_ids))
            )
            return {str(row["request_id"]): _submission(row) for row in rows.mappings()}

    async def record_intent(self, request_id: str) -> datetime:
        """Note that a create is about to be sent (the first time counts); returns that time."""
        now = self.clock()
        async with self.engine.begin() as conn:
            noted = (
                await conn.execute(
                    update(submissions)
                    .where(
                        submissions.c.request_id == request_id, submissions.c.intent_at.is_(None)
                    )
                    .values(intent_at=now, updated_at=now)
                    .returning(submissions.c.intent_at)
                )
            ).first()
        if noted is not None:
            return now
        known = await self.get(request_id)
        return known.intent_at if known is not None and known.intent_at is not None else now

    async def record_intents(self, request_ids: Sequence[str]) -> dict[str, datetime]:
        """`record_intent` for a batch, in one transaction: each request's intent time."""
        if not request_ids:
            return {}
        now = self.clock()
        async with self.engine.begin() as conn:
            noted = await conn.execute(
                update(submissions)
                .where(submissions.c.request_id.in_(request_ids), submissions.c.intent_at.is_(None))
                .values(intent_at=now, updated_at=now)
                .returning(submissions.c.request_id)
            )
            intents = {str(request_id): now for (request_id,) in noted}
            rest = [request_id for request_id in request_ids if request_id not in intents]
            if rest:
                earlier = await conn.execute(
                    select(submissions.c.request_id, submissions.c.intent_at).where(
                        submissions.c.request_id.in_(rest)
                    )
                )
                intents |= {str(r): _aware(at) or now for r, at in earlier}
        return {request_id: intents.get(request_id, now) for request_id in request_ids}

    async def taken_jobs(self, provider: str, job_ids: Iterable[str]) -> set[str]:
        """Which of `job_ids` another request of `provider` already holds."""
        wanted = list(job_ids)
        if not wanted:
            return set()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(submissions.c.provider_job_id).where(
                    submissions.c.provider == provider,
                    submissions.c.provider_job_id.in_(wanted),
                )
            )
            return {str(row[0]) for row in rows}

    async def try_acquire(self, request_id: str, provider: str, limit: int) -> bool:
        """Take one of `provider`'s `limit` slots for `request_id` (True if it already has one)."""
        return await self.acquire(request_id, provider, limit) is not None

    async def acquire(
        self,
        request_id: str,
        provider: str,
        limit: int,
        *,
        known: Submission | Literal["unread"] | None = "unread",
    ) -> Submission | None:
        """The request's claim on one of `provider`'s `limit` slots: the one it holds already,
        or a new one; None when every slot is taken. `known` is the request's row when the
        caller has just read it (None: it has none), which saves reading it again."""
        existing = await self.get(request_id) if known == "unread" else known
        if existing is not None:
            return existing if existing.state in ("submitting", "in_flight") else None
        return await self._new_claim(NewClaim(request_id, provider, limit))

    async def _new_claim(self, claim: NewClaim) -> Submission | None:
        return (await self.acquire_many([claim]))[claim]

    async def acquire_many(self, claims: Sequence[NewClaim]) -> dict[NewClaim, Submission | None]:
        """New claims (`acquire` of requests with no row) in one transaction, taken provider
        by provider, each provider's in the order given: each gets a slot while that
        provider's `limit` allows."""
        taken: dict[NewClaim, Submission | None] = {}
        if not claims:
            return taken
        now = self.clock()
        async with self.engine.begin() as conn:
            # By provider (in arrival order within one): replicas lock slot rows in one order.
            for claim in sorted(claims, key=lambda claim: claim.provider):
                if not await _take_slot(conn, claim.provider, claim.limit):
                    taken[claim] = None
                    continue
                row = {
                    "request_id": claim.request_id,
                    "provider": claim.provider,
                    "state": "submitting",
                    "created_at": now,
                    "updated_at": now,
                }
                if await insert_ignore(conn, submissions, row, "request_id"):
                    taken[claim] = Submission(
                        claim.request_id, claim.provider, "submitting", None, None, None, None
                    )
                    continue
                # Another replica (or a cancel) made this request's row first: our slot goes
                # back, and the claim that won is what counts.
                await _free_slot(conn, claim.provider)
                won = (
                    (
                        await conn.execute(
                            select(submissions).where(submissions.c.request_id == claim.request_id)
                        )
                    )
                    .mappings()
                    .first()
                )
                held = won is not None and won["state"] in ("submitting", "in_flight")
                taken[claim] = _submission(won) if held and won is not None else None
        return taken

    async def mark_in_flight(
        self, request_id: str, *, provider_job_id: str, endpoint_host: str, model: str | None
    ) -> bool:
        """Note the provider's job; False when a cancel took the claim meanwhile (the job is
        still noted on the cancelled row, so the caller can cancel it and nobody adopts it)."""
        job = NotedJob(request_id, provider_job_id, endpoint_host, model)
        return (await self.mark_many_in_flight([job]))[job]

    async def mark_many_in_flight(self, jobs: Sequence[NotedJob]) -> dict[NotedJob, bool]:
        """`mark_in_flight` for a batch, in one transaction, in the order given."""
        marked: dict[NotedJob, bool] = {}
        if not jobs:
            return marked
        now = self.clock()
        async with self.engine.begin() as conn:
            for job in jobs:
                values = {
                    "provider_job_id": job.provider_job_id,
                    "endpoint_host": job.endpoint_host,
                    "model": job.model,
                    "updated_at": now,
                }
                claimed = (
                    await conn.execute(
                        update(submissions)
                        .where(
                            submissions.c.request_id == job.request_id,
                            submissions.c.state.in_(("submitting", "in_flight")),
                        )
                        .values(state="in_flight", **values)
                        .returning(submissions.c.request_id)
                    )
                ).first()
                if claimed is None:
                    await conn.execute(
                        update(submissions)
                        .where(
                            submissions.c.request_id == job.request_id,
                            submissions.c.state == "cancelled",
                        )
                        .values(**values)
                    )
                marked[job] = claimed is not None
        return marked

    async def cancel(self, request_id: str) -> CancelClaim:
        """Take the request's claim for a cancel, atomically against the job's own end
        (`finish`, `release`) and against other replicas: a request with no row gets a
        cancelled one (it is then never submitted); a held claim becomes cancelled and its slot
        is freed; a finished or cancelled one is left as it is. Returns the state it found."""
        for _ in range(5):
            known = await self.get(request_id)
            now = self.clock()
            if known is None:
                async with self.engine.begin() as conn:
                    if await insert_ignore(
                        conn,
                        submissions,
                        {
                            "request_id": request_id,
                            # Not known yet: the request may never arrive.
                            "provider": "",
                            "state": "cancelled",
                            "created_at": now,
                            "updated_at": now,
                        },
                        "request_id",
                    ):
                        return CancelClaim(None, None, None)
                continue  # claimed at the same moment: read what won
            if known.state not in ("submitting", "in_flight"):
                return CancelClaim(known.state, known.provider, known.provider_job_id)
            async with self.engine.begin() as conn:
                taken = (
                    await conn.execute(
                        update(submissions)
                        .where(
                            submissions.c.request_id == request_id,
                            submissions.c.state == known.state,
                        )
                        .values(state="cancelled", updated_at=now)
                        .returning(submissions.c.provider, submissions.c.provider_job_id)
                    )
                ).first()
                if taken is None:
                    continue  # the state moved under us (the job ended, or a job id arrived)
                await _free_slot(conn, str(taken[0]))
                return CancelClaim(known.state, str(taken[0]), taken[1])
        raise RuntimeError(f"the ledger row of {request_id!r} kept changing during a cancel")

    async def is_cancelled(self, request_id: str) -> bool:
        known = await self.get(request_id)
        return known is not None and known.state == "cancelled"

    async def finish(self, request_id: str) -> bool:
        """The provider's job ended: free its slot and close the claim, unless a cancel took
        it first. False means the request was cancelled and its outcome must not be announced;
        a request the ledger never saw (or one already finished) is True."""
        if await self.release(request_id):
            return True
        return not await self.is_cancelled(request_id)

    async def cancelled_among(self, request_ids: Sequence[str]) -> set[str]:
        """Those of `request_ids` a cancel took: `is_cancelled` for a batch, in one query."""
        if not request_ids:
            return set()
        async with self.engine.connect() as conn:
            return await _cancelled_among(conn, request_ids)

    async def finish_many(self, request_ids: Sequence[str]) -> set[str]:
        """`finish` for a batch of ended jobs, in one transaction: each claim still held is
        closed and its slot freed. Returns those a cancel took first (not to be announced)."""
        if not request_ids:
            return set()
        async with self.engine.begin() as conn:
            done = (
                await conn.execute(
                    update(submissions)
                    .where(
                        submissions.c.request_id.in_(request_ids),
                        submissions.c.state.in_(("submitting", "in_flight")),
                    )
                    .values(state="done", updated_at=self.clock())
                    .returning(submissions.c.request_id, submissions.c.provider)
                )
            ).all()
            # Sorted: replicas freeing slots of several providers lock their rows in one order.
            for provider, count in sorted(Counter(str(p) for _, p in done).items()):
                await _free_slot(conn, provider, count)
            rest = set(request_ids) - {str(request_id) for request_id, _ in done}
            return await _cancelled_among(conn, sorted(rest)) if rest else set()

    async def release(self, request_id: str) -> bool:
        """Mark the request done and free its slot; False if it was already released."""
        async with self.engine.begin() as conn:
            done = (
                await conn.execute(
                    update(submissions)
                    .where(
                        submissions.c.request_id == request_id,
                        submissions.c.state.in_(("submitting", "in_flight")),
                    )
                    .values(state="done", updated_at=self.clock())
                    .returning(submissions.c.provider)
                )
            ).first()
            if done is None:
                return False
            await _free_slot(conn, str(done[0]))
            return True

    async def forget(self, request_id: str) -> None:
        """Drop a claim whose provider call never produced a job (slot released first)."""
        await self.release(request_id)
        async with self.engine.begin() as conn:
            # A cancelled row stays: it is what keeps the request from being submitted later.
            await conn.execute(
                submissions.delete().where(
                    submissions.c.request_id == request_id, submissions.c.state != "cancelled"
                )
            )

    async def in_use(self, provider: str) -> int:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(provider_slots.c.in_use).where(provider_slots.c.provider == provider)
                )
            ).first()
        return int(row[0]) if row else 0

    async def usage(self) -> dict[str, tuple[int, int]]:
        """provider -> (quota slots in use, jobs in flight): the submitter's gauges."""
        async with self.engine.connect() as conn:
            slots = await conn.execute(select(provider_slots.c.provider, provider_slots.c.in_use))
            usage = {str(provider): (int(in_use), 0) for provider, in_use in slots}
            flying = await conn.execute(
                select(submissions.c.provider, func.count())
                .where(submissions.c.state == "in_flight")
                .group_by(submissions.c.provider)
            )
            for provider, count in flying:
                usage[str(provider)] = (usage.get(str(provider), (0, 0))[0], int(count))
        return usage


class BatchedLedger(Ledger):
    """The ledger whose hot single-request calls, made side by side by the handlers of one
    consumer batch, are carried out together (`vidpipe.db.coalesce`): one query for every
    `get` and `is_cancelled` waiting, one transaction for every new claim of `acquire`, every
    `record_intent`, `mark_in_flight` and `finish`. Each caller gets the answer its own call
    would have had; the rest of the ledger is `Ledger`'s."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_keys: int = 500,
    ) -> None:
        super().__init__(engine, clock=clock)
        self._gets: Coalescer[str, Submission | None] = Coalescer(self._gets_of, max_keys=max_keys)
        self._cancels: Coalescer[str, bool] = Coalescer(self._cancels_of, max_keys=max_keys)
        self._finishes: Coalescer[str, bool] = Coalescer(self._finishes_of, max_keys=max_keys)
        self._intents: Coalescer[str, datetime] = Coalescer(self.record_intents, max_keys=max_keys)
        self._marks: Coalescer[NotedJob, bool] = Coalescer(
            self.mark_many_in_flight, max_keys=max_keys
        )
        self._claims: Coalescer[NewClaim, Submission | None] = Coalescer(
            self.acquire_many, max_keys=max_keys
        )

    async def get(self, request_id: str) -> Submission | None:
        return await self._gets(request_id)

    async def is_cancelled(self, request_id: str) -> bool:
        return await self._cancels(request_id)

    async def finish(self, request_id: str) -> bool:
        return await self._finishes(request_id)

    async def record_intent(self, request_id: str) -> datetime:
        return await self._intents(request_id)

    async def mark_in_flight(
        self, request_id: str, *, provider_job_id: str, endpoint_host: str, model: str | None
    ) -> bool:
        return await self._marks(NotedJob(request_id, provider_job_id, endpoint_host, model))

    async def _new_claim(self, claim: NewClaim) -> Submission | None:
        return await self._claims(claim)

    async def _gets_of(self, request_ids: Sequence[str]) -> dict[str, Submission | None]:
        found = await self.get_many(request_ids)
        return {request_id: found.get(request_id) for request_id in request_ids}

    async def _cancels_of(self, request_ids: Sequence[str]) -> dict[str, bool]:
        taken = await self.cancelled_among(request_ids)
        return {request_id: request_id in taken for request_id in request_ids}

    async def _finishes_of(self, request_ids: Sequence[str]) -> dict[str, bool]:
        taken = await self.finish_many(request_ids)
        return {request_id: request_id not in taken for request_id in request_ids}


async def _free_slot(conn: AsyncConnection, provider: str, count: int = 1) -> None:
    in_use = provider_slots.c.in_use
    await conn.execute(
        update(provider_slots)
        .where(provider_slots.c.provider == provider, in_use > 0)
        .values(in_use=case((in_use > count, in_use - count), else_=0))
    )


async def _cancelled_among(conn: AsyncConnection, request_ids: Sequence[str]) -> set[str]:
    rows = await conn.execute(
        select(submissions.c.request_id).where(
            submissions.c.request_id.in_(request_ids), submissions.c.state == "cancelled"
        )
    )
    return {str(request_id) for (request_id,) in rows}


async def _take_slot(conn: AsyncConnection, provider: str, limit: int) -> bool:
    """One more of `provider`'s slots in use, unless `limit` are; its counter row is made at
    its first claim."""
    take = (
        update(provider_slots)
        .where(provider_slots.c.provider == provider, provider_slots.c.in_use < limit)
        .values(in_use=provider_slots.c.in_use + 1)
    )
    if (await conn.execute(take)).rowcount == 1:
        return True
    await insert_ignore(conn, provider_slots, {"provider": provider, "in_use": 0}, "provider")
    return bool((await conn.execute(take)).rowcount == 1)


def _submission(row: RowMapping) -> Submission:
    return Submission(
        request_id=row["request_id"],
        provider=row["provider"],
        state=row["state"],
        provider_job_id=row["provider_job_id"],
        endpoint_host=row["endpoint_host"],
        model=row["model"],
        intent_at=_aware(row["intent_at"]),
    )


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands timestamps back naive; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value

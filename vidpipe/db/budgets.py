"""The budgets' ledger: reservations against spending limits, atomic across submitter replicas.

A request's estimated cost is reserved in every bucket it is charged to
(`vidpipe.policy.budgets.charges_for`) in one transaction, each by a conditional
`UPDATE ... SET spent = spent + cost WHERE spent + cost <= limit`: on PostgreSQL concurrent
updates of one bucket row wait for each other and re-check the condition on the committed row,
on SQLite writers are serialised, so no two replicas can both take the last room. A bucket
refused rolls the whole transaction back: a request reserves in all its buckets or in none.
Buckets are taken in a fixed order (by name), so two reservations never deadlock.

When the job ends, `settle` replaces the reservation by the final cost (0 when nothing was
billed), once: a redelivered end settles nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.events import utcnow
from vidpipe.db.tables import budget_buckets, budget_reservations, insert_ignore
from vidpipe.policy.budgets import Charge

__all__ = ["BudgetLedger", "Refused"]


@dataclass(frozen=True)
class Refused:
    """`charge`'s bucket has no room for the cost: `spent_micros` is committed or reserved."""

    charge: Charge
    spent_micros: int


class _NoRoom(Exception):
    def __init__(self, refused: Refused) -> None:
        self.refused = refused


class BudgetLedger:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    async def reserve(
        self, request_id: str, charges: Sequence[Charge], cost_micros: int
    ) -> Refused | None:
        """Reserve `cost_micros` for `request_id` in every bucket of `charges`; None when it
        is reserved (now, or by an earlier delivery), else the first bucket without room."""
        if not charges:
            return None
        now = self.clock()
        try:
            async with self.engine.begin() as conn:
                for index, charge in enumerate(sorted(charges, key=lambda c: c.bucket)):
                    fresh = await _insert_reservation(
                        conn, request_id, charge.bucket, cost_micros, now
                    )
                    if not fresh:
                        if index == 0:
                            return None  # reserved by an earlier delivery of this request
                        continue
                    await _take(conn, charge, cost_micros, now)
        except _NoRoom as refused:
            return refused.refused
        return None

    async def settle(self, request_id: str, final_micros: int) -> bool:
        """The job ended costing `final_micros`: its reservations become that; False when
        they were settled already (or it never had any)."""
        now = self.clock()
        async with self.engine.begin() as conn:
            query = (
                select(budget_reservations.c.bucket, budget_reservations.c.amount_micros)
                .where(
                    budget_reservations.c.request_id == request_id,
                    budget_reservations.c.state == "reserved",
                )
                .order_by(budget_reservations.c.bucket)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            held = (await conn.execute(query)).all()
            for bucket, amount in held:
                await conn.execute(
                    update(budget_reservations)
                    .where(
                        budget_reservations.c.request_id == request_id,
                        budget_reservations.c.bucket == bucket,
                    )
                    .values(state="settled", amount_micros=final_micros, updated_at=now)
                )
                await conn.execute(
                    update(budget_buckets)
                    .where(budget_buckets.c.bucket == bucket)
                    .values(
                        spent_micros=budget_buckets.c.spent_micros + (final_micros - int(amount)),
                        updated_at=now,
                    )
                )
            return bool(held)

    async def reserved(self, request_id: str) -> int:
        """What `request_id` holds reserved (not yet settled), per bucket alike; 0: none."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(budget_reservations.c.amount_micros).where(
                        budget_reservations.c.request_id == request_id,
                        budget_reservations.c.state == "reserved",
                    )
                )
            ).first()
        return int(row[0]) if row else 0

    async def spent(self, bucket: str) -> int:
        """What `bucket` has committed and reserved, in micro-dollars."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(budget_buckets.c.spent_micros).where(budget_buckets.c.bucket == bucket)
                )
            ).first()
        return int(row[0]) if row else 0


async def _insert_reservation(
    conn: AsyncConnection, request_id: str, bucket: str, cost_micros: int, now: datetime
) -> bool:
    """The reservation row, unless this request has one in `bucket`; True if inserted."""
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(budget_reservations)
        .values(
            request_id=request_id,
            bucket=bucket,
            amount_micros=cost_micros,
            state="reserved",
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["request_id", "bucket"])
        .returning(budget_reservations.c.request_id)
    )
    return (await conn.execute(statement)).first() is not None


async def _take(conn: AsyncConnection, charge: Charge, cost_micros: int, now: datetime) -> None:
    """Add `cost_micros` to `charge`'s bucket if it stays within the limit, else raise _NoRoom
    (which rolls the caller's transaction back)."""
    await insert_ignore(
        conn,
        budget_buckets,
        {
            "bucket": charge.bucket,
            "spent_micros": 0,
            "limit_micros": charge.limit_micros,
            "updated_at": now,
        },
        "bucket",
    )
    taken = await conn.execute(
        update(budget_buckets)
        .where(
            budget_buckets.c.bucket == charge.bucket,
            budget_buckets.c.spent_micros + cost_micros <= charge.limit_micros,
        )
        .values(
            spent_micros=budget_buckets.c.spent_micros + cost_micros,
            limit_micros=charge.limit_micros,
            updated_at=now,
        )
    )
    if taken.rowcount == 1:
        return
    spent = (
        await conn.execute(
            select(budget_buckets.c.spent_micros).where(budget_buckets.c.bucket == charge.bucket)
        )
    ).scalar_one()
    raise _NoRoom(Refused(charge, int(spent)))

"""Budgets: spending limits by period (a UTC day, a UTC month), globally or per metadata key.

Pure: which budget buckets a request is charged to (`charges_for`), what a refusal says
(`refusal`), and how long a request whose budget says `wait` waits (`wait_delay`). The
reservation itself, atomic across submitter replicas, is `vidpipe.db.budgets`.

A bucket is one budget in one period for one value of its key, e.g. `day:2026-12-02:tenant=acme`:
its spend is what the jobs charged to it committed (final costs) plus what the ones in flight
reserved (estimates). A request whose metadata lacks a keyed budget's key is not charged to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vidpipe.policy.prices import micros_to_usd, usd_to_micros

__all__ = ["BUCKET_MAX_CHARS", "Budget", "Charge", "charges_for", "refusal", "wait_delay"]

#: The width of the ledger's bucket column.
BUCKET_MAX_CHARS = 255


class Budget(BaseModel):
    """One limit: `limit_usd` per `period`, over all requests (`key` unset) or per value of the
    request's `metadata[key]` (only `value` when it is set); over it, a request fails
    (`budget_exceeded`) or waits (`on_exceed: wait`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period: Literal["day", "month"]
    limit_usd: float = Field(gt=0)
    key: str | None = Field(default=None, min_length=1, max_length=64)
    value: str | None = Field(default=None, max_length=512)
    on_exceed: Literal["fail", "wait"] = "fail"

    def label(self, value: str | None = None) -> str:
        scope = "global" if self.key is None else f"{self.key}={value or self.value}"
        return f"{self.period} budget ({scope})"


@dataclass(frozen=True)
class Charge:
    """A reservation to make: `bucket` may hold at most `limit_micros`."""

    bucket: str
    limit_micros: int
    budget: Budget
    label: str


def _period_start(period: str, now: datetime) -> str:
    now = now.astimezone(UTC)
    return now.strftime("%Y-%m-%d") if period == "day" else now.strftime("%Y-%m")


def _period_end(period: str, now: datetime) -> datetime:
    now = now.astimezone(UTC)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if period == "day":
        return day + timedelta(days=1)
    return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)


def _bucket(period: str, start: str, scope: str) -> str:
    name = f"{period}:{start}:{scope}"
    if len(name) <= BUCKET_MAX_CHARS:
        return name
    # A long metadata value: its hash keeps the bucket unique and within the column.
    return f"{period}:{start}:{hashlib.sha256(scope.encode()).hexdigest()}"


def charges_for(
    budgets: Iterable[Budget], metadata: Mapping[str, str], now: datetime
) -> list[Charge]:
    """The buckets a request with `metadata`, submitted at `now`, is charged to, in a fixed
    order (by bucket), so that concurrent reservations lock them in the same order."""
    charges: dict[str, Charge] = {}
    for budget in budgets:
        start = _period_start(budget.period, now)
        if budget.key is None:
            scope, value = "*", None
        else:
            value = metadata.get(budget.key)
            if value is None or (budget.value is not None and value != budget.value):
                continue
            scope = f"{budget.key}={value}"
        bucket = _bucket(budget.period, start, scope)
        charge = Charge(bucket, usd_to_micros(budget.limit_usd), budget, budget.label(value))
        # Two budgets on one bucket: the tighter limit holds.
        if bucket not in charges or charge.limit_micros < charges[bucket].limit_micros:
            charges[bucket] = charge
    return [charges[b] for b in sorted(charges)]


def refusal(charge: Charge, spent_micros: int, cost_micros: int) -> str:
    """The `budget_exceeded` message: which budget, its limit, its spend, this job's cost."""
    period = charge.bucket.split(":")[1]
    return (
        f"{charge.label} {period}: limit ${micros_to_usd(charge.limit_micros):.2f},"
        f" spent ${micros_to_usd(spent_micros):.2f} (committed and in flight),"
        f" this job ${micros_to_usd(cost_micros):.2f}"
    )


def wait_delay(charge: Charge, now: datetime, *, retry_s: float) -> float:
    """How long a request over a `wait` budget waits: `retry_s` (a job in flight may end
    cheaper than reserved and free room), never past the start of the next period."""
    until_next = (_period_end(charge.budget.period, now) - now).total_seconds()
    return max(0.0, min(retry_s, until_next))

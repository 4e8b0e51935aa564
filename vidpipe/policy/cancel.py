"""What a cancel means, given where the request was when the ledger took it.

Pure: `plan_cancel(previous_state, provider_job_id)` reads the state the ledger's one atomic
transition found (`vidpipe.db.ledger.Ledger.cancel`) and says whether the request ends
cancelled and which provider job, if any, to cancel; `cancelled_event` builds the JobCancelled
with an id derived from the request alone, so a redelivered or replayed cancel announces the
very same event. The ledger is the arbiter between a cancel and the job's own end: whichever
takes the request's claim first wins, so a request ends either cancelled or with its outcome,
never both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas.events import CancelRequested, JobCancelled, clip_message, derive_event_id

__all__ = [
    "CANCELLABLE_STATUSES",
    "CancelPlan",
    "cancel_refusal",
    "cancel_targets",
    "cancelled_event",
    "lineage_cancels",
    "plan_cancel",
]

Verdict = Literal["never_submitted", "create_in_progress", "in_flight", "again", "too_late"]


@dataclass(frozen=True)
class CancelPlan:
    """`announce`: the request ends cancelled (publish JobCancelled); `cancel_job`: the provider
    job to cancel first (None: there is none, or none known yet)."""

    verdict: Verdict
    announce: bool
    cancel_job: str | None = None

    @property
    def stage(self) -> Literal["before_submit", "submitting", "in_flight"]:
        if self.verdict == "create_in_progress":
            return "submitting"
        # A repeated cancel knows no more than its job id: none means none was ever made.
        return "before_submit" if self.cancel_job is None else "in_flight"


def plan_cancel(previous_state: str | None, provider_job_id: str | None) -> CancelPlan:
    """The plan for a cancel that found the request's ledger row in `previous_state`
    (None: no row, the request was never seen; `cancelled`: an earlier cancel won)."""
    if previous_state is None:
        # The ledger now holds a tombstone: the request, when it comes, is never submitted.
        return CancelPlan("never_submitted", announce=True)
    if previous_state == "submitting":
        # A create may be under way: the submitter cancels whatever job it returns.
        return CancelPlan("create_in_progress", announce=True, cancel_job=provider_job_id)
    if previous_state == "in_flight":
        return CancelPlan("in_flight", announce=True, cancel_job=provider_job_id)
    if previous_state == "cancelled":
        # A redelivery, or a second cancel: the provider is asked again (its cancel is
        # idempotent), in case the first attempt died before asking it, and the same event
        # is announced again (consumers drop the copy).
        return CancelPlan("again", announce=True, cancel_job=provider_job_id)
    # `done`: the job ended (succeeded or failed) before the cancel; its outcome stands.
    return CancelPlan("too_late", announce=False)


def cancelled_event(
    cancel: CancelRequested,
    plan: CancelPlan,
    *,
    provider: str | None,
    provider_cancelled: bool,
    now: datetime,
) -> JobCancelled:
    """The JobCancelled a plan announces; one event id per request, whatever the delivery."""
    if plan.stage == "before_submit":
        message = "cancelled before it was submitted: no provider job was created"
    elif plan.cancel_job is None:
        message = "cancelled while its job was being created; that job is cancelled on arrival"
    elif provider_cancelled:
        message = f"cancelled at the provider (job {plan.cancel_job})"
    else:
        message = (
            f"cancelled; the provider had already ended job {plan.cancel_job} or refused to"
            " stop it, and its result is discarded"
        )
    if cancel.reason:
        message = f"{message}; reason: {cancel.reason}"
    return JobCancelled(
        event_id=derive_event_id(cancel.request_id, "JobCancelled"),
        occurred_at=now,
        request_id=cancel.request_id,
        causation_id=cancel.event_id,
        provider=provider or None,
        provider_job_id=plan.cancel_job,
        stage=plan.stage,
        provider_cancelled=provider_cancelled,
        message=clip_message(message),
    )


#: The statuses in which a cancel can still stop something: past them the provider's job has
#: ended (its video is generated, or it failed) and a cancel would change nothing.
CANCELLABLE_STATUSES = frozenset({"requested", "submitted", "queued", "running"})


def cancel_targets(
    request_id: str, status: str | None, child: tuple[str, str | None] | None = None
) -> list[str] | str:
    """The requests a cancel of `request_id` is sent for, or why it is refused (one line).

    The request itself while its job can still be stopped (`cancel_refusal`), and its latest
    failover child (`child`: its id and recorded status, None while not recorded yet) while that
    one can: a request that failed over is the child's job now, and whoever cancels the request
    they made means its whole lineage."""
    refused = cancel_refusal(request_id, status)
    targets = [] if refused is not None else [request_id]
    if status is not None and child is not None:
        child_id, child_status = child
        if child_status is None or child_status in CANCELLABLE_STATUSES:
            targets.append(child_id)
    return targets if targets else (refused or f"nothing of {request_id!r} can be stopped")


def lineage_cancels(
    cancel: CancelRequested, status: str | None, child: tuple[str, str | None] | None = None
) -> list[CancelRequested] | str:
    """The cancels to publish for `cancel` (`cancel_targets`): the asked one as it is, and one
    for the child from the same source, naming the request it comes from; or why none."""
    targets = cancel_targets(cancel.request_id, status, child)
    if isinstance(targets, str):
        return targets
    return [
        cancel
        if target == cancel.request_id
        else CancelRequested.model_validate(
            {
                "request_id": target,
                "source": cancel.source,
                "reason": f"its lineage's request {cancel.request_id}",
            }
        )
        for target in targets
    ]


def cancel_refusal(request_id: str, status: str | None) -> str | None:
    """Why a cancel of a request whose record says `status` (None: no record) is refused
    before it is sent (one line, for the CLI and the gateway); None when it is worth sending.
    The ledger still decides for real: the record may lag the pipeline."""
    if status is None:
        return f"no record of request {request_id!r}"
    if status not in CANCELLABLE_STATUSES:
        return f"request {request_id!r} is already {status}: a cancel would change nothing"
    return None

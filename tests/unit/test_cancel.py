"""Cancel: the pure plan, the ledger's one claim, the submitter and poller handlers, the record."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.events import (
    CancelRequested,
    GenerationRequested,
    JobCancelled,
    JobFailed,
    JobSubmitted,
    JobSucceeded,
    PollDue,
    VideoStored,
)
from schemas.topics import Topics
from services.poller.handlers import JobGate, PollerDeps, handle_poll_due
from services.submitter.handlers import (
    SubmitterDeps,
    handle_cancel_requested,
    handle_generation_requested,
)
from tests.contracts.ledger_contract import race_cancels_against_a_batch_of_ends
from vidpipe.cli import app
from vidpipe.db.ledger import BatchedLedger, Ledger
from vidpipe.db.tables import open_engine
from vidpipe.errors import ProviderUnavailable
from vidpipe.policy.cancel import (
    cancel_refusal,
    cancel_targets,
    cancelled_event,
    lineage_cancels,
    plan_cancel,
)
from vidpipe.policy.projection import project, project_parent
from vidpipe.providers.base import InputImage, ProviderJob, VideoSpec
from vidpipe.testing import FakeProvider, MemoryPublisher

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


async def _no_image(url: str) -> InputImage:
    raise AssertionError("no image expected")


# Every test on the plain ledger and on the batched one the stages run: the same answers.
@pytest.fixture(params=[Ledger, BatchedLedger])
async def ledger(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    engine = await open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield request.param(engine)
    await engine.dispose()


def _submitter(ledger: Ledger, provider: FakeProvider) -> tuple[SubmitterDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    deps = SubmitterDeps(
        providers={provider.name: provider},
        ledger=ledger,
        publisher=publisher,
        topics=Topics("t."),
        default_provider=provider.name,
        quota=lambda _name: 1,
        fetch_image=_no_image,
        clock=lambda: NOW,
    )
    return deps, publisher


def _cancelled(publisher: MemoryPublisher) -> list[JobCancelled]:
    return [e for e in publisher.events if isinstance(e, JobCancelled)]


def _req(rid: str) -> GenerationRequested:
    return GenerationRequested.model_validate({"request_id": rid, "prompt": "a fox"})


def _cancel(rid: str) -> CancelRequested:
    return CancelRequested.model_validate({"request_id": rid, "source": "test"})


def _job(status: str) -> ProviderJob:
    state = {"queued": "queued", "succeeded": "succeeded", "cancelled": "cancelled"}[status]
    return ProviderJob(
        job_id="task_1",
        status=state,  # type: ignore[arg-type]
        raw_status=status,
        generation_ids=["gen_1"] if status == "succeeded" else [],
    )


# --- the pure plan ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "job", "verdict", "announce", "cancel_job", "stage"),
    [
        (None, None, "never_submitted", True, None, "before_submit"),
        ("submitting", None, "create_in_progress", True, None, "submitting"),
        ("in_flight", "j1", "in_flight", True, "j1", "in_flight"),
        ("cancelled", "j1", "again", True, "j1", "in_flight"),
        ("cancelled", None, "again", True, None, "before_submit"),
        ("done", "j1", "too_late", False, None, "before_submit"),
    ],
)
def test_plan_cancel_follows_the_state_the_ledger_found(
    state: str | None,
    job: str | None,
    verdict: str,
    announce: bool,
    cancel_job: str | None,
    stage: str,
) -> None:
    plan = plan_cancel(state, job)
    assert (plan.verdict, plan.announce, plan.cancel_job, plan.stage) == (
        verdict,
        announce,
        cancel_job,
        stage,
    )


def test_the_cancelled_event_has_one_id_per_request() -> None:
    plan = plan_cancel("in_flight", "j1")
    first = cancelled_event(
        _cancel("r1"), plan, provider="azure-sora", provider_cancelled=True, now=NOW
    )
    again = cancelled_event(
        _cancel("r1"),
        plan_cancel("cancelled", "j1"),
        provider="azure-sora",
        provider_cancelled=False,
        now=NOW,
    )
    assert first.event_id == again.event_id
    assert first.provider_job_id == "j1" and "at the provider" in first.message


def test_a_cancel_request_without_event_id_gets_a_derived_one() -> None:
    assert _cancel("r1").event_id == _cancel("r1").event_id != _cancel("r2").event_id


@pytest.mark.parametrize(
    ("status", "refused"),
    [
        (None, "no record of request 'x'"),
        ("requested", None),
        ("running", None),
        ("generated", "request 'x' is already generated: a cancel would change nothing"),
        ("stored", "request 'x' is already stored: a cancel would change nothing"),
        ("cancelled", "request 'x' is already cancelled: a cancel would change nothing"),
    ],
)
def test_cancel_refusal(status: str | None, refused: str | None) -> None:
    assert cancel_refusal("x", status) == refused


# --- the ledger ---------------------------------------------------------------------------------


async def test_a_cancel_before_the_request_leaves_a_tombstone_the_request_obeys(
    ledger: Ledger,
) -> None:
    provider = FakeProvider()
    deps, publisher = _submitter(ledger, provider)
    await handle_cancel_requested(_cancel("r1"), deps)
    await handle_generation_requested(_req("r1"), deps)
    assert provider.created == [] and provider.cancelled == []
    (cancelled,) = _cancelled(publisher)
    assert cancelled.stage == "before_submit" and not cancelled.provider_cancelled
    assert publisher.of_type(JobSubmitted) == []


async def test_a_cancel_in_flight_stops_the_job_and_frees_the_slot(ledger: Ledger) -> None:
    provider = FakeProvider()
    deps, publisher = _submitter(ledger, provider)
    await handle_generation_requested(_req("r1"), deps)
    assert await ledger.in_use(provider.name) == 1
    await handle_cancel_requested(_cancel("r1"), deps)
    assert provider.cancelled == ["task_1"]
    assert await ledger.in_use(provider.name) == 0
    # Redelivered: the provider is asked again, the same event announced, the slot not freed twice.
    await handle_cancel_requested(_cancel("r1"), deps)
    first, again = _cancelled(publisher)
    assert first.event_id == again.event_id and first.provider_job_id == "task_1"
    assert first.stage == "in_flight" and first.provider_cancelled
    assert await ledger.in_use(provider.name) == 0
    # The slot is really free: the next request gets it.
    await handle_generation_requested(_req("r2"), deps)
    assert len(provider.created) == 2
    # A resent request of the cancelled one is not re-announced.
    await handle_generation_requested(_req("r1"), deps)
    assert [e.request_id for e in publisher.of_type(JobSubmitted)] == ["r1", "r2"]


async def test_a_cancel_after_the_job_ended_changes_nothing(ledger: Ledger) -> None:
    provider = FakeProvider()
    deps, publisher = _submitter(ledger, provider)
    await handle_generation_requested(_req("r1"), deps)
    assert await ledger.finish("r1")
    await handle_cancel_requested(_cancel("r1"), deps)
    assert provider.cancelled == [] and _cancelled(publisher) == []
    assert (await ledger.get("r1")).state == "done"  # type: ignore[union-attr]


async def test_a_cancel_during_the_create_cancels_the_job_on_arrival(ledger: Ledger) -> None:
    provider = FakeProvider()
    deps, publisher = _submitter(ledger, provider)
    entered, release = asyncio.Event(), asyncio.Event()
    create = provider.create_job

    async def slow_create(spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        entered.set()
        await release.wait()
        return await create(spec, idempotency_key=idempotency_key)

    provider.create_job = slow_create  # type: ignore[method-assign]
    submitting = asyncio.create_task(handle_generation_requested(_req("r1"), deps))
    await asyncio.wait_for(entered.wait(), 5)
    await handle_cancel_requested(_cancel("r1"), deps)
    release.set()
    await asyncio.wait_for(submitting, 5)
    assert provider.cancelled == ["task_1"]
    assert publisher.of_type(JobSubmitted) == []
    (cancelled,) = _cancelled(publisher)
    assert cancelled.stage == "submitting"
    assert await ledger.in_use(provider.name) == 0
    # The job is noted on the cancelled row: nobody adopts it.
    assert await ledger.taken_jobs(provider.name, ["task_1"]) == {"task_1"}


async def test_a_cancel_while_a_create_answer_is_lost_finds_and_stops_the_job(
    ledger: Ledger,
) -> None:
    provider = FakeProvider(lose_create_answers=1)
    deps, publisher = _submitter(ledger, provider)
    await handle_generation_requested(_req("r1"), deps)  # the answer is lost: it waits
    assert len(provider.created) == 1 and publisher.scheduled
    await handle_cancel_requested(_cancel("r1"), deps)
    assert provider.cancelled == []  # no job id known yet
    await handle_generation_requested(_req("r1"), deps)  # back from its wait
    assert provider.cancelled == ["task_1"] and len(provider.created) == 1
    assert publisher.of_type(JobSubmitted) == []
    assert await ledger.in_use(provider.name) == 0


async def test_a_provider_error_on_cancel_still_ends_the_request_cancelled(
    ledger: Ledger,
) -> None:
    provider = FakeProvider()
    deps, publisher = _submitter(ledger, provider)
    await handle_generation_requested(_req("r1"), deps)

    async def down(job_id: str) -> bool:
        raise ProviderUnavailable("fake: down", status_code=503)

    provider.cancel_job = down  # type: ignore[method-assign]
    await handle_cancel_requested(_cancel("r1"), deps)
    (cancelled,) = _cancelled(publisher)
    assert not cancelled.provider_cancelled
    assert await ledger.in_use(provider.name) == 0


async def test_cancel_and_finish_race_for_one_claim(ledger: Ledger) -> None:
    for i in range(20):
        rid = f"race{i}"
        assert await ledger.acquire(rid, "p", 100) is not None
        await ledger.mark_in_flight(rid, provider_job_id=f"j{i}", endpoint_host="h", model=None)
        claim, finished = await asyncio.gather(ledger.cancel(rid), ledger.finish(rid))
        cancelled = claim.previous_state == "in_flight"
        assert cancelled != finished, (claim, finished)
    assert await ledger.in_use("p") == 0


async def test_finish_many_gives_each_request_the_answer_finish_would(ledger: Ledger) -> None:
    for rid, provider in (("held1", "a"), ("held2", "a"), ("held3", "b"), ("gone", "a")):
        assert await ledger.acquire(rid, provider, 10) is not None
        await ledger.mark_in_flight(rid, provider_job_id=f"j-{rid}", endpoint_host="h", model=None)
    assert await ledger.finish("held3")  # already done: finishing again is still announced
    await ledger.cancel("gone")
    assert await ledger.cancelled_among(["held1", "gone", "never"]) == {"gone"}
    assert await ledger.finish_many(["held1", "held2", "held3", "gone", "never"]) == {"gone"}
    assert [(await ledger.get(r)).state for r in ("held1", "held2", "held3", "gone")] == [  # type: ignore[union-attr]
        "done",
        "done",
        "done",
        "cancelled",
    ]
    assert (await ledger.in_use("a"), await ledger.in_use("b")) == (0, 0)
    assert await ledger.finish_many([]) == set() and await ledger.cancelled_among([]) == set()


async def test_the_batched_calls_answer_each_request_as_its_own_call_would(
    tmp_path: Path,
) -> None:
    moments = iter(datetime(2026, 12, 3, 12, m, tzinfo=UTC) for m in range(60))
    engine = await open_engine(f"sqlite:///{tmp_path / 'batch.sqlite'}")
    ledger = BatchedLedger(engine, clock=lambda: next(moments))
    try:
        for rid in ("a", "b", "c"):
            assert await ledger.acquire(rid, "p", 10) is not None
        first = await ledger.record_intent("a")
        await ledger.cancel("c")
        # Side by side: one query, one transaction each, and every caller its own answer.
        got = await asyncio.gather(*(ledger.get(rid) for rid in ("a", "b", "c", "none")))
        assert [g.state if g else None for g in got] == [
            "submitting",
            "submitting",
            "cancelled",
            None,
        ]
        intents = await asyncio.gather(*(ledger.record_intent(rid) for rid in ("a", "b")))
        assert intents[0] == first and intents[1] > first  # the first intent is kept
        marks = await asyncio.gather(
            *(
                ledger.mark_in_flight(
                    rid, provider_job_id=f"j-{rid}", endpoint_host="h", model=None
                )
                for rid in ("a", "b", "c")
            )
        )
        assert marks == [True, True, False]
        # The job that came back for the cancelled request is noted on its row.
        assert await ledger.taken_jobs("p", ["j-a", "j-c"]) == {"j-a", "j-c"}
        assert await asyncio.gather(*(ledger.is_cancelled(r) for r in ("a", "c"))) == [False, True]
    finally:
        await engine.dispose()


async def test_new_claims_made_together_keep_the_quota_and_lose_to_a_row_made_first(
    ledger: Ledger,
) -> None:
    await ledger.cancel("late")  # a cancel made the row after the caller read "no row"
    claims = await asyncio.gather(
        *(ledger.acquire(rid, "p", 2, known=None) for rid in ("late", "n1", "n2", "n3"))
    )
    assert [c.state if c else None for c in claims] == [None, "submitting", "submitting", None]
    assert await ledger.in_use("p") == 2  # the losing claim gave its slot back
    assert (await ledger.get("late")).state == "cancelled"  # type: ignore[union-attr]
    assert await ledger.get("n3") is None


async def test_finish_many_frees_one_slot_per_claim_it_closes(ledger: Ledger) -> None:
    for i in range(5):
        assert await ledger.acquire(f"s{i}", "p", 10) is not None
    assert await ledger.finish_many(["s0", "s1", "s2"]) == set()
    assert await ledger.in_use("p") == 2
    assert await ledger.finish_many(["s0", "s3", "s4"]) == set()  # s0 frees nothing twice
    assert await ledger.in_use("p") == 0


async def test_cancels_and_batched_ends_never_both_win(ledger: Ledger) -> None:
    gate = BatchedLedger(ledger.engine)
    rids = [f"batch{i}" for i in range(20)]
    won_by_cancel, _ = await race_cancels_against_a_batch_of_ends(ledger, gate, "p", rids)
    assert len(won_by_cancel) >= 5  # at least those cancelled before the batch
    assert [await gate.is_cancelled(rid) for rid in rids] == [rid in won_by_cancel for rid in rids]


# --- the poller ---------------------------------------------------------------------------------


def _due(rid: str) -> PollDue:
    return PollDue.model_validate(
        {
            "event_id": "00000000-0000-0000-0000-000000000001",
            "request_id": rid,
            "provider": "azure-sora",
            "provider_job_id": "task_1",
            "submitted_at": NOW.isoformat(),
        }
    )


GATES = [
    pytest.param(lambda ledger: ledger, id="ledger"),
    pytest.param(lambda ledger: BatchedLedger(ledger.engine), id="batched"),
]


@pytest.mark.parametrize("gate_of", GATES)
async def test_a_due_check_of_a_cancelled_job_asks_nothing_and_schedules_nothing(
    ledger: Ledger, gate_of: Callable[[Ledger], JobGate]
) -> None:
    provider = FakeProvider(statuses=[])  # a provider call would fail: nothing to answer
    sub, _ = _submitter(ledger, provider)
    await handle_generation_requested(_req("r1"), sub)
    await handle_cancel_requested(_cancel("r1"), sub)
    publisher = MemoryPublisher()
    deps = PollerDeps(
        providers={provider.name: provider},
        publisher=publisher,
        topics=Topics("t."),
        gate=gate_of(ledger),
    )
    await handle_poll_due(_due("r1"), deps)
    assert publisher.events == [] and publisher.scheduled == []


async def test_an_outcome_seen_after_the_cancel_won_is_not_announced(ledger: Ledger) -> None:
    provider = FakeProvider(statuses=[_job("succeeded")])
    sub, _ = _submitter(ledger, provider)
    await handle_generation_requested(_req("r1"), sub)

    class LateGate:
        """The cancel lands between the is_cancelled look and the provider's answer."""

        async def is_cancelled(self, request_id: str) -> bool:
            await handle_cancel_requested(_cancel(request_id), sub)
            return False

        async def finish(self, request_id: str) -> bool:
            return await ledger.finish(request_id)

    publisher = MemoryPublisher()
    deps = PollerDeps(
        providers={provider.name: provider},
        publisher=publisher,
        topics=Topics("t."),
        gate=LateGate(),
    )
    await handle_poll_due(_due("r1"), deps)
    assert publisher.of_type(JobSucceeded) == [] and publisher.scheduled == []


@pytest.mark.parametrize("gate_of", GATES)
async def test_a_success_that_wins_frees_the_slot_and_is_announced(
    ledger: Ledger, gate_of: Callable[[Ledger], JobGate]
) -> None:
    provider = FakeProvider(statuses=[_job("succeeded")])
    sub, _ = _submitter(ledger, provider)
    await handle_generation_requested(_req("r1"), sub)
    publisher = MemoryPublisher()
    deps = PollerDeps(
        providers={provider.name: provider},
        publisher=publisher,
        topics=Topics("t."),
        gate=gate_of(ledger),
    )
    await handle_poll_due(_due("r1"), deps)
    assert len(publisher.of_type(JobSucceeded)) == 1
    assert await ledger.in_use(provider.name) == 0


# --- the record ---------------------------------------------------------------------------------


def _cancelled_event() -> JobCancelled:
    return cancelled_event(
        _cancel("r1"),
        plan_cancel("in_flight", "j1"),
        provider="p",
        provider_cancelled=True,
        now=NOW,
    )


def test_the_record_ends_cancelled_and_stays_so() -> None:
    row = {"status": "running"}
    row |= project(row, _cancelled_event())
    assert row["status"] == "cancelled" and "cancelled" in row["error_message"]
    failed = JobFailed.model_validate(
        {
            "event_id": "00000000-0000-0000-0000-000000000002",
            "request_id": "r1",
            "stage": "submit",
            "reason_code": "x",
            "message": "late failure",
        }
    )
    stored = VideoStored.model_validate(
        {
            "event_id": "00000000-0000-0000-0000-000000000003",
            "request_id": "r1",
            "storage_url": "file:///v.mp4",
            "size_bytes": 1,
            "sha256": "0" * 64,
        }
    )
    assert project(row, failed).get("status") is None
    assert project(row, stored).get("status") is None


def test_a_stored_record_ignores_a_cancel() -> None:
    assert project({"status": "stored"}, _cancelled_event()) == {}


def test_a_failure_recorded_first_is_overtaken_by_the_cancel() -> None:
    # The two topics are not ordered: a create that failed after the cancel may be read first.
    assert project({"status": "failed"}, _cancelled_event())["status"] == "cancelled"


# --- a lineage: a cancel of the request that failed over stops its latest child ------------------


@pytest.mark.parametrize(
    ("status", "child", "targets"),
    [
        ("running", None, ["r1"]),
        ("failed_over", ("r1.failover", "running"), ["r1.failover"]),
        ("failed_over", ("r1.failover", None), ["r1.failover"]),  # child not recorded yet
        ("running", ("r1.failover", "queued"), ["r1", "r1.failover"]),
        ("failed_over", ("r1.failover", "stored"), "already failed_over"),
        ("stored", None, "already stored"),
        (None, None, "no record"),
    ],
)
def test_cancel_targets_are_the_request_and_its_child_while_they_can_be_stopped(
    status: str | None, child: tuple[str, str | None] | None, targets: list[str] | str
) -> None:
    found = cancel_targets("r1", status, child)
    if isinstance(targets, str):
        assert isinstance(found, str) and targets in found
    else:
        assert found == targets


def test_the_childs_cancel_comes_from_the_same_source_and_names_its_parent() -> None:
    asked = CancelRequested.model_validate({"request_id": "r1", "source": "cli", "reason": "x"})
    cancels = lineage_cancels(asked, "failed_over", ("r1.failover", "running"))
    assert not isinstance(cancels, str)
    (child,) = cancels
    assert (child.request_id, child.source) == ("r1.failover", "cli")
    assert child.reason == "its lineage's request r1"
    assert (
        lineage_cancels(asked, "stored")
        == "request 'r1' is already stored: a cancel would change nothing"
    )


def test_a_cancelled_child_ends_its_parent_cancelled() -> None:
    child_cancelled = cancelled_event(
        _cancel("r1.failover"),
        plan_cancel("in_flight", "j2"),
        provider="p",
        provider_cancelled=True,
        now=NOW,
    )
    parent = {"request_id": "r1", "status": "failed_over", "failover_request_id": "r1.failover"}
    child = {"request_id": "r1.failover", "status": "running"}
    assert project_parent(parent, child, child_cancelled)["status"] == "cancelled"
    # An earlier child (the lineage moved on) or a parent already stored is left as it is.
    assert (
        project_parent({**parent, "failover_request_id": "r1.failover2"}, child, child_cancelled)
        == {}
    )
    assert project_parent({**parent, "status": "stored"}, child, child_cancelled) == {}
    # The child's cancel recorded before its request (another topic): the link still ends it.
    request = GenerationRequested.model_validate(
        {"request_id": "r1.failover", "prompt": "a fox", "parent_request_id": "r1"}
    )
    cancelled_child = {**child, "status": "cancelled", "error_message": "cancelled: by cli"}
    linked = project_parent({**parent, "failover_request_id": None}, cancelled_child, request)
    assert (linked["status"], linked["failover_request_id"]) == ("cancelled", "r1.failover")


# --- the CLI's bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle", "code"),
    [
        (["cancel", "missing-id"], "no record of request 'missing-id'", 1),
        (["cancel", "a/b"], "invalid request id 'a/b'", 2),
    ],
)
def test_cancel_of_an_unknown_or_bad_id_gets_one_line_and_non_zero_exit(
    args: list[str], needle: str, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIDPIPE_KAFKA_BOOTSTRAP", raising=False)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code
    message = result.stderr.strip()
    assert needle in message
    assert len(message.splitlines()) == 1, message

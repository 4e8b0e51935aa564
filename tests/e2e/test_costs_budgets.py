"""Costs and budgets through the whole pipeline: three submitter replicas racing at the edge of a
budget never overspend, and a mixed run's `vidpipe costs` report adds up (docs/costs.md)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from sqlalchemy import func, select

from tests.e2e.conftest import MakePipeline
from tests.e2e.harness import Pipeline, make_request
from vidpipe.db.tables import budget_buckets, budget_reservations
from vidpipe.dev.emulator.server import EmulatorThread

JOB_USD = 0.5  # 5 s at 1280x720 on azure-sora, at the built-in prices
_CREATED = ("azure.jobs_created", "openai.jobs_created")


def _created(emulator: EmulatorThread, before: dict[str, int]) -> int:
    after = dict(emulator.state.stats)
    return sum(after.get(k, 0) - before.get(k, 0) for k in _CREATED)


async def _vidpipe(pipeline: Pipeline, *args: str) -> str:
    """Run the `vidpipe` command against the pipeline's records; its stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vidpipe",
        *args,
        env={**os.environ, **pipeline.env, "COLUMNS": "140"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_three_submitters_racing_at_the_edge_of_a_budget_never_overspend(
    make_pipeline: MakePipeline, roomy_emulator: EmulatorThread
) -> None:
    limit_usd = 2.0  # room for 4 jobs of $0.50
    pipeline = await make_pipeline(
        {
            "VIDPIPE_TOPIC_PARTITIONS": "6",
            "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": "50",
            "VIDPIPE_OPENAI_MAX_CONCURRENT_JOBS": "50",
            "VIDPIPE_BUDGETS": json.dumps([{"period": "day", "limit_usd": limit_usd}]),
        }
    )
    submitters = [pipeline.start("submitter", instance) for instance in range(3)]
    pipeline.start("recorder")
    await pipeline.wait_for_group("submitter", members=3)
    before = dict(roomy_emulator.state.stats)
    prefix = pipeline.settings.topic_prefix
    requests = [
        make_request(
            prefix,
            f"race{i}",
            # Long jobs: every accepted one stays in flight, its estimate reserved.
            prompt=f"race {i} [emulator:duration=600]",
            provider="azure-sora",
            seconds=5,
            size="1280x720",
        )
        for i in range(12)
    ]
    await pipeline.publish(*requests)
    ids = [r.request_id for r in requests]
    views = await pipeline.wait_for(
        ids, until=lambda v: v.status in ("submitted", "queued", "running", "failed")
    )
    submitted = [v for v in views.values() if v.status != "failed"]
    refused = [v for v in views.values() if v.status == "failed"]
    created = _created(roomy_emulator, before)
    spend = sum(v.estimated_cost_usd or 0.0 for v in submitted)
    print(
        f"\nbudget race: 12 requests, 3 submitters, ${limit_usd:.2f} a day, ${JOB_USD:.2f} a job:"
        f" {created} jobs created at the emulator, {len(refused)} refused, spend ${spend:.2f}"
    )
    assert created == len(submitted) == 4, "the budget let more jobs through than it holds"
    # The race was real: the requests were decided by more than one replica.
    deciding = [
        p
        for p in submitters
        if any(w in p.log_path.read_text() for w in ("job_submitted", "budget_exceeded"))
    ]
    assert len(deciding) >= 2, "one replica took every request"
    assert spend <= limit_usd + JOB_USD
    for view in refused:
        assert view.error_message is not None
        assert view.error_message.startswith("budget_exceeded: day budget (global)")
        assert "limit $2.00, spent $2.00" in view.error_message
        assert await pipeline.count_events(view.request_id, "JobSubmitted") == 0


async def test_a_mixed_run_is_costed_and_reported_by_tenant(
    make_pipeline: MakePipeline, roomy_emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline(
        {
            "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": "50",
            "VIDPIPE_OPENAI_MAX_CONCURRENT_JOBS": "50",
            "VIDPIPE_BUDGETS": json.dumps(
                [{"period": "month", "limit_usd": 1.0, "key": "tenant", "value": "trial"}]
            ),
        }
    )
    for stage in ("submitter", "poller", "fetcher", "recorder"):
        pipeline.start(stage)
    prefix = pipeline.settings.topic_prefix

    def req(name: str, tenant: str, provider: str, seconds: int, **fields: Any) -> Any:
        return make_request(
            prefix,
            name,
            provider=provider,
            seconds=seconds,
            metadata={"tenant": tenant},
            **fields,
        )

    requests = [
        req("a1", "acme", "azure-sora", 5),  # $0.50
        req("a2", "acme", "openai-videos", 4),  # $0.40
        req("a3", "acme", "openai-videos", 8, model="sora-2-pro"),  # $2.40
        req("z1", "zed", "azure-sora", 5, variants=2),  # $1.00
        # Fails at the provider: estimated, not billed.
        req("z2", "zed", "openai-videos", 4, prompt="z2 [emulator:fail=internal_error]"),
        req("t1", "trial", "azure-sora", 5),  # $0.50, within the trial budget
        req("t2", "trial", "azure-sora", 5, prompt="t2 long"),  # $0.50: fits exactly
        req("t3", "trial", "azure-sora", 5, prompt="t3 over"),  # over the trial budget
    ]
    await pipeline.publish(*requests[:-1])
    ids = [r.request_id for r in requests]
    await pipeline.wait_for(ids[:-1], timeout_s=180)
    await pipeline.publish(requests[-1])
    views = await pipeline.wait_for(ids, timeout_s=60)
    status = {rid.removeprefix(prefix): v.status for rid, v in views.items()}
    assert status == {
        "a1": "stored",
        "a2": "stored",
        "a3": "stored",
        "z1": "stored",
        "z2": "failed",
        "t1": "stored",
        "t2": "stored",
        "t3": "failed",
    }
    cost = {rid.removeprefix(prefix): v.cost_usd for rid, v in views.items()}
    assert cost == {
        "a1": 0.5,
        "a2": 0.4,
        "a3": 2.4,
        "z1": 1.0,
        "z2": 0.0,
        "t1": 0.5,
        "t2": 0.5,
        "t3": 0.0,
    }
    t3 = views[f"{prefix}t3"]
    assert t3.error_message is not None and "budget_exceeded" in t3.error_message

    report = json.loads(await _vidpipe(pipeline, "costs", "--by", "tenant", "--json"))
    by = {(line["provider"], line["tenant"]): line for line in report}
    assert {k: round(v["cost_usd"], 2) for k, v in by.items()} == {
        ("azure-sora", "acme"): 0.5,
        ("openai-videos", "acme"): 2.8,
        ("azure-sora", "zed"): 1.0,
        ("openai-videos", "zed"): 0.0,
        ("azure-sora", "trial"): 1.0,
    }
    assert by[("openai-videos", "zed")]["failed"] == 1
    # t3 is a request, never a job: the budget refused it before anything was paid.
    trial = by[("azure-sora", "trial")]
    assert (trial["requests"], trial["jobs"], trial["failed"]) == (3, 2, 1)
    assert sum(line["requests"] for line in report) == 8
    print("\n" + await _vidpipe(pipeline, "costs", "--by", "tenant"))
    one = json.loads(await _vidpipe(pipeline, "status", f"{prefix}a3", "--json"))
    assert (one["cost_usd"], one["lineage_cost_usd"]) == (2.4, 2.4)


async def test_a_failover_child_is_accounted_to_its_lineage(make_pipeline: MakePipeline) -> None:
    pipeline = await make_pipeline(
        {
            "VIDPIPE_DOWNLOAD_ATTEMPTS": "1",
            "VIDPIPE_FAILOVER_WHEN": "immediate",
            "VIDPIPE_FAILOVER_PROVIDER": "openai-videos",
        }
    )
    for stage in ("submitter", "poller", "fetcher", "recorder", "failover"):
        pipeline.start(stage)
    request = make_request(
        pipeline.settings.topic_prefix,
        "lin",
        # Azure generates it (and bills it) but never hands it over: the child on OpenAI does.
        prompt="a heron [emulator:azure.download=missing]",
        provider="azure-sora",
        seconds=4,
        fallbacks=["failover"],
        metadata={"tenant": "acme"},
    )
    await pipeline.publish(request)
    rid = request.request_id
    child = f"{rid}.failover"
    views = await pipeline.wait_for(
        [rid, child], until=lambda v: v.status == "stored" and v.cost_usd is not None
    )
    assert (views[rid].provider, views[rid].cost_usd) == ("azure-sora", 0.4)
    assert (views[child].provider, views[child].cost_usd) == ("openai-videos", 0.4)
    one = json.loads(await _vidpipe(pipeline, "status", rid, "--json"))
    assert one["lineage_cost_usd"] == 0.8
    report = json.loads(await _vidpipe(pipeline, "costs", "--by", "tenant", "--json"))
    assert [
        (line["provider"], line["tenant"], line["requests"], line["jobs"], line["cost_usd"])
        for line in report
    ] == [("azure-sora", "acme", 1, 1, 0.4), ("openai-videos", "acme", 0, 1, 0.4)]


async def test_a_cancelled_job_settles_its_reservation_at_its_estimate(
    make_pipeline: MakePipeline, roomy_emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline(
        {"VIDPIPE_BUDGETS": json.dumps([{"period": "day", "limit_usd": 10.0}])}
    )
    for name in ("submitter", "poller", "recorder"):
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    request = make_request(
        prefix,
        "cancelled",
        prompt="a long one [emulator:duration=600]",
        provider="azure-sora",
        seconds=5,
        size="1280x720",
    )
    await pipeline.publish(request)
    rid = request.request_id
    await pipeline.wait_for([rid], until=lambda v: v.sora_job_id is not None)
    assert await _reservations(pipeline, rid) == [("reserved", 500_000)]
    await _vidpipe(pipeline, "cancel", rid)
    await pipeline.wait_for([rid], until=lambda v: v.status == "cancelled")
    # The provider had the job: it counts at its estimate (what a cancel is billed is unknown),
    # settled once, and the day's bucket holds exactly that.
    deadline = asyncio.get_running_loop().time() + 30
    while await _reservations(pipeline, rid) != [("settled", 500_000)]:
        assert asyncio.get_running_loop().time() < deadline, await _reservations(pipeline, rid)
        await asyncio.sleep(0.2)
    assert await _spent(pipeline) == 500_000


async def _reservations(pipeline: Pipeline, request_id: str) -> list[tuple[str, int]]:
    async with pipeline.records.engine.connect() as conn:
        rows = await conn.execute(
            select(budget_reservations.c.state, budget_reservations.c.amount_micros).where(
                budget_reservations.c.request_id == request_id
            )
        )
        return [(str(state), int(amount)) for state, amount in rows]


async def _spent(pipeline: Pipeline) -> int:
    async with pipeline.records.engine.connect() as conn:
        total = await conn.execute(select(func.sum(budget_buckets.c.spent_micros)))
        return int(total.scalar_one() or 0)

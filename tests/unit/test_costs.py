"""Prices, budgets and the cost report: the pure decisions, table-driven."""

from __future__ import annotations

import asyncio
import json
import tomllib
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.events import Event, GenerationRequested, JobFailed, JobSubmitted, JobSucceeded
from vidpipe.cli import app
from vidpipe.db.records import Records
from vidpipe.db.tables import open_engine
from vidpipe.errors import ConfigurationError
from vidpipe.policy.budgets import Budget, charges_for, refusal, wait_delay
from vidpipe.policy.cost_report import CostRow, cost_report, lineage_costs
from vidpipe.policy.prices import (
    DEFAULT_PRICES,
    PRICE_VERSION,
    estimate_cost,
    final_cost_micros,
    parse_price_table,
)
from vidpipe.settings import Settings

NOW = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("provider", "model", "seconds", "size", "variants", "usd"),
    [
        ("openai-videos", "sora-2", 4, (1280, 720), 1, 0.40),
        ("openai-videos", None, 8, (720, 1280), 1, 0.80),
        ("openai-videos", "sora-2-pro", 10, (1280, 720), 1, 3.00),
        ("openai-videos", "sora-2-pro", 10, (1792, 1024), 1, 5.00),
        # Bigger than every tier: the largest tier's rate.
        ("openai-videos", "sora-2-pro", 4, (3840, 2160), 1, 2.00),
        ("azure-sora", None, 5, (1280, 720), 2, 1.00),
        ("azure-sora", "unknown-deployment", 5, (480, 480), 1, 0.50),
        ("fal", None, 5, (1280, 720), 1, 0.25),
        ("replicate", None, 10, (1920, 1080), 1, 0.90),
    ],
)
def test_estimate_is_seconds_times_the_resolution_rate_times_variants(
    provider: str, model: str | None, seconds: int, size: tuple[int, int], variants: int, usd: float
) -> None:
    estimate = estimate_cost(
        DEFAULT_PRICES,
        provider,
        model,
        seconds=seconds,
        width=size[0],
        height=size[1],
        variants=variants,
    )
    assert estimate.usd == pytest.approx(usd)
    assert estimate.priced and estimate.price_version == PRICE_VERSION


def test_a_provider_without_prices_costs_nothing_and_says_so() -> None:
    estimate = estimate_cost(DEFAULT_PRICES, "nobody", None, seconds=5, width=1280, height=720)
    assert (estimate.micros, estimate.priced) == (0, False)


def test_every_provider_has_a_source_and_a_catch_all_row() -> None:
    assert set(DEFAULT_PRICES.rates) == set(DEFAULT_PRICES.sources)
    assert all("*" in models for models in DEFAULT_PRICES.rates.values())
    assert all(url.startswith("https://") for url in DEFAULT_PRICES.sources.values())


def test_a_prices_file_replaces_the_table() -> None:
    table = parse_price_table(
        tomllib.loads(
            """
            version = "2027-01-15"
            [sources]
            openai-videos = "https://openai.com/api/pricing/"
            [[rates.openai-videos."*"]]
            max_pixels = 2000000
            usd_per_second = 0.2
            [[rates.openai-videos."*"]]
            max_pixels = 921600
            usd_per_second = 0.12
            """
        )
    )
    estimate = estimate_cost(table, "openai-videos", "sora-2", seconds=5, width=1280, height=720)
    assert (estimate.usd, estimate.price_version) == (0.6, "2027-01-15")
    with pytest.raises(ValueError, match="version"):
        parse_price_table({"rates": {}})
    with pytest.raises(ValueError, match="positive"):
        parse_price_table({"version": "x", "rates": {"p": {"*": []}}})


@pytest.mark.parametrize(
    ("reported", "succeeded", "stage", "expected"),
    [
        (0.75, True, None, 750_000),  # what the end event says wins
        (None, True, None, 500_000),  # a success without a figure: the estimate
        (None, False, "fetch", 500_000),  # generated, then the download failed: billed
        (None, False, "poll", 0),  # failed at the provider: not billed
        (None, False, "submit", 0),
        (0.0, False, "poll", 0),
    ],
)
def test_final_cost(
    reported: float | None, succeeded: bool, stage: str | None, expected: int
) -> None:
    assert (
        final_cost_micros(
            reported_usd=reported, reserved_micros=500_000, succeeded=succeeded, stage=stage
        )
        == expected
    )


def test_charges_global_and_per_key_in_bucket_order() -> None:
    budgets = [
        Budget(period="month", limit_usd=1000),
        Budget(period="day", limit_usd=50, key="tenant"),
        Budget(period="day", limit_usd=5, key="tenant", value="trial", on_exceed="wait"),
        Budget(period="day", limit_usd=20, key="user_id"),
    ]
    acme = charges_for(budgets, {"tenant": "acme"}, NOW)
    assert [(c.bucket, c.limit_micros) for c in acme] == [
        ("day:2026-12-02:tenant=acme", 50_000_000),
        ("month:2026-12:*", 1_000_000_000),
    ]
    # Two budgets on one bucket: the tighter limit (and its policy) holds.
    trial = charges_for(budgets, {"tenant": "trial"}, NOW)
    assert trial[0].limit_micros == 5_000_000 and trial[0].budget.on_exceed == "wait"
    # A request without the key is not charged to that budget.
    assert [c.bucket for c in charges_for(budgets, {}, NOW)] == ["month:2026-12:*"]


def test_a_long_metadata_value_is_hashed_into_the_bucket() -> None:
    charge = charges_for([Budget(period="day", limit_usd=1, key="k")], {"k": "v" * 512}, NOW)[0]
    assert len(charge.bucket) <= 255 and charge.bucket.startswith("day:2026-12-02:")


def test_the_refusal_names_the_budget_its_limit_and_the_spend() -> None:
    charge = charges_for([Budget(period="day", limit_usd=50, key="tenant")], {"tenant": "a"}, NOW)
    message = refusal(charge[0], 49_600_000, 500_000)
    assert message == (
        "day budget (tenant=a) 2026-12-02: limit $50.00, spent $49.60 (committed and in flight),"
        " this job $0.50"
    )


@pytest.mark.parametrize(
    ("period", "now", "expected"),
    [
        ("day", datetime(2026, 12, 2, 12, 0, tzinfo=UTC), 60.0),
        ("day", datetime(2026, 12, 2, 23, 59, 30, tzinfo=UTC), 30.0),
        ("month", datetime(2026, 12, 31, 23, 59, 50, tzinfo=UTC), 10.0),  # into January
        ("month", datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), 1.0),
    ],
)
def test_a_waiting_request_looks_again_at_the_latest_when_the_period_turns(
    period: str, now: datetime, expected: float
) -> None:
    budget = Budget.model_validate({"period": period, "limit_usd": 1, "on_exceed": "wait"})
    (charge,) = charges_for([budget], {}, now)
    assert wait_delay(charge, now, retry_s=60.0) == pytest.approx(expected)


def _row(rid: str, **fields: object) -> CostRow:
    base: dict[str, object] = {
        "request_id": rid,
        "parent_request_id": None,
        "provider": "azure-sora",
        "created_at": NOW,
        "status": "stored",
        "estimated_cost_usd": 0.5,
        "cost_usd": 0.5,
        "metadata": {"tenant": "acme"},
    }
    base.update(fields)
    return CostRow(**base)  # type: ignore[arg-type]


def test_the_report_accounts_failover_children_to_their_lineage() -> None:
    rows = [
        _row("a", status="failed_over", cost_usd=0.5),
        # The child ran a day later at another provider: its root's day and tenant.
        _row(
            "a.failover",
            parent_request_id="a",
            provider="openai-videos",
            created_at=datetime(2026, 12, 3, 0, 5, tzinfo=UTC),
            cost_usd=0.4,
            metadata={},
        ),
        _row("b", metadata={"tenant": "zed"}, status="failed", cost_usd=0.0),
        _row("c", status="running", cost_usd=None, estimated_cost_usd=0.8),
    ]
    lines = [line.as_json("tenant") for line in cost_report(rows, "tenant")]
    assert lines == [
        {
            "day": "2026-12-02",
            "provider": "azure-sora",
            "tenant": "acme",
            "requests": 2,
            "jobs": 2,
            "failed": 0,
            "cost_usd": 0.5,
            "open_usd": 0.8,
        },
        {
            "day": "2026-12-02",
            "provider": "azure-sora",
            "tenant": "zed",
            "requests": 1,
            "jobs": 1,
            "failed": 1,
            "cost_usd": 0.0,
            "open_usd": 0.0,
        },
        {
            "day": "2026-12-02",
            "provider": "openai-videos",
            "tenant": "acme",
            "requests": 0,
            "jobs": 1,
            "failed": 0,
            "cost_usd": 0.4,
            "open_usd": 0.0,
        },
    ]
    assert lineage_costs(rows) == {"a": 0.9, "b": 0.0, "c": 0.0}


def test_a_cancelled_job_counts_at_its_estimate_and_a_running_one_is_open() -> None:
    rows = [
        _row("x", status="cancelled", cost_usd=None, estimated_cost_usd=0.3),
        _row("y", status="cancelled", cost_usd=None, estimated_cost_usd=None),  # never submitted
        _row("z", status="running", cost_usd=None, estimated_cost_usd=0.8),
    ]
    (line,) = cost_report(rows)
    assert (line.requests, line.jobs, line.cost_usd, line.open_usd) == (3, 2, 0.3, 0.8)
    assert lineage_costs(rows) == {"x": 0.3, "y": 0.0, "z": 0.0}


def test_budgets_and_prices_come_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('version = "v9"\n[[rates.fal."*"]]\nmax_pixels = 10\nusd_per_second = 1\n')
    more = tmp_path / "budgets.json"
    more.write_text('[{"period": "month", "limit_usd": 100, "on_exceed": "wait"}]')
    monkeypatch.setenv("VIDPIPE_BUDGETS", '[{"period":"day","limit_usd":50,"key":"tenant"}]')
    monkeypatch.setenv("VIDPIPE_BUDGETS_FILE", str(more))
    monkeypatch.setenv("VIDPIPE_PRICES_FILE", str(prices))
    settings = Settings()
    assert [(b.period, b.key, b.on_exceed) for b in settings.all_budgets] == [
        ("day", "tenant", "fail"),
        ("month", None, "wait"),
    ]
    assert settings.price_table.version == "v9"
    prices.write_text("version = 3\n")
    with pytest.raises(ConfigurationError, match="VIDPIPE_PRICES_FILE"):
        _ = Settings().price_table
    assert Settings(prices_file=None).price_table is DEFAULT_PRICES


def _record_run(url: str) -> None:
    """A submitted-and-succeeded request and a failed one, through the recorder's own code."""

    async def run() -> None:
        engine = await open_engine(url)
        try:
            records = Records(engine, clock=lambda: NOW)
            events: list[tuple[Event, str]] = []
            for rid, tenant in (("ok", "acme"), ("bad", "zed")):
                request = GenerationRequested.model_validate(
                    {"request_id": rid, "prompt": "p", "metadata": {"tenant": tenant}}
                )
                events.append((request, "t.generation.requested"))
                submitted = JobSubmitted(
                    event_id=uuid.uuid4(),
                    request_id=rid,
                    provider="azure-sora",
                    provider_job_id=f"job-{rid}",
                    cost_usd=0.5,
                    price_version=PRICE_VERSION,
                )
                events.append((submitted, "t.job.submitted"))
            succeeded = JobSucceeded(
                event_id=uuid.uuid4(),
                request_id="ok",
                provider="azure-sora",
                provider_job_id="job-ok",
                generation_ids=["g"],
            )
            failed = JobFailed(
                event_id=uuid.uuid4(),
                request_id="bad",
                stage="poll",
                reason_code="internal_error",
                message="boom",
                cost_usd=0.0,
            )
            events += [(succeeded, "t.job.succeeded"), (failed, "t.job.failed")]
            await records.record_many(events)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_the_costs_command_reports_from_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    _record_run(url)
    monkeypatch.setenv("VIDPIPE_DATABASE_URL", url)
    result = CliRunner().invoke(app, ["costs", "--by", "tenant", "--json"])
    assert result.exit_code == 0, result.output
    lines = json.loads(result.stdout)
    assert [(ln["tenant"], ln["jobs"], ln["failed"], ln["cost_usd"]) for ln in lines] == [
        ("acme", 1, 0, 0.5),  # a success without a figure of its own: its estimate
        ("zed", 1, 1, 0.0),
    ]
    table = CliRunner().invoke(app, ["costs"])
    assert table.exit_code == 0 and "0.50" in table.stdout and "total" in table.stdout
    bad = CliRunner().invoke(app, ["costs", "--since", "yesterday-ish"])
    assert bad.exit_code == 2 and "--since" in bad.output

"""Failover chains: the next provider of a lineage, which failures warrant one, child ids."""

from __future__ import annotations

import pytest

from vidpipe.policy.failover import (
    chain_for,
    child_request_id,
    next_provider,
    parse_chain,
    worth_failing_over,
)


def test_parse_chain_keeps_order_and_drops_blanks_and_repeats() -> None:
    assert parse_chain(" gemini, fal,,gemini ") == ["gemini", "fal"]
    assert parse_chain("") == parse_chain(None) == []


@pytest.mark.parametrize(
    ("request_chain", "global_chain", "alternate", "want"),
    [
        (["fal"], ["gemini", "fal"], "openai-videos", ["fal"]),  # the request's own wins
        (None, ["gemini", "fal"], "openai-videos", ["gemini", "fal"]),  # then the setting
        (None, [], "openai-videos", ["openai-videos"]),  # VIDPIPE_FAILOVER_PROVIDER: one
        ([], [], None, ["replicate", "fal"]),  # else any other configured provider
    ],
)
def test_the_chain_comes_from_the_request_then_the_settings(
    request_chain: list[str] | None, global_chain: list[str], alternate: str | None, want: list[str]
) -> None:
    assert chain_for(request_chain, global_chain, alternate, ["replicate", "fal"]) == want


@pytest.mark.parametrize(
    ("used", "configured", "refuses", "want"),
    [
        (["azure-sora"], {"gemini", "fal"}, set(), "gemini"),
        (["azure-sora", "gemini"], {"gemini", "fal"}, set(), "fal"),
        (["azure-sora"], {"fal"}, set(), "fal"),  # gemini not configured: skipped
        (["azure-sora"], {"gemini", "fal"}, {"gemini"}, "fal"),  # gemini cannot serve it
        (["azure-sora", "gemini", "fal"], {"gemini", "fal"}, set(), None),  # spent
        (["fal"], {"gemini", "fal"}, {"gemini"}, "azure-sora"),  # a lineage begun elsewhere
    ],
)
def test_next_provider_is_the_first_unused_configured_one_that_serves(
    used: list[str], configured: set[str], refuses: set[str], want: str | None
) -> None:
    chain = ["azure-sora", "gemini", "fal"]
    assert next_provider(chain, used, configured | {"azure-sora"}, lambda p: p not in refuses) == (
        want
    )


@pytest.mark.parametrize(
    ("code", "fails_over"),
    [
        ("provider_unavailable", True),
        ("internal_error", True),
        ("insufficient_quota", True),
        ("RESOURCE_EXHAUSTED", True),
        ("daily_quota_exceeded", True),
        ("content_policy_violation", False),
        ("output_moderation", False),
        ("invalid_request", False),
        ("unsupported_request", False),
        ("budget_exceeded", False),
        ("unknown_provider", False),
    ],
)
def test_only_the_providers_own_failures_warrant_a_failover(code: str, fails_over: bool) -> None:
    assert worth_failing_over(code) is fails_over


def test_child_ids_count_hops_and_stay_within_the_contract() -> None:
    assert child_request_id("r1") == child_request_id("r1", 1) == "r1.failover"
    assert child_request_id("r1", 2) == "r1.failover2"
    long_id = "x" * 128
    first, second = child_request_id(long_id), child_request_id(long_id, 2)
    assert len(first) <= 128 and len(second) <= 128 and first != second

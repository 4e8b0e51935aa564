"""Failover chains: which provider a request goes to next, and which failures warrant it.

A lineage is a request and the failover children made for it: every child names the lineage's
first request as its `parent_request_id` and carries `failover_path`, the providers the lineage
has already used, in order. The next provider is the first of the chain that the lineage has not
used, that is configured here, and that can serve the request (`vidpipe.policy.request_mapping`),
so each provider is tried at most once per lineage.

The chain is the request's own `failover_chain`, else VIDPIPE_FAILOVER_CHAIN, else
VIDPIPE_FAILOVER_PROVIDER (a chain of one), else every other configured provider in registry
order. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence

__all__ = [
    "FAILOVER_REASON_CODES",
    "chain_for",
    "child_request_id",
    "next_provider",
    "parse_chain",
    "worth_failing_over",
]

#: Terminal failures that belong to the provider, not to the request: an outage, a quota or
#: credit exhausted for the day, the provider's own internal failure. Another provider may not
#: have them. Moderation, invalid or unsupported requests are the request's and stay failed.
FAILOVER_REASON_CODES = frozenset(
    {
        # a provider that stayed unreachable or 5xx through every retry (the poller's verdict)
        "provider_unavailable",
        "provider_outage",
        "service_unavailable",
        # Azure Sora's failure_reason for a job the service itself broke
        "internal_error",
        # quotas and credit: OpenAI insufficient_quota / billing, Google RESOURCE_EXHAUSTED
        "insufficient_quota",
        "quota_exhausted",
        "quota_exceeded",
        "daily_quota_exceeded",
        "daily_limit_exceeded",
        "resource_exhausted",
        "billing_hard_limit_reached",
        "insufficient_credits",
    }
)


def worth_failing_over(reason_code: str) -> bool:
    """A terminal `JobFailed` with this code: would another provider possibly succeed?"""
    return reason_code.lower() in FAILOVER_REASON_CODES


def parse_chain(text: str | None) -> list[str]:
    """'gemini, fal' -> ['gemini', 'fal'] (duplicates dropped, order kept)."""
    names = [part.strip() for part in (text or "").split(",") if part.strip()]
    return list(dict.fromkeys(names))


def chain_for(
    request_chain: Sequence[str] | None,
    global_chain: Sequence[str],
    alternate: str | None,
    available: Sequence[str],
) -> list[str]:
    """The ordered providers to fail over to for one request."""
    if request_chain:
        return list(request_chain)
    if global_chain:
        return list(global_chain)
    if alternate:
        return [alternate]
    return list(available)


def next_provider(
    chain: Sequence[str],
    used: Collection[str],
    configured: Collection[str],
    serves: Callable[[str], bool],
) -> str | None:
    """The first provider of `chain` not `used` by the lineage, configured, and able to serve
    the request; None when the chain is spent."""
    for name in chain:
        if name not in used and name in configured and serves(name):
            return name
    return None


def child_request_id(root: str, hop: int = 1) -> str:
    """The request id of the lineage's `hop`-th failover child (1: `<root>.failover`)."""
    suffix = ".failover" if hop <= 1 else f".failover{hop}"
    candidate = f"{root}{suffix}"
    if len(candidate) <= 128:
        return candidate
    digest = hashlib.sha256(root.encode()).hexdigest()[:12]
    return f"{root[:100]}{suffix}-{digest}"

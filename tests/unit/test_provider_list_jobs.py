"""Lost creates and the job list they are reconciled with: which create errors mean "the job may
exist", and reading the list newest first until `since`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from vidpipe.errors import CreateOutcomeUnknown, ProviderUnavailable
from vidpipe.net.retry import is_retryable
from vidpipe.providers.base import ProviderJob, create_outcome, jobs_since

SINCE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _job(item: dict[str, Any]) -> ProviderJob:
    created = datetime.fromtimestamp(item["created_at"], tz=UTC)
    return ProviderJob(job_id=item["id"], status="queued", raw_status="queued", created_at=created)


async def test_pages_until_a_job_older_than_since() -> None:
    start = int(SINCE.timestamp())
    # Newest first: 250 jobs one second apart, the last 50 older than `since`.
    items = [{"id": f"j{i}", "status": "queued", "created_at": start + 199 - i} for i in range(250)]
    asked: list[str | None] = []

    async def page(after: str | None) -> httpx.Response:
        asked.append(after)
        at = 0 if after is None else [i["id"] for i in items].index(after) + 1
        chunk = items[at : at + 100]
        body = {"object": "list", "data": chunk, "has_more": at + 100 < len(items)}
        return httpx.Response(200, json=body)

    found = await jobs_since(page, _job, SINCE, provider="p")
    assert [j.job_id for j in found] == [f"j{i}" for i in range(200)]
    assert asked == [None, "j99", "j199"]  # the third page reaches an older job and stops


async def test_a_list_answer_without_data_is_retryable() -> None:
    async def page(after: str | None) -> httpx.Response:
        return httpx.Response(200, text="<html>gateway</html>")

    with pytest.raises(ProviderUnavailable):
        await jobs_since(page, _job, SINCE, provider="p")


@pytest.mark.parametrize(
    ("cause", "lost"),
    [
        (httpx.ConnectError("refused"), False),  # never sent: safe to send again
        (httpx.ConnectTimeout("slow"), False),
        (httpx.ReadTimeout("no answer"), True),  # sent, answer lost: the job may exist
        (httpx.RemoteProtocolError("reset"), True),
        (None, False),  # a 5xx the provider answered: its own class
    ],
)
def test_a_create_whose_request_may_have_arrived_is_outcome_unknown(
    cause: httpx.TransportError | None, lost: bool
) -> None:
    error = ProviderUnavailable("p create_job: transport error")
    error.__cause__ = cause
    seen = create_outcome(error)
    assert isinstance(seen, CreateOutcomeUnknown) is lost
    assert is_retryable(seen) is not lost  # the client's own retry never re-sends a lost create

"""The fallback decisions as tables: when failover acts, whether the real video is pursued, and
that a request given up keeps its placeholder."""

from __future__ import annotations

import uuid
from itertools import combinations
from typing import Any

import pytest

from schemas.events import (
    DownloadGaveUp,
    FallbackName,
    GenerationRequested,
    RequestSnapshot,
    VideoStored,
)
from vidpipe.policy.fallbacks import (
    ALL_FALLBACKS,
    FailoverTrigger,
    failover_acts,
    parse_fallbacks,
    policy,
    pursues_real_video,
)
from vidpipe.policy.projection import project, project_parent

SUBSETS: list[tuple[FallbackName, ...]] = [
    combo for n in range(len(ALL_FALLBACKS) + 1) for combo in combinations(ALL_FALLBACKS, n)
]

# (fallbacks, timing, trigger) -> acts. The bug this table closes: after_retry without retry
# waited for a DownloadGaveUp that nothing publishes.
FAILOVER_ACTS: list[tuple[tuple[FallbackName, ...], str, FailoverTrigger, bool]] = [
    (("failover",), "immediate", "unavailable", True),
    (("failover",), "immediate", "gave_up", False),
    (("failover",), "after_retry", "unavailable", True),
    (("failover",), "after_retry", "gave_up", False),
    (("retry", "failover"), "immediate", "unavailable", True),
    (("retry", "failover"), "immediate", "gave_up", False),
    (("retry", "failover"), "after_retry", "unavailable", False),
    (("retry", "failover"), "after_retry", "gave_up", True),
    (("placeholder", "failover"), "after_retry", "unavailable", True),
    (("placeholder", "failover"), "after_retry", "gave_up", False),
    (("placeholder", "notify", "retry"), "after_retry", "gave_up", False),
    (("placeholder", "notify", "retry"), "immediate", "unavailable", False),
    ((), "immediate", "unavailable", False),
    ((), "after_retry", "gave_up", False),
]


@pytest.mark.parametrize(("fallbacks", "when", "trigger", "acts"), FAILOVER_ACTS)
def test_when_failover_acts(
    fallbacks: tuple[FallbackName, ...], when: str, trigger: FailoverTrigger, acts: bool
) -> None:
    assert failover_acts(fallbacks, when, trigger) is acts


@pytest.mark.parametrize("fallbacks", SUBSETS, ids=lambda s: "+".join(s) or "none")
@pytest.mark.parametrize("when", ["immediate", "after_retry"])
def test_failover_acts_on_exactly_one_trigger_when_the_policy_has_it(
    fallbacks: tuple[FallbackName, ...], when: str
) -> None:
    acted = [t for t in ("unavailable", "gave_up") if failover_acts(fallbacks, when, t)]
    if "failover" not in fallbacks:
        assert acted == []
    elif when == "after_retry" and "retry" in fallbacks:
        assert acted == ["gave_up"]  # the redownloader publishes it when it stops
    else:
        assert acted == ["unavailable"]


@pytest.mark.parametrize(
    ("fallbacks", "pursued"),
    [
        ((), False),
        (("placeholder",), False),
        (("notify",), False),
        (("placeholder", "notify"), False),
        (("retry",), True),
        (("failover",), True),
        (("placeholder", "notify", "failover"), True),
        (("placeholder", "notify", "retry", "failover"), True),
    ],
)
def test_what_still_pursues_the_real_video(
    fallbacks: tuple[FallbackName, ...], pursued: bool
) -> None:
    assert pursues_real_video(fallbacks) is pursued


@pytest.mark.parametrize(
    ("request_fallbacks", "expected"),
    [
        (None, ["placeholder", "notify", "retry"]),  # null: the configured default
        ([], []),  # an empty list is a choice, not "unset"
        (["failover"], ["failover"]),
    ],
)
def test_the_request_decides_else_the_default(
    request_fallbacks: list[FallbackName] | None, expected: list[FallbackName]
) -> None:
    request = RequestSnapshot(prompt="p", fallbacks=request_fallbacks)
    assert policy(request, parse_fallbacks("placeholder,notify,retry")) == expected
    assert policy(None, ["retry"]) == ["retry"]


def test_parse_fallbacks_orders_and_refuses_unknown_names() -> None:
    assert parse_fallbacks(" failover, placeholder ,") == ["placeholder", "failover"]
    with pytest.raises(ValueError, match="unknown fallbacks"):
        parse_fallbacks("placeholder,teleport")


@pytest.mark.parametrize("order", ["gave_up_first", "placeholder_first"])
def test_a_placeholder_shows_on_a_request_given_up_in_either_order(order: str) -> None:
    gave_up = DownloadGaveUp(
        event_id=uuid.uuid4(),
        request_id="r1",
        provider="azure-sora",
        provider_job_id="task_1",
        generation_id="gen_1",
        reason_code="max_attempts",
        attempts=0,
        message="no further download",
    )
    placeholder = VideoStored(
        event_id=uuid.uuid4(),
        request_id="r1",
        storage_url="file:///r1/placeholder.mp4",
        size_bytes=10,
        sha256="0" * 64,
        placeholder=True,
    )
    row: dict[str, Any] = {"request_id": "r1", "status": "download_unavailable"}
    for event in [gave_up, placeholder] if order == "gave_up_first" else [placeholder, gave_up]:
        row.update(project(row, event))
    assert (row["status"], row["placeholder"]) == ("gave_up", True)
    assert row["output_image_url"] == "file:///r1/placeholder.mp4"


@pytest.mark.parametrize("order", ["request_first", "video_first"])
def test_a_failover_childs_video_reaches_its_parent_in_either_order(order: str) -> None:
    # The child's request and video come on different topics: the recorder may see either first.
    request = GenerationRequested(
        event_id=uuid.uuid4(), request_id="r1.failover", prompt="p", parent_request_id="r1"
    )
    video = VideoStored(
        event_id=uuid.uuid4(),
        request_id="r1.failover",
        storage_url="file:///r1.failover/v.mp4",
        size_bytes=10,
        sha256="1" * 64,
    )
    parent: dict[str, Any] = {"request_id": "r1", "status": "expired", "placeholder": True}
    child: dict[str, Any] = {"request_id": "r1.failover", "status": None}
    for event in [request, video] if order == "request_first" else [video, request]:
        known_parent = child.get("parent_request_id") or getattr(event, "parent_request_id", None)
        child.update(project(child, event))
        if known_parent:  # as the recorder does: only once it knows the child's parent
            parent.update(project_parent(parent, child, event))
    assert (parent["status"], parent["placeholder"]) == ("stored", False)
    assert parent["output_image_url"] == "file:///r1.failover/v.mp4"
    assert parent["failover_request_id"] == "r1.failover"

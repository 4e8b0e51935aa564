"""A consumer group's offsets: read them, wait for them, and move a stopped group's.

`reset_offsets` points a stopped group at a time (or the start / the end), so its stage re-reads
(or skips) from there when it starts again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorError,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from vidpipe.bus.security import client_kwargs
from vidpipe.ops import OpsError, RefusedError, connected, partitions_of, resolve_topic, to_millis

__all__ = [
    "OffsetChange",
    "ResetResult",
    "committed_offsets",
    "end_offsets",
    "reset_offsets",
    "resolve_group",
    "wait_until_stable",
]

T = TypeVar("T")
# A coordinator that is moving or still loading (e.g. the first group call on a fresh broker,
# while __consumer_offsets is created) answers with these; asking again shortly succeeds.
_COORDINATOR_BUSY = (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
)


async def _ask(call: Callable[[], Awaitable[T]], timeout_s: float = 20.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except _COORDINATOR_BUSY:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.25)


def resolve_group(name: str, *, prefix: str, stages: Sequence[str]) -> str:
    """A stage name means that stage's group (`{prefix}{stage}`); anything else is a group id."""
    return f"{prefix}{name}" if name in stages else name


@dataclass(frozen=True)
class OffsetChange:
    topic: str
    partition: int
    before: int | None
    after: int

    @property
    def delta(self) -> int | None:
        return None if self.before is None else self.after - self.before


@dataclass
class ResetResult:
    group: str
    to: str
    dry_run: bool
    changes: list[OffsetChange]
    state: str


async def committed_offsets(bootstrap_servers: str, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets (partitions it never committed are absent)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="vidpipe-ops", **client_kwargs(None)
    )
    await admin.start()
    try:
        offsets = await _ask(lambda: admin.list_consumer_group_offsets(group))
    finally:
        await admin.close()
    return {tp: int(meta.offset) for tp, meta in offsets.items() if meta.offset >= 0}


async def end_offsets(bootstrap_servers: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The current end offset of every partition of `topics`."""
    async with connected(bootstrap_servers, "vidpipe-ops") as (admin, consumer):
        tps = [tp for topic in topics for tp in await partitions_of(admin, topic)]
        return {tp: int(o) for tp, o in (await consumer.end_offsets(tps)).items()}


async def _describe_group(admin: Any, group: str) -> tuple[str, list[str]]:
    """The group's state and its live members (as client_id@host)."""
    responses = await _ask(lambda: admin.describe_consumer_groups([group]))
    for response in responses:
        for described in response.to_object()["groups"]:
            if described["group"] != group:
                continue
            if described["error_code"]:
                raise OpsError(
                    f"describing group {group!r} failed: error {described['error_code']}"
                )
            members = [f"{m['client_id']}@{m['client_host']}" for m in described["members"]]
            return str(described["state"]), members
    return "Dead", []


async def wait_until_stable(
    bootstrap_servers: str,
    group: str,
    members: int,
    *,
    timeout_s: float,
    check: Callable[[], None] | None = None,
    poll_s: float = 0.2,
) -> None:
    """Wait until `group` is Stable with at least `members` consumers in it (a member that has
    not joined yet would join later and stall the group in a rebalance). `check` runs between
    looks (e.g. to fail at once when a process died); TimeoutError names what was seen last."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kwargs(None))
    await admin.start()
    state, count = "unknown", 0
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                state, live = await _describe_group(admin, group)
                count = len(live)
            except (KafkaError, OpsError):  # no coordinator yet: the group is being created
                state, count = "unknown", 0
            if state == "Stable" and count >= members:
                return
            if check is not None:
                check()
            await asyncio.sleep(poll_s)
    finally:
        await admin.close()
    raise TimeoutError(f"group {group} is {state} with {count} members, wanted {members}")


async def reset_offsets(
    bootstrap_servers: str,
    group: str,
    *,
    to: Literal["earliest", "latest"] | datetime,
    topics: Sequence[str] = (),
    prefix: str = "",
    dry_run: bool = False,
) -> ResetResult:
    """Commit new offsets for `group` on `topics` (default: the topics it has offsets for).

    Refused (RefusedError) while the group has live members: a running consumer would overwrite
    the reset with its own next commit, and the broker rejects commits from outside a live
    group anyway."""
    async with connected(bootstrap_servers, "vidpipe-ops-reset") as (admin, reader):
        state, members = await _describe_group(admin, group)
        if members or state not in ("Empty", "Dead"):
            who = ", ".join(members) or "none listed"
            raise RefusedError(
                f"group {group!r} is {state} with {len(members)} live member(s) ({who}); "
                "stop its consumers first"
            )
        before = {
            tp: int(meta.offset)
            for tp, meta in (await _ask(lambda: admin.list_consumer_group_offsets(group))).items()
            if meta.offset >= 0
        }
        names = [await resolve_topic(admin, t, prefix) for t in topics] or sorted(
            {tp.topic for tp in before}
        )
        if not names:
            raise OpsError(
                f"group {group!r} has no committed offsets; name the topics with --topic"
            )
        tps = [tp for name in names for tp in await partitions_of(admin, name)]
        ends = await reader.end_offsets(tps)
        if to == "earliest":
            targets = dict(await reader.beginning_offsets(tps))
        elif to == "latest":
            targets = dict(ends)
        else:
            found = await reader.offsets_for_times(dict.fromkeys(tps, to_millis(to)))
            # No message at or after that time: the group starts at the end.
            targets = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        changes = [
            OffsetChange(tp.topic, tp.partition, before.get(tp), int(targets[tp])) for tp in tps
        ]
        if not dry_run:
            await _commit(bootstrap_servers, group, {tp: int(targets[tp]) for tp in tps})
    label = to if isinstance(to, str) else to.isoformat(timespec="seconds")
    return ResetResult(group=group, to=label, dry_run=dry_run, changes=changes, state=state)


async def _commit(bootstrap_servers: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    # A consumer that assigns partitions itself never joins the group: it commits with the
    # "no generation" marker, which the broker accepts only while the group has no members.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        client_id="vidpipe-ops-reset",
        **client_kwargs(None),
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(
            {tp: OffsetAndMetadata(o, "vidpipe reset") for tp, o in offsets.items()}
        )
    except KafkaError as exc:
        raise RefusedError(
            f"the broker refused the new offsets for {group!r} ({exc.__class__.__name__}); "
            "did a consumer of the group start meanwhile?"
        ) from None
    finally:
        await consumer.stop()

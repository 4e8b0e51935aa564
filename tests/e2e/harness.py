"""A pipeline under test: every stage as its own OS process on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select

from schemas.events import GenerationRequested
from vidpipe.bus.upstream import RequestPublisher, new_request
from vidpipe.cli.processes import ManagedProcess
from vidpipe.db.records import ProjectView, Records
from vidpipe.db.tables import events, open_engine
from vidpipe.dev.stack import DevStack
from vidpipe.ops.offsets import committed_offsets, wait_until_stable
from vidpipe.policy.projection import TERMINAL_STATUSES
from vidpipe.settings import Settings


def make_request(
    prefix: str, name: str, prompt: str | None = None, **fields: object
) -> GenerationRequested:
    """A request whose id is unique to the test (the topic prefix is)."""
    return new_request(prompt or f"e2e {name}", request_id=f"{prefix}{name}", **fields)


@dataclass
class Pipeline:
    env: dict[str, str]
    settings: Settings
    stack: DevStack
    records: Records
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.kafka_bootstrap or ""

    def start(self, name: str, instance: int = 0) -> ManagedProcess:
        return self.stack.start_service(name, instance)

    async def publish(self, *requests: Any) -> None:
        async with RequestPublisher(
            self.bootstrap_servers, topic_prefix=self.settings.topic_prefix
        ) as p:
            for request in requests:
                await p.publish(request)

    async def publish_raw(self, value: bytes, key: str | None = None) -> None:
        async with RequestPublisher(
            self.bootstrap_servers, topic_prefix=self.settings.topic_prefix
        ) as p:
            await p.publish_raw(value, key)

    async def wait_for(
        self,
        request_ids: list[str],
        until: Callable[[ProjectView], bool] = lambda v: v.status in TERMINAL_STATUSES,
        timeout_s: float = 120.0,
    ) -> dict[str, ProjectView]:
        """Poll the records until every request satisfies `until` (bounded, then a clear error)."""
        deadline = time.monotonic() + timeout_s
        views: dict[str, ProjectView] = {}
        while time.monotonic() < deadline:
            views = await self.records.many(request_ids)
            if len(views) == len(request_ids) and all(until(v) for v in views.values()):
                return views
            self._check_alive()
            await asyncio.sleep(0.2)
        states = {rid: (views[rid].status if rid in views else "absent") for rid in request_ids}
        raise AssertionError(f"timed out after {timeout_s}s: {states}\n{self._logs()}")

    async def count_events(self, request_id: str, event_type: str) -> int:
        async with self.records.engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).where(
                            events.c.request_id == request_id, events.c.event_type == event_type
                        )
                    )
                ).scalar_one()
            )

    async def wait_for_events(
        self, request_id: str, event_type: str, count: int, timeout_s: float = 60.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.count_events(request_id, event_type) >= count:
                return
            self._check_alive()
            await asyncio.sleep(0.2)
        raise AssertionError(f"fewer than {count} {event_type} for {request_id}\n{self._logs()}")

    async def wait_for_log(
        self, stage: str, needle: str, request_id: str, times: int = 1, timeout_s: float = 30
    ) -> None:
        """Wait until `stage`'s log has `times` lines naming both `needle` and the request."""
        process = self.stack.processes[stage]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = process.log_path.read_text(errors="replace").splitlines()
            if sum(needle in line and request_id in line for line in lines) >= times:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"{stage} logged {needle} for {request_id} fewer than {times}x\n{process.log_tail()}"
        )

    async def wait_for_group(self, stage: str, members: int, timeout_s: float = 60.0) -> None:
        """Wait until `stage`'s consumer group is Stable with `members` consumers in it."""
        group = self.settings.group_id(stage)
        try:
            await wait_until_stable(
                self.bootstrap_servers, group, members, timeout_s=timeout_s, check=self._check_alive
            )
        except TimeoutError as exc:
            raise AssertionError(str(exc)) from None

    async def read_topic(
        self, topic: str, want: int, timeout_s: float = 30.0
    ) -> list[dict[str, Any]]:
        """Read `want` messages from the start of `topic` with a throwaway consumer."""
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        found: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout_s
            while len(found) < want and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    found.extend(json.loads(r.value) for r in records)
        finally:
            await consumer.stop()
        return found

    def _check_alive(self) -> None:
        for name, process in self.stack.processes.items():
            if process.proc is not None and process.proc.returncode not in (None, -9, 0):
                raise AssertionError(f"{name} crashed:\n{process.log_tail()}")

    def _logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{p.log_tail(15)}" for name, p in self.stack.processes.items()
        )


async def open_pipeline(
    *,
    bootstrap_servers: str,
    database_url: str,
    prefix: str,
    tmp_path: Path,
    provider_env: dict[str, str],
    extra_env: dict[str, str] | None = None,
) -> Pipeline:
    env = {
        "VIDPIPE_KAFKA_BOOTSTRAP": bootstrap_servers,
        "VIDPIPE_TOPIC_PREFIX": prefix,
        "VIDPIPE_DATABASE_URL": database_url,
        "VIDPIPE_STORAGE_URL": f"file://{tmp_path / 'videos'}",
        "VIDPIPE_POLL_INTERVAL_S": "0.3",
        "VIDPIPE_QUOTA_WAIT_S": "0.5",
        "VIDPIPE_LOG_LEVEL": "INFO",
        **provider_env,
        **(extra_env or {}),
    }
    settings = Settings(
        kafka_bootstrap=bootstrap_servers,
        topic_prefix=prefix,
        database_url=database_url,
        storage_url=env["VIDPIPE_STORAGE_URL"],
        topic_partitions=int(env.get("VIDPIPE_TOPIC_PARTITIONS", "3")),
    )
    stack = DevStack(
        settings, state_dir=tmp_path / "state", services=(), emulator=False, extra_env=env
    )
    stack.start()
    engine = await open_engine(database_url)
    return Pipeline(env=env, settings=settings, stack=stack, records=Records(engine))


async def close_pipeline(pipeline: Pipeline) -> None:
    pipeline.stack.stop()
    await pipeline.records.engine.dispose()


async def wait_until_consumed(
    bootstrap_servers: str, group: str, targets: dict[TopicPartition, int], timeout_s: float = 60.0
) -> None:
    """Wait until `group` has committed at least `targets` (e.g. end offsets after a redrive)."""
    deadline = time.monotonic() + timeout_s
    committed: dict[TopicPartition, int] = {}
    while time.monotonic() < deadline:
        committed = await committed_offsets(bootstrap_servers, group)
        # An empty partition (end 0) has nothing to commit, so a missing offset counts as 0.
        if all(committed.get(tp, 0) >= end for tp, end in targets.items()):
            return
        await asyncio.sleep(0.2)
    behind = {
        f"{tp.topic}/{tp.partition}": (committed.get(tp), end)
        for tp, end in targets.items()
        if committed.get(tp, 0) < end
    }
    raise TimeoutError(f"group {group!r} still behind after {timeout_s} s: {behind}")

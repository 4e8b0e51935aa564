"""Topic administration and broker readiness, through the aiokafka admin client.

Works against any Kafka-compatible broker (local jars, a container, a remote cluster): the stages
create their topics at start-up with it, and the CLI, the dev stack and the tests share it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from vidpipe.errors import BrokerNotReadyError
from vidpipe.settings import Settings

__all__ = [
    "BrokerNotReadyError",
    "ensure_all_topics",
    "ensure_topics",
    "probe_broker",
    "wait_for_broker",
]

log = logging.getLogger(__name__)

# Error code 36: the broker already has the topic (another process may have won the race).
_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


async def probe_broker(bootstrap_servers: str, timeout_s: float = 3.0) -> dict[str, Any] | None:
    """One admin metadata call; the cluster description when a broker answers, else None."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=max(int(timeout_s * 1000), 500),
        client_id="vidpipe-admin-probe",
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            cluster: dict[str, Any] = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        await admin.close()
    # A broker that answers metadata but lists no brokers is still starting up.
    return cluster if cluster.get("brokers") else None


def _drop_refused_connects(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Unable connect to")


async def wait_for_broker(
    bootstrap_servers: str,
    timeout_s: float = 60.0,
    *,
    give_up: Callable[[], str | None] | None = None,
    interval_s: float = 0.25,
) -> dict[str, Any]:
    """Poll the broker with admin calls until it answers, or raise after `timeout_s`.

    `give_up` is polled between attempts: a non-None string (e.g. "the process exited")
    aborts the wait at once instead of burning the whole deadline.
    """
    deadline = time.monotonic() + timeout_s
    attempts = 0
    # Refused connections are expected while the broker boots; aiokafka logs each one at
    # ERROR, which would bury real errors, so drop just those records while we wait.
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.addFilter(_drop_refused_connects)
    try:
        while True:
            if give_up is not None and (reason := give_up()) is not None:
                raise BrokerNotReadyError(
                    f"Kafka at {bootstrap_servers} will not come up: {reason}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerNotReadyError(
                    f"Kafka at {bootstrap_servers} did not answer an admin call within "
                    f"{timeout_s:.0f} s ({attempts} attempts)"
                )
            attempts += 1
            cluster = await probe_broker(bootstrap_servers, timeout_s=min(3.0, max(remaining, 0.5)))
            if cluster is not None:
                return cluster
            await asyncio.sleep(min(interval_s, max(deadline - time.monotonic(), 0)))
    finally:
        aiokafka_log.removeFilter(_drop_refused_connects)


async def ensure_topics(
    bootstrap_servers: str,
    topics: list[str],
    partitions: int,
    replication_factor: int = 1,
    *,
    compacted: Collection[str] = frozenset(),
    timeout_s: float = 30.0,
) -> dict[str, str]:
    """Create the missing topics; report what was found for each one.

    Values: "created", "exists", or "exists with N partitions (wanted M)" (never altered:
    changing partition counts re-keys partitioned data, so that is left to a human).
    Topics in `compacted` get cleanup.policy=compact. Safe to run concurrently.
    """
    if partitions < 1 or replication_factor < 1:
        raise ValueError("partitions and replication_factor must be >= 1")
    report: dict[str, str] = {}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="vidpipe-admin-topics"
    )
    try:
        await admin.start()
        existing = await _partition_counts(admin, topics)
        missing = [t for t in topics if t not in existing]
        for topic, count in existing.items():
            report[topic] = (
                "exists"
                if count == partitions
                else f"exists with {count} partitions (wanted {partitions})"
            )
        if missing:
            new_topics = [
                NewTopic(
                    name=t,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs={"cleanup.policy": "compact"} if t in compacted else {},
                )
                for t in missing
            ]
            response = await admin.create_topics(new_topics, timeout_ms=int(timeout_s * 1000))
            raced: list[str] = []
            for item in response.to_object()["topic_errors"]:
                topic, code = str(item["topic"]), int(item["error_code"])
                if code == 0:
                    report[topic] = "created"
                elif code == _TOPIC_ALREADY_EXISTS:
                    raced.append(topic)  # created by someone else since our metadata call
                else:
                    message = item.get("error_message") or ""
                    raise for_code(code)(f"creating topic {topic!r} failed: {message}")
            if raced:
                counts = await _partition_counts(admin, raced)
                for topic in raced:
                    count = counts.get(topic, partitions)
                    report[topic] = (
                        "exists"
                        if count == partitions
                        else f"exists with {count} partitions (wanted {partitions})"
                    )
            # Wait until every new partition has a leader, so a producer that starts right
            # after this call does not meet UNKNOWN_TOPIC_OR_PARTITION / LEADER_NOT_AVAILABLE.
            await _wait_for_leaders(admin, missing, timeout_s)
    finally:
        await admin.close()
    return {t: report[t] for t in topics}


async def _partition_counts(admin: Any, topics: list[str]) -> dict[str, int]:
    """Partition count of each topic that the broker knows (unknown topics are left out)."""
    if not topics:
        return {}
    described: list[dict[str, Any]] = await admin.describe_topics(topics)
    return {
        str(d["topic"]): len(d["partitions"])
        for d in described
        if d["error_code"] == 0 and d["partitions"]
    }


async def _wait_for_leaders(admin: Any, topics: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(topics)
        pending = [
            d["topic"]
            for d in described
            if d["error_code"] != 0
            or not d["partitions"]
            or any(p["leader"] < 0 for p in d["partitions"])
        ]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise BrokerNotReadyError(
                f"topics without partition leaders after {timeout_s} s: {pending}"
            )
        await asyncio.sleep(0.1)


async def ensure_all_topics(settings: Settings, bootstrap_servers: str) -> dict[str, str]:
    """Create every missing topic; report "created", "exists" or a partition mismatch for each."""
    by_count: dict[int, list[str]] = defaultdict(list)
    for topic in settings.topics.all():
        by_count[settings.partitions_for(topic)].append(topic)
    report: dict[str, str] = {}
    for partitions, topics in sorted(by_count.items()):
        report.update(
            await ensure_topics(
                bootstrap_servers, topics, partitions, settings.topic_replication_factor
            )
        )
    return report

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

from vidpipe.bus.security import (
    KafkaSecurity,
    client_kwargs,
    describe_auth_failure,
    diagnose_refusal,
)
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


async def probe_broker(
    bootstrap_servers: str,
    timeout_s: float = 3.0,
    *,
    security: KafkaSecurity | None = None,
    raise_refusal: bool = False,
) -> dict[str, Any] | None:
    """One admin metadata call; the cluster description when a broker answers, else None.

    With `raise_refusal`, a broker that refuses the credentials or the TLS handshake raises
    BrokerNotReadyError with a one-line reason (no secret in it) instead of answering None.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=max(int(timeout_s * 1000), 500),
        client_id="vidpipe-admin-probe",
        **client_kwargs(security),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            cluster: dict[str, Any] = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError) as exc:
        if raise_refusal:
            reason = describe_auth_failure(exc, bootstrap_servers) or await diagnose_refusal(
                bootstrap_servers, security, timeout_s
            )
            if reason is not None:
                raise BrokerNotReadyError(reason) from None
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
    security: KafkaSecurity | None = None,
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
            # Refused credentials do not get better by waiting: fail at once, in one line.
            cluster = await probe_broker(
                bootstrap_servers,
                timeout_s=min(3.0, max(remaining, 0.5)),
                security=security,
                raise_refusal=True,
            )
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
    min_insync_replicas: int | None = None,
    security: KafkaSecurity | None = None,
) -> dict[str, str]:
    """Create the missing topics; report what was found for each one.

    Values: "created", "exists", or "exists with N partitions (wanted M)" (never altered:
    changing partition counts re-keys partitioned data, so that is left to a human).
    Topics in `compacted` get cleanup.policy=compact; `min_insync_replicas` sets
    min.insync.replicas on the new topics. Safe to run concurrently.
    """
    if partitions < 1 or replication_factor < 1:
        raise ValueError("partitions and replication_factor must be >= 1")
    if min_insync_replicas is not None and not 1 <= min_insync_replicas <= replication_factor:
        raise ValueError("min_insync_replicas must be between 1 and replication_factor")
    extra_configs = {"min.insync.replicas": str(min_insync_replicas)} if min_insync_replicas else {}
    report: dict[str, str] = {}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="vidpipe-admin-topics",
        **client_kwargs(security),
    )
    try:
        try:
            await admin.start()
        except (KafkaError, OSError):
            # Refused credentials are a one-line error, not a traceback about bootstrapping.
            reason = await diagnose_refusal(bootstrap_servers, security)
            if reason is not None:
                raise BrokerNotReadyError(reason) from None
            raise
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
                    topic_configs=extra_configs
                    | ({"cleanup.policy": "compact"} if t in compacted else {}),
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
    # One create call per (partitions, replication factor, min.insync.replicas) shape.
    by_shape: dict[tuple[int, int, int], list[str]] = defaultdict(list)
    for topic in settings.topics.all():
        shape = (
            settings.partitions_for(topic),
            settings.replication_for(topic),
            settings.min_insync_for(topic) or 0,
        )
        by_shape[shape].append(topic)
    security = KafkaSecurity.from_settings(settings)
    report: dict[str, str] = {}
    for (partitions, replication, min_insync), topics in sorted(by_shape.items()):
        report.update(
            await ensure_topics(
                bootstrap_servers,
                topics,
                partitions,
                replication,
                min_insync_replicas=min_insync or None,
                security=security,
            )
        )
    return report

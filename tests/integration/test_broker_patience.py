"""A stage that starts while its broker is down waits for it, then works; it does not exit.

Found by the fault suite: a stage restarted during a broker restart died at start-up
(`KafkaConnectionError`, or `UnknownTopicOrPartitionError` while the broker reloaded its
metadata), so an orchestrator would have crash-looped it until the broker was back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from structlog.testing import capture_logs

from schemas.topics import Topics
from vidpipe.bus.admin import ensure_topics
from vidpipe.bus.broker import make_broker
from vidpipe.dev.kafka import LocalKafka


async def test_a_broker_start_waits_for_a_broker_that_is_down_then_consumes(
    tmp_path: Path, unique_prefix: str
) -> None:
    kafka = LocalKafka(data_dir=tmp_path / "kafka", keep=True)
    await asyncio.to_thread(kafka.start)
    address = kafka.bootstrap_servers
    await asyncio.to_thread(kafka.stop)
    topic = f"{unique_prefix}patience"
    broker, _ = make_broker(address, stage="patience", topics=Topics(unique_prefix))
    seen: list[bytes] = []

    @broker.subscriber(topic, group_id=f"{unique_prefix}patience", auto_offset_reset="earliest")
    async def handle(body: bytes) -> None:
        seen.append(body)

    try:
        with capture_logs() as logs:
            starting = asyncio.create_task(broker.start())
            deadline = time.monotonic() + 30
            while not any(entry["event"] == "broker_unreachable" for entry in logs):
                assert not starting.done(), starting  # it must wait, neither fail nor succeed
                assert time.monotonic() < deadline, "the start never reported the broker missing"
                await asyncio.sleep(0.1)
            assert not starting.done()
            await asyncio.to_thread(kafka.start)
            assert kafka.bootstrap_servers == address
            await ensure_topics(address, [topic], partitions=1)
            await asyncio.wait_for(starting, timeout=60)
        await broker.publish(b"after the wait", topic=topic)
        deadline = time.monotonic() + 30
        while not seen:
            assert time.monotonic() < deadline, "nothing consumed after the broker came back"
            await asyncio.sleep(0.1)
        assert seen == [b"after the wait"]
    finally:
        await broker.stop()
        await asyncio.to_thread(kafka.stop)

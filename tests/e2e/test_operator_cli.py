"""The operator's commands against the real broker: `topics ensure` and `run --replicas`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from aiokafka.admin import AIOKafkaAdminClient

from tests.e2e.conftest import MakePipeline


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vidpipe",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


async def test_topics_ensure_creates_each_topic_with_its_partitions(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    env = {
        "VIDPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "VIDPIPE_TOPIC_PREFIX": unique_prefix,
        "VIDPIPE_TOPIC_PARTITIONS": "2",
        "VIDPIPE_TOPIC_PARTITIONS_OVERRIDES": '{"poller.due": 5}',
    }
    code, output = await _cli(env, "topics", "ensure")
    assert code == 0, output
    assert "created" in output
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(
            [f"{unique_prefix}poller.due", f"{unique_prefix}job.submitted"]
        )
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in described}
    assert partitions == {f"{unique_prefix}poller.due": 5, f"{unique_prefix}job.submitted": 2}
    code, output = await _cli(env, "topics", "ensure")
    assert code == 0 and "0 created" in output, output


async def test_run_replicas_joins_the_group_n_times_and_stops_cleanly(
    make_pipeline: MakePipeline,
) -> None:
    pipeline = await make_pipeline()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vidpipe",
        "run",
        "fetcher",
        "--replicas",
        "3",
        env={**os.environ, **pipeline.env, "VIDPIPE_STATE_DIR": str(pipeline.stack.state_dir)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await pipeline.wait_for_group("fetcher", members=3)
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode(errors="replace")
    assert b"3 replicas of fetcher" in err

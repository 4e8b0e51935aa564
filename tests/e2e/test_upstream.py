"""Upstream producers: plain JSON from any Kafka client is processed, and a request id already
accepted never starts a second generation, whoever resends it."""

from __future__ import annotations

import asyncio
import json
import shutil

from tests.e2e.conftest import MakePipeline
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.dev.jars import kafka_libs_dir


async def _java_console_produce(bootstrap_servers: str, topic: str, lines: list[str]) -> None:
    """Publish `key|value` lines with Kafka's own Java console producer (a non-Python client)."""
    java = shutil.which("java")
    assert java, "java is needed for the local broker anyway"
    process = await asyncio.create_subprocess_exec(
        java,
        "-cp",
        f"{kafka_libs_dir()}/*",
        "kafka.tools.ConsoleProducer",
        "--bootstrap-server",
        bootstrap_servers,
        "--topic",
        topic,
        "--property",
        "parse.key=true",
        "--property",
        "key.separator=|",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate("\n".join(lines).encode() + b"\n")
    assert process.returncode == 0, output.decode(errors="replace")


async def test_plain_json_from_a_java_producer_is_processed_once_however_often_it_is_sent(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline()
    for name in ("submitter", "poller", "fetcher", "recorder"):
        pipeline.start(name)
    rid = f"{pipeline.settings.topic_prefix}java-order-1"
    bare = json.dumps({"request_id": rid, "prompt": "a harbour at dawn", "seconds": 5})
    before = dict(emulator.state.stats)
    topic = pipeline.settings.topics.generation_requested
    # Sent twice by the Java client, once more while in flight by Python, and once after.
    await _java_console_produce(
        pipeline.bootstrap_servers, topic, [f"{rid}|{bare}", f"{rid}|{bare}"]
    )
    await pipeline.publish_raw(bare.encode(), key=rid)
    views = await pipeline.wait_for([rid], until=lambda v: v.status == "stored")
    await _java_console_produce(pipeline.bootstrap_servers, topic, [f"{rid}|{bare}"])
    # The late resend reaches the submitter, which re-announces the job it already has.
    await pipeline.wait_for_log("submitter", "duplicate_request", rid, times=3)
    after = dict(emulator.state.stats)
    assert after.get("azure.jobs_created", 0) - before.get("azure.jobs_created", 0) == 1
    assert await pipeline.count_events(rid, "JobSubmitted") == 1
    assert await pipeline.count_events(rid, "VideoStored") == 1
    assert views[rid].output_image_url

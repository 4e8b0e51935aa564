"""Upstream producers: plain JSON from any Kafka client is processed, compressed with any of
Kafka's codecs, and a request id already accepted never starts a second generation, whoever
resends it."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from tests.e2e.conftest import MakePipeline
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.dev.jars import kafka_libs_dir

# Kafka's compression codecs, by the id a record batch's attributes carry.
CODECS = ("gzip", "snappy", "lz4", "zstd")
_CODEC_IDS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


async def _java_console_produce(
    bootstrap_servers: str, topic: str, lines: list[str], compression: str = "none"
) -> None:
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
        "--compression-codec",
        compression,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate("\n".join(lines).encode() + b"\n")
    assert process.returncode == 0, output.decode(errors="replace")


async def _kcat_produce(bootstrap_servers: str, topic: str, lines: list[str], codec: str) -> None:
    """Publish `key|value` lines with kcat (librdkafka, the C client most gateways build on)."""
    kcat = shutil.which("kcat")
    assert kcat, "kcat is missing: run scripts/ensure-system-deps.sh"
    process = await asyncio.create_subprocess_exec(
        kcat,
        "-P",
        "-b",
        bootstrap_servers,
        "-t",
        topic,
        "-K",
        "|",
        "-z",
        codec,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate("\n".join(lines).encode() + b"\n")
    assert process.returncode == 0, output.decode(errors="replace")


async def _codecs_on_the_log(bootstrap_servers: str, topic: str) -> Counter[str]:
    """How many record batches of each codec the broker holds on `topic`.

    Read with a raw Fetch, since the consumer API hides compression, and from the batch headers
    alone, so this works without the codec libraries: a producer that silently sent plain
    batches fails the test instead of proving nothing.
    """
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers)
    await client.bootstrap()
    found: Counter[str] = Counter()
    try:
        cluster = await client.fetch_all_metadata()
        for partition in sorted(cluster.partitions_for_topic(topic) or ()):
            leader = cluster.leader_for_partition(TopicPartition(topic, partition))
            request = FetchRequest(0, 0, 1 << 20, 0, [(topic, [(partition, 0, 1 << 20)])])
            response = await client.send(leader, request)
            for _name, partitions in response.topics:
                for data in partitions:
                    assert data[1] == 0, f"fetch error {data[1]} on {topic}/{partition}"
                    records = MemoryRecords(data[-1])
                    while (batch := records.next_batch()) is not None:
                        found[_CODEC_IDS[batch.compression_type]] += 1
    finally:
        await client.close()
    return found


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


async def test_requests_compressed_with_every_codec_by_java_and_librdkafka_are_stored(
    make_pipeline: MakePipeline,
) -> None:
    pipeline = await make_pipeline()
    for name in ("submitter", "poller", "fetcher", "recorder"):
        pipeline.start(name)
    # The broker does not auto-create topics: wait for the stage that creates them, or each
    # producer blocks on metadata (up to the Java client's 60 s max.block.ms).
    await pipeline.wait_for_group("submitter", 1)
    topic = pipeline.settings.topics.generation_requested
    prefix = pipeline.settings.topic_prefix
    sent: dict[str, str] = {}
    producers = []
    for client, produce in (("java", _java_console_produce), ("kcat", _kcat_produce)):
        for codec in CODECS:
            rid = f"{prefix}{client}-{codec}"
            sent[rid] = codec
            body = json.dumps({"request_id": rid, "prompt": f"{codec} from {client}", "seconds": 5})
            producers.append(produce(pipeline.bootstrap_servers, topic, [f"{rid}|{body}"], codec))
    await asyncio.gather(*producers)
    # What the broker holds is really compressed: one batch per producer, in its codec.
    assert await _codecs_on_the_log(pipeline.bootstrap_servers, topic) == Counter(sent.values())
    views = await pipeline.wait_for(list(sent), until=lambda v: v.status == "stored", timeout_s=60)
    assert all(view.output_image_url for view in views.values())

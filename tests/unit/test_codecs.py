"""Every Kafka codec is installed: aiokafka decodes what Java and librdkafka producers compress.

Without the codec library (cramjam) a consumer fails on the first compressed batch with
`UnsupportedCodecError`, and every stage of the topic stops; these tests fail instead.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka import codec
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

Codec = tuple[Callable[[], bool], Callable[[bytes], bytes], Callable[[bytes], bytes]]

CODECS: dict[str, Codec] = {
    "gzip": (codec.has_gzip, codec.gzip_encode, codec.gzip_decode),
    "snappy": (codec.has_snappy, codec.snappy_encode, codec.snappy_decode),
    "lz4": (codec.has_lz4, codec.lz4_encode, codec.lz4_decode),
    "zstd": (codec.has_zstd, codec.zstd_encode, codec.zstd_decode),
}
# A GenerationRequested as an upstream producer sends it, repeated so it really compresses.
PAYLOAD = b'{"request_id": "order-1", "prompt": "a harbour at dawn", "seconds": 5}' * 200


@pytest.mark.parametrize("name", sorted(CODECS))
def test_each_codec_round_trips_through_aiokafka(name: str) -> None:
    available, encode, decode = CODECS[name]
    assert available(), f"aiokafka has no {name} codec: install aiokafka[lz4,snappy,zstd]"
    compressed = encode(PAYLOAD)
    assert len(compressed) < len(PAYLOAD)
    assert decode(compressed) == PAYLOAD


def test_snappy_reads_both_the_java_framing_and_raw_blocks() -> None:
    # The Java client writes xerial-framed snappy; librdkafka and others write raw blocks.
    assert codec.snappy_decode(codec.snappy_encode(PAYLOAD, xerial_compatible=True)) == PAYLOAD
    assert codec.snappy_decode(codec.snappy_encode(PAYLOAD, xerial_compatible=False)) == PAYLOAD


@pytest.mark.parametrize(
    "name, codec_id",
    [
        ("gzip", DefaultRecordBatch.CODEC_GZIP),
        ("snappy", DefaultRecordBatch.CODEC_SNAPPY),
        ("lz4", DefaultRecordBatch.CODEC_LZ4),
        ("zstd", DefaultRecordBatch.CODEC_ZSTD),
    ],
)
def test_a_compressed_record_batch_decodes_as_a_consumer_reads_it(name: str, codec_id: int) -> None:
    # The path a consumer's fetch takes: a v2 record batch, compressed, parsed back.
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec_id,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    builder.append(0, timestamp=None, key=b"order-1", value=PAYLOAD, headers=[])
    batch = MemoryRecords(bytes(builder.build())).next_batch()
    assert batch is not None and batch.compression_type == codec_id, name
    [record] = list(batch)
    assert (record.key, record.value) == (b"order-1", PAYLOAD)

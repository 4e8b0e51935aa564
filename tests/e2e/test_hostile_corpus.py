"""The hostile corpus against every stage it touches, each its own process (issue 8, item 9).

Valid requests go in before, among and after 140 hostile records (tests/e2e/hostile_corpus.py)
published from kcat (librdkafka, C) and from aiokafka. Afterwards every valid request is stored,
no stage process restarted or died, every hostile record is in the dead-letter topic once per
stage that reads its topic (with a reason) or failed in the records with a reason, and nothing
else is in the dead-letter topic.

kcat gets one process per record with the value in a file (`kcat -P ... FILE`: "each file is
produced as a single message"): the values hold newlines, NULs and every other byte, so no
`-D` delimiter or `-l` line mode could frame them all; `-k` sets the key (none: a null key) and
`-H name=value` a header. kcat skips empty input, so empty values and tombstones are `key|` lines
on stdin with `-K "|"` (and `-Z` for a tombstone).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.events import DeadLetter, GenerationRequested
from tests.e2e.harness import Pipeline, make_request
from tests.e2e.hostile_corpus import Entry, build_corpus

STAGES = ("submitter", "poller", "fetcher", "recorder")
#: A valid request after every this many hostile records.
CHUNK = 12

LetterKey = tuple[str, str, str | None, str]  # stage, original topic, original key, sha256


def _letter_key(stage: str, entry: Entry, prefix: str) -> LetterKey:
    """What a dead letter of `entry` from `stage` says of its original (as build_dead_letter
    writes it: the key escaped and cut to 4096 characters, the value's SHA-256)."""
    topic, key, value = entry.lettered(prefix)
    return (
        stage,
        topic,
        key.decode("utf-8", "backslashreplace")[:4096] if key is not None else None,
        hashlib.sha256(value or b"").hexdigest(),
    )


async def _kcat_publish(bootstrap: str, topic: str, entry: Entry, workdir: Path) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is missing: run scripts/ensure-system-deps.sh"
    argv = [kcat, "-P", "-b", bootstrap, "-t", topic]
    stdin: bytes | None = None
    if entry.value:
        if entry.key is not None:
            argv += ["-k", entry.key.decode()]
    else:
        # kcat skips empty files and empty lines: an empty value is a `key|` line on stdin
        # with -K "|", and a tombstone the same line with -Z ("send empty messages as NULL
        # messages"), as kcat's README produces one.
        assert entry.key is not None, "kcat cannot send an empty value with a null key"
        assert b"|" not in entry.key
        stdin = entry.key + b"|\n"
        argv += ["-K", "|"] + (["-Z"] if entry.value is None else [])
    for name, header in entry.headers:
        assert header is not None, "kcat -H cannot send a null header value"
        argv += ["-H", f"{name}={header.decode()}"]
    if entry.value:
        value_file = workdir / f"{entry.name}.bin"
        value_file.write_bytes(entry.value)
        argv.append(str(value_file))
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(stdin)
    assert process.returncode == 0, (
        f"kcat failed on {entry.name}: {output.decode(errors='replace')}"
    )


async def _read_letters(
    bootstrap: str, topic: str, want: int, timeout_s: float
) -> list[DeadLetter]:
    """Every letter on `topic`: at least `want` (bounded wait), then on to the end offsets."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    seen: dict[TopicPartition, int] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while len(letters) < want and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                letters += [DeadLetter.model_validate_json(r.value) for r in records]
                seen[tp] = records[-1].offset + 1
        # Anything published past `want` (a valid message dead-lettered) is read too.
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while any(seen.get(tp, 0) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline + 30, "the dead-letter topic never read to its end"
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                letters += [DeadLetter.model_validate_json(r.value) for r in records]
                seen[tp] = records[-1].offset + 1
    finally:
        await consumer.stop()
    return letters


def _same_keys(letters: list[DeadLetter], keys: Counter[LetterKey]) -> list[str]:
    """What the dead-letter topic holds under the keys of `keys`: a missing letter's neighbours."""
    wanted = {key[2] for key in keys}
    return [
        f"{x.stage} {x.original_topic}/{x.original_partition}@{x.original_offset} "
        f"size={x.original_size} {x.error_type}: {x.reason[:120]}"
        for x in letters
        if x.original_key in wanted
    ]


async def test_the_hostile_corpus_ends_dead_lettered_or_failed_and_the_stream_goes_on(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    started = time.monotonic()
    processes = {name: pipeline.start(name) for name in STAGES}
    pids = {name: process.pid for name, process in processes.items()}
    prefix = pipeline.settings.topic_prefix
    bootstrap = pipeline.bootstrap_servers
    corpus = build_corpus(prefix)
    assert len(corpus) >= 80
    assert len({e.name for e in corpus}) == len(corpus)
    assert {e.client for e in corpus} == {"kcat", "python"}

    def valid(name: str) -> GenerationRequested:
        return make_request(prefix, name, provider="azure-sora")

    before = [valid(f"before{i}") for i in range(3)]
    among: list[GenerationRequested] = []
    after = [valid(f"after{i}") for i in range(3)]
    await pipeline.publish(*before)

    kcat_dir = tmp_path / "kcat"
    kcat_dir.mkdir()
    # max_request_size above the broker's 1 MiB: the broker, not the client, judges the big ones.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    try:
        for start in range(0, len(corpus), CHUNK):
            chunk = corpus[start : start + CHUNK]
            for entry in chunk:
                if entry.client == "python":
                    await producer.send_and_wait(
                        entry.topic(prefix),
                        value=entry.value,
                        key=entry.key,
                        headers=list(entry.headers),
                    )
            await asyncio.gather(
                *(
                    _kcat_publish(bootstrap, entry.topic(prefix), entry, kcat_dir)
                    for entry in chunk
                    if entry.client == "kcat"
                )
            )
            request = valid(f"among{start // CHUNK}")
            among.append(request)
            await pipeline.publish(request)
    finally:
        await producer.stop()
    await pipeline.publish(*after)
    published_s = time.monotonic() - started

    # Every valid request is stored, and so are the corpus' requests that are valid.
    stored_ids = [r.request_id for r in before + among + after]
    stored_ids += [f"{prefix}h-{e.name}" for e in corpus if e.end == "stored"]
    views = await pipeline.wait_for(stored_ids, timeout_s=120)
    assert {rid: v.status for rid, v in views.items()} == dict.fromkeys(stored_ids, "stored")

    # Where a request is known, the records say it failed, and why; no provider job was made.
    failed_ids = sorted({e.failed_request_id for e in corpus if e.failed_request_id})
    failed = await pipeline.wait_for(failed_ids, timeout_s=60)
    for rid in failed_ids:
        assert failed[rid].status == "failed", (rid, failed[rid])
        assert failed[rid].error_message, f"{rid} failed without a reason"
        assert await pipeline.count_events(rid, "JobFailed") >= 1, rid
        assert await pipeline.count_events(rid, "JobSubmitted") == 0, rid

    # Each dead-lettered record is there once per stage that reads its topic, with a reason;
    # nothing else is (no valid message, no extra copy).
    expected: Counter[LetterKey] = Counter(
        _letter_key(stage, entry, prefix) for entry in corpus for stage in entry.stages
    )
    letters = await _read_letters(
        bootstrap, pipeline.settings.topics.deadletter, sum(expected.values()), timeout_s=90
    )
    found: Counter[LetterKey] = Counter()
    for letter in letters:
        assert letter.reason.strip(), letter
        assert letter.original_sha256, letter
        found[
            (letter.stage, letter.original_topic, letter.original_key, letter.original_sha256)
        ] += 1
    names = {_letter_key(s, e, prefix): e.name for e in corpus for s in e.stages}
    missing = {f"{names.get(k, k)}@{k[0]}": n for k, n in (expected - found).items()}
    extra = {f"{names.get(k, k)}@{k[0]}": n for k, n in (found - expected).items()}
    assert not missing and not extra, (
        f"missing letters: {missing}\nunexpected letters: {extra}\n"
        f"letters with those keys: {_same_keys(letters, expected - found)}\n{pipeline._logs()}"
    )

    # No stage restarted or died: the same processes, still running.
    for name, process in processes.items():
        assert process.running, f"{name} is not running:\n{process.log_tail()}"
        assert process.pid == pids[name], f"{name} restarted"
        assert pipeline.stack.processes[name] is process
        # Nothing escaped the failure model: an exception that does is logged with its
        # traceback, and comes again at once (the lone-surrogate id did, 40,000 times).
        log_text = process.log_path.read_text(errors="replace")
        assert "Traceback" not in log_text, f"{name} logged a traceback:\n{process.log_tail(60)}"

    elapsed_s = time.monotonic() - started
    by_class: dict[str, Counter[str]] = {}
    for entry in corpus:
        where = (
            "deadletter:" + "+".join(sorted(entry.stages))
            if entry.end == "deadletter"
            else entry.end
        )
        if entry.failed_request_id and entry.end == "deadletter":
            where += " & JobFailed"
        by_class.setdefault(entry.cls, Counter())[where] += 1
    print(
        f"\nhostile corpus: {len(corpus)} records "
        f"({sum(e.client == 'kcat' for e in corpus)} by kcat), "
        f"{len(stored_ids)} stored, {len(failed_ids)} failed, {len(letters)} dead letters; "
        f"published in {published_s:.1f} s, all settled in {elapsed_s:.1f} s"
    )
    print(f"{'class':<20} {'count':>5}  where it ended")
    for cls in sorted(by_class):
        for where, count in sorted(by_class[cls].items()):
            print(f"{cls:<20} {count:>5}  {where}")

"""Ids and texts the pipeline cannot carry never get in: refused at the schema, the stream goes on.

Before the schema's rules, request ids "." and ".." were accepted, submitted and generated, and
then wedged the fetcher (their storage key was refused on every delivery, stopping the
partitions behind them); a NUL in a prompt reached PostgreSQL, which refused it.
"""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.harness import Pipeline, make_request

HOSTILE: list[dict[str, Any]] = [
    {"request_id": ".", "prompt": "dot"},
    {"request_id": "..", "prompt": "dot dot"},
    {"request_id": "x" * 129, "prompt": "too long an id"},
    {"request_id": "nul-prompt", "prompt": "a\u0000b"},
    {"request_id": "nul-metadata", "prompt": "p", "metadata": {"lang": "fr\u0000"}},
]


async def test_hostile_ids_are_dead_lettered_and_every_ordinary_request_is_stored(
    pipeline: Pipeline,
) -> None:
    for name in ("submitter", "poller", "fetcher", "recorder"):
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    before = [make_request(prefix, f"before{i}", provider="azure-sora") for i in range(3)]
    after = [make_request(prefix, f"after{i}", provider="azure-sora") for i in range(3)]
    await pipeline.publish(*before)
    for message in HOSTILE:
        rid = str(message["request_id"])
        await pipeline.publish_raw(json.dumps(message).encode(), key=rid)
    await pipeline.publish(*after)

    ids = [r.request_id for r in before + after]
    views = await pipeline.wait_for(ids, timeout_s=120)
    assert {v.status for v in views.values()} == {"stored"}

    # The submitter and the recorder both read the requests topic: each dead-letters each one.
    letters = await pipeline.read_topic(pipeline.settings.topics.deadletter, want=2 * len(HOSTILE))
    by_stage: dict[str, set[str]] = {}
    for letter in letters:
        original = json.loads(letter["original_value"])
        by_stage.setdefault(letter["stage"], set()).add(original["request_id"])
    expected = {str(m["request_id"]) for m in HOSTILE}
    assert by_stage == {"submitter": expected, "recorder": expected}
    # No provider job for any; where the id is one, the records say why it failed.
    for rid in expected:
        assert await pipeline.count_events(rid, "JobSubmitted") == 0
    rows = await pipeline.records.many(sorted(expected))
    assert set(rows) <= {"nul-prompt", "nul-metadata"}
    assert {v.status for v in rows.values()} <= {"failed"}

"""Creating and checking vidpipe's topics, each with its configured partition count."""

from __future__ import annotations

from collections import defaultdict

from vidpipe.devstack.topics import ensure_topics
from vidpipe.settings import Settings

__all__ = ["ensure_all_topics"]


async def ensure_all_topics(settings: Settings, bootstrap: str) -> dict[str, str]:
    """Create every missing topic; report "created", "exists" or a partition mismatch for each."""
    by_count: dict[int, list[str]] = defaultdict(list)
    for topic in settings.topics.all():
        by_count[settings.partitions_for(topic)].append(topic)
    report: dict[str, str] = {}
    for partitions, topics in sorted(by_count.items()):
        report.update(
            await ensure_topics(bootstrap, topics, partitions, settings.topic_replication_factor)
        )
    return report

"""Consumer lag of a stage's own groups: committed offsets beside each partition's end.

Read by the stage's metrics sampler on an interval (`vidpipe_consumer_lag`); the timer relay's
group lag is what `vidpipe_timers_pending` reports. One admin client and one group-less reader
are kept open between samples, started at the first, so sampling opens no connection each time.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from vidpipe.bus.security import KafkaSecurity

__all__ = ["GroupLag", "lag_of"]

Lag = dict[tuple[str, str, int], int]


def lag_of(committed: dict[str, dict[TopicPartition, int]], ends: dict[TopicPartition, int]) -> Lag:
    """(group, topic, partition) -> messages after the group's committed offset (never < 0)."""
    return {
        (group, tp.topic, tp.partition): max(0, ends[tp] - offset)
        for group, offsets in committed.items()
        for tp, offset in offsets.items()
        if tp in ends
    }


class GroupLag:
    """The lag of `groups` (only the partitions each has committed: a group that never
    committed a partition reports nothing for it yet)."""

    def __init__(
        self,
        bootstrap_servers: str,
        groups: Sequence[str],
        *,
        client_id: str,
        security: KafkaSecurity,
    ) -> None:
        self.groups = list(groups)
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._security = security
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None

    async def read(self) -> Lag:
        admin, reader = await self._clients()
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in self.groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {tp: int(m.offset) for tp, m in offsets.items() if m.offset >= 0}
        partitions = sorted({tp for offsets in committed.values() for tp in offsets})
        ends = await reader.end_offsets(partitions) if partitions else {}
        return lag_of(committed, {tp: int(o) for tp, o in ends.items()})

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._reader is None:
            kwargs = self._security.client_kwargs()
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._bootstrap, client_id=self._client_id, **kwargs
            )
            reader = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                client_id=self._client_id,
                **kwargs,
            )
            try:
                await admin.start()
                await reader.start()
            except BaseException:
                await _close(admin, reader)
                raise
            self._admin, self._reader = admin, reader
        return self._admin, self._reader

    async def aclose(self) -> None:
        admin, reader = self._admin, self._reader
        self._admin = self._reader = None
        if admin is not None and reader is not None:
            await _close(admin, reader)


async def _close(admin: AIOKafkaAdminClient, reader: AIOKafkaConsumer) -> None:
    try:
        await reader.stop()
    finally:
        await admin.close()

"""One bulk call for many single-key calls made side by side (group commit).

Why: a consumer batch's handlers run concurrently, and each asks the database one small thing
(is this request cancelled? close this job's claim). One at a time, that is a round trip and, for
a write, a commit each; on SQLite's single connection they also queue behind each other. A
`Coalescer` hands every key that arrives while no bulk call runs, and every key that arrives
during one, to the next bulk call: alone, a call waits one event-loop step; under load, the
batch grows by itself and the commits per key fall.

Each caller gets its own key's answer or the bulk call's exception; a cancelled caller leaves
the others untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class Coalescer(Generic[K, R]):
    def __init__(
        self,
        bulk: Callable[[Sequence[K]], Awaitable[Mapping[K, R]]],
        *,
        max_keys: int = 500,
    ) -> None:
        #: Given distinct keys; returns an answer for every one of them.
        self._bulk = bulk
        #: Bounds one statement's IN list (SQLite allows 32,766 parameters; PostgreSQL 65,535).
        self._max_keys = max_keys
        self._waiting: list[tuple[K, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, key: K) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, future))
        if self._runner is None:
            # Started, not run: the handlers already scheduled in this loop step join its batch.
            self._runner = asyncio.create_task(self._drain(), name="coalescer")
        return await future

    async def _drain(self) -> None:
        group: list[tuple[K, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                group = self._take_group()
                try:
                    answers = await self._bulk(list(dict.fromkeys(key for key, _ in group)))
                except Exception as exc:  # every caller of the group gets it
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for key, future in group:
                    if future.done():
                        continue  # its caller was cancelled
                    if key in answers:
                        future.set_result(answers[key])
                    else:
                        future.set_exception(LookupError(f"no answer for {key!r}"))
        except asyncio.CancelledError:
            # Shutting down: nobody is left to answer the callers still waiting.
            for _, future in [*group, *self._waiting]:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._runner = None

    def _take_group(self) -> list[tuple[K, asyncio.Future[R]]]:
        group: list[tuple[K, asyncio.Future[R]]] = []
        keys: set[K] = set()
        rest: list[tuple[K, asyncio.Future[R]]] = []
        for key, future in self._waiting:
            if future.done():
                continue  # cancelled while waiting: not asked for
            if key in keys or len(keys) < self._max_keys:
                keys.add(key)
                group.append((key, future))
            else:
                rest.append((key, future))
        self._waiting = rest
        return group

"""The coalescer: side-by-side calls become one bulk call, each caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from vidpipe.db.coalesce import Coalescer


class Doubling:
    """A bulk call that answers 2 * key and records every group it was given."""

    def __init__(self, *, hold: asyncio.Event | None = None, fail: set[int] | None = None) -> None:
        self.groups: list[list[int]] = []
        self.hold = hold
        self.fail = fail or set()
        self.entered = asyncio.Event()

    async def __call__(self, keys: Sequence[int]) -> Mapping[int, int]:
        self.groups.append(list(keys))
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail & set(keys):
            raise RuntimeError("the database went away")
        return {key: 2 * key for key in keys}


async def test_calls_made_side_by_side_are_one_bulk_call() -> None:
    bulk = Doubling()
    double = Coalescer(bulk)
    answers = await asyncio.gather(*(double(k) for k in range(10)))
    assert answers == [2 * k for k in range(10)]
    assert bulk.groups == [list(range(10))]


async def test_calls_made_during_a_bulk_call_wait_for_the_next_one_together() -> None:
    hold = asyncio.Event()
    bulk = Doubling(hold=hold)
    double = Coalescer(bulk)
    first = asyncio.create_task(double(1))
    await asyncio.wait_for(bulk.entered.wait(), 5)
    later = [asyncio.create_task(double(k)) for k in (2, 3, 4)]
    await asyncio.sleep(0)
    hold.set()
    assert await first == 2
    assert [await task for task in later] == [4, 6, 8]
    assert bulk.groups == [[1], [2, 3, 4]]


async def test_a_group_never_holds_more_than_max_keys() -> None:
    bulk = Doubling()
    double = Coalescer(bulk, max_keys=4)
    assert await asyncio.gather(*(double(k) for k in range(10))) == [2 * k for k in range(10)]
    assert [len(group) for group in bulk.groups] == [4, 4, 2]


async def test_one_key_asked_twice_is_asked_once_and_both_callers_answered() -> None:
    bulk = Doubling()
    double = Coalescer(bulk, max_keys=1)
    assert list(await asyncio.gather(double(7), double(7), double(8))) == [14, 14, 16]
    assert bulk.groups == [[7], [8]]


async def test_a_failed_bulk_call_fails_its_group_only() -> None:
    bulk = Doubling(fail={3})
    double = Coalescer(bulk, max_keys=2)
    results = await asyncio.gather(*(double(k) for k in (1, 3, 5)), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)
    assert results[2] == 10
    assert await double(4) == 8  # the coalescer goes on after a failure


async def test_a_cancelled_caller_leaves_the_others_answered() -> None:
    hold = asyncio.Event()
    bulk = Doubling(hold=hold)
    double = Coalescer(bulk)
    first = asyncio.create_task(double(1))
    await asyncio.wait_for(bulk.entered.wait(), 5)
    gone, kept = asyncio.create_task(double(2)), asyncio.create_task(double(3))
    await asyncio.sleep(0)
    gone.cancel()
    hold.set()
    assert await first == 2 and await kept == 6
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert bulk.groups == [[1], [3]]  # the cancelled key was never asked for


async def test_a_key_the_bulk_call_did_not_answer_is_an_error_for_its_caller() -> None:
    async def forgetful(keys: Sequence[int]) -> Mapping[int, int]:
        return {key: key for key in keys if key != 2}

    same = Coalescer(forgetful)
    results = await asyncio.gather(same(1), same(2), return_exceptions=True)
    assert results[0] == 1 and isinstance(results[1], LookupError)

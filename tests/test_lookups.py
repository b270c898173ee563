"""An operation's lookups by key (graph/lookups.py): each key once, a lone lookup in the
operation's own task at once, lookups of concurrent fields in one batch."""

import asyncio

import pytest

from graph.lookups import Lookups


class Finder:
    """Doubles each key, counting the batches it is asked; holds them while shut."""

    def __init__(self, *, fails: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fails = fails
        self.asked = asyncio.Event()
        self.open = asyncio.Event()
        self.open.set()

    async def __call__(self, keys: list[int]) -> list[int]:
        self.batches.append(keys)
        self.asked.set()
        await self.open.wait()
        if self.fails:
            raise ValueError("no such keys")
        return [2 * key for key in keys]


async def test_a_lookup_in_the_operations_task_needs_no_turn_of_the_loop():
    find = Finder()
    lookups = Lookups(find)

    # Driven by hand: done in its first step, without ever waiting on the loop.
    step = lookups.load(21).__await__()
    with pytest.raises(StopIteration) as done:
        step.send(None)

    assert done.value.value == 42
    assert find.batches == [[21]]


async def test_lookups_of_concurrent_fields_share_one_batch_and_each_key_one_lookup():
    find = Finder()
    lookups = Lookups(find)

    async def field(key: int) -> int:  # as graphql-core runs concurrent fields: in tasks
        return await lookups.load(key)

    values = await asyncio.gather(*(asyncio.create_task(field(k)) for k in (1, 2, 1, 3)))

    assert values == [2, 4, 2, 6]
    assert find.batches == [[1, 2, 3]]
    assert await lookups.load(2) == 4  # known: not looked up again
    assert find.batches == [[1, 2, 3]]


async def test_a_failed_lookup_fails_every_caller_and_is_kept():
    find = Finder(fails=True)
    lookups = Lookups(find)

    async def field(key: int) -> int:
        return await lookups.load(key)

    outcomes = await asyncio.gather(
        *(asyncio.create_task(field(k)) for k in (1, 2)), return_exceptions=True
    )
    assert [type(outcome) for outcome in outcomes] == [ValueError, ValueError]
    with pytest.raises(ValueError, match="no such keys"):
        await lookups.load(1)
    with pytest.raises(ValueError, match="no such keys"):
        await lookups.load(3)  # looked up on its own: the operation's task
    assert find.batches == [[1, 2], [3]]


async def test_a_cancelled_lookup_is_looked_up_again():
    find = Finder()
    find.open.clear()
    operations: list[Lookups[int, int]] = []

    async def operation() -> int:
        lookups = Lookups(find)  # this task is the operation's: it looks up at once
        operations.append(lookups)
        return await lookups.load(7)

    held = asyncio.create_task(operation())
    await find.asked.wait()
    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held

    find.open.set()
    (lookups,) = operations
    assert await lookups.load(7) == 14  # from another task: a batch of its own
    assert find.batches == [[7], [7]]


async def test_a_caller_cancelled_while_its_batch_runs_leaves_the_others_their_values():
    find = Finder()
    find.open.clear()
    lookups = Lookups(find)

    async def field(key: int) -> int:
        return await lookups.load(key)

    held, other = (asyncio.create_task(field(k)) for k in (7, 8))
    await find.asked.wait()
    held.cancel()
    find.open.set()

    assert await other == 16
    with pytest.raises(asyncio.CancelledError):
        await held
    assert await lookups.load(7) == 14  # its value was not kept for nobody: asked anew
    assert find.batches == [[7, 8], [7]]

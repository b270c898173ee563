"""What one operation looks up by key, each key once, lookups made together in one call.

Strawberry's DataLoader batches every load: the first schedules a callback, which starts
a task, which looks the batch up and wakes its callers: three turns of the event loop for
each lookup, even the usual lone one of a query naming one device (about a tenth of a
warm 50-event page, `bench/graphql.py`). Here a lookup made in the operation's own task
runs at once, in that task. graphql-core runs fields concurrently only in tasks of their
own, which it starts together (one awaitable field it awaits in place): so a lookup in the
operation's task has no sibling to wait for. Lookups made in other tasks are batched as
the DataLoader batches them, with the lookups their siblings make in the same turn.
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lookups(Generic[K, V]):
    """``find(keys)`` gives the value of each key, in order; each key is looked up once
    (a failure too is kept, as the DataLoader keeps it; a cancelled lookup is not)."""

    def __init__(self, find: Callable[[list[K]], Awaitable[Sequence[V]]]) -> None:
        self._find = find
        try:
            self._task = asyncio.current_task()
        except RuntimeError:  # no loop: the synchronous execution, where nothing awaits
            self._task = None
        self._found: dict[K, asyncio.Future[V]] = {}
        self._waiting: list[K] = []
        self._batches: set[asyncio.Task[None]] = set()  # held: the loop holds tasks weakly

    async def load(self, key: K) -> V:
        future = self._found.get(key)
        if future is None or future.cancelled():
            future = self._found[key] = asyncio.get_running_loop().create_future()
            if asyncio.current_task() is self._task:
                await self._look_up([key])
            else:
                self._waiting.append(key)
                if len(self._waiting) == 1:
                    # Its first step comes after those of the tasks already started,
                    # whose lookups join this batch meanwhile.
                    batch = asyncio.create_task(self._batch())
                    self._batches.add(batch)
                    batch.add_done_callback(self._batches.discard)
        return await future

    async def _batch(self) -> None:
        keys, self._waiting = self._waiting, []
        # Nobody is waiting for the keys of callers cancelled meanwhile.
        await self._look_up([key for key in keys if not self._found[key].cancelled()])

    async def _look_up(self, keys: list[K]) -> None:
        if not keys:
            return
        futures = [self._found[key] for key in keys]
        try:
            values = await self._find(keys)
            if len(values) != len(keys):
                raise ValueError(f"{len(values)} values for {len(keys)} keys")
        except Exception as error:
            for future in futures:
                if not future.done():
                    future.set_exception(error)
        except BaseException:
            # Cancelled: the waiters are too, and a later load looks the key up anew.
            for future in futures:
                future.cancel()
            raise
        else:
            for future, value in zip(futures, values, strict=True):
                if not future.done():
                    future.set_result(value)

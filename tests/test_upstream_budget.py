"""One upstream budget for the UWS account: calls in flight counted across replicas,
interactive requests before report jobs, leases of a dead process freed by expiry."""

import asyncio
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from support import RANGE, REPORT, WAIT_S, Api, document, ident, server_process

from resolvers.budget import (
    INTERACTIVE,
    JOB,
    LocalBudget,
    Priority,
    RedisBudget,
    UpstreamBudget,
    budget_from_url,
    following_up,
)
from server.settings import Settings

ROOT = Path(__file__).parent.parent
HISTORY = document("DeviceHistory")


class WatchedRedis(Redis):
    """A real client that tells when the budget's script turned a caller of a priority
    away, so that a test knows who is waiting without guessing how long to wait; and
    holds a turned-away caller's next ask until ``asks_again`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = {INTERACTIVE: asyncio.Event(), JOB: asyncio.Event()}
        self.asks_again = asyncio.Event()
        self.asks_again.set()

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        if self.refused[keys_and_args[numkeys + 1]].is_set():
            await self.asks_again.wait()
        answer = await super().evalsha(sha, numkeys, *keys_and_args)
        if answer != 0:
            self.refused[keys_and_args[numkeys + 1]].set()
        return answer


@pytest.fixture
def budget_name() -> str:
    """A budget of the test's own: Redis db 7 may hold other runs' leases."""
    return f"test-budget-{uuid.uuid4().hex}"


@pytest.fixture
async def replicas(
    redis_url: str, budget_name: str
) -> AsyncIterator[list[tuple[RedisBudget, WatchedRedis]]]:
    """Two replicas' budgets of one slot on one Redis, each on a watched client."""
    clients = [WatchedRedis.from_url(redis_url) for _ in range(2)]
    budgets = [RedisBudget(c, 1, None, lease_s=60, name=budget_name) for c in clients]
    yield list(zip(budgets, clients, strict=True))
    for budget in budgets:
        await budget.close()


class Holders:
    """Callers that take a slot each, note it, and hold it until released."""

    def __init__(self, budget: UpstreamBudget) -> None:
        self.budget = budget
        self.taken: list[Priority] = []
        self.changed = asyncio.Event()
        self.release = asyncio.Event()

    def start(self, priority: Priority) -> "asyncio.Task[None]":
        return asyncio.create_task(self._hold(priority))

    async def _hold(self, priority: Priority) -> None:
        async with self.budget.slot(priority):
            self.taken.append(priority)
            self.changed.set()
            await self.release.wait()

    async def first_taken(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.changed.wait()


# In process: the default


async def test_in_process_an_interactive_caller_goes_before_waiting_jobs():
    budget = LocalBudget(1)
    holders = Holders(budget)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(budget.slot(JOB))
        jobs = [holders.start(JOB) for _ in range(5)]
        interactive = holders.start(INTERACTIVE)
        await asyncio.sleep(0)  # a turn of the loop, no time: every waiter has queued
        assert holders.taken == []
    # The job's slot is given back: the interactive caller, last to ask, takes it.
    await holders.first_taken()
    assert holders.taken == [INTERACTIVE]
    holders.release.set()
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(interactive, *jobs)
    assert holders.taken == [INTERACTIVE] + [JOB] * 5


async def test_a_jobs_follow_up_call_goes_before_its_first_calls():
    """A device's next window continues a read under way (the job's longest chain of
    calls): it takes the next slot before the first calls of other devices waiting."""
    budget = LocalBudget(1)
    order: list[str] = []
    release = asyncio.Event()

    async def call(name: str) -> None:
        async with budget.slot(JOB):
            order.append(name)
            await release.wait()

    async def follow_up() -> None:
        with following_up():
            await call("follow-up")

    async with AsyncExitStack() as stack:
        await stack.enter_async_context(budget.slot(JOB))
        firsts = [asyncio.create_task(call(f"first {n}")) for n in range(3)]
        await asyncio.sleep(0)  # a turn of the loop, no time: the first calls have queued
        follow = asyncio.create_task(follow_up())
        await asyncio.sleep(0)  # a turn of the loop, no time: the follow-up has queued
    release.set()
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(follow, *firsts)
    assert order == ["follow-up", "first 0", "first 1", "first 2"]


async def test_in_process_a_job_alone_uses_every_slot():
    """No slot is kept back for interactive callers: the default is never slower than
    UPSTREAM_CONCURRENCY allows."""
    budget = LocalBudget(8)
    async with AsyncExitStack() as stack, asyncio.timeout(WAIT_S):
        for _ in range(8):
            await stack.enter_async_context(budget.slot(JOB))
        ninth = Holders(budget)
        waiting = ninth.start(JOB)
        await asyncio.sleep(0)  # a turn of the loop, no time: the ninth has queued
        assert ninth.taken == []
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    # The cancelled waiter took no slot with it: all eight are free again.
    async with AsyncExitStack() as stack, asyncio.timeout(WAIT_S):
        for _ in range(8):
            await stack.enter_async_context(budget.slot(INTERACTIVE))


async def test_waits_are_measured_by_priority():
    def waits(priority: Priority) -> float:
        value = REGISTRY.get_sample_value(
            "provgraph_upstream_budget_wait_seconds_count", {"priority": priority}
        )
        return value or 0.0

    budget = LocalBudget(2)
    before = waits(INTERACTIVE), waits(JOB)
    async with budget.slot(INTERACTIVE), budget.slot(JOB):
        assert REGISTRY.get_sample_value("provgraph_upstream_budget_in_flight") == 2
    assert (waits(INTERACTIVE), waits(JOB)) == (before[0] + 1, before[1] + 1)


def test_the_default_budget_is_the_process_own():
    assert Settings(_env_file=None).upstream_budget_url == "memory://"


# On Redis: one budget for every replica


async def test_an_interactive_read_takes_the_next_slot_while_a_job_holds_the_budget(
    replicas: list[tuple[RedisBudget, WatchedRedis]],
):
    (job_replica, job_client), (interactive_replica, interactive_client) = replicas
    job_holders, interactive_holders = Holders(job_replica), Holders(interactive_replica)
    interactive_client.asks_again.clear()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(job_replica.slot(JOB))
        interactive = interactive_holders.start(INTERACTIVE)
        async with asyncio.timeout(WAIT_S):
            await interactive_client.refused[INTERACTIVE].wait()
    # The job's call ended and its next ones ask before the waiting read asks again: the
    # slot is free, yet they wait, and the read, from another replica, takes it.
    jobs = [job_holders.start(JOB) for _ in range(3)]
    async with asyncio.timeout(WAIT_S):
        await job_client.refused[JOB].wait()
    interactive_client.asks_again.set()
    await interactive_holders.first_taken()
    assert job_holders.taken == []
    interactive_holders.release.set()
    job_holders.release.set()
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(interactive, *jobs)
    assert job_holders.taken == [JOB] * 3


async def test_on_redis_a_job_alone_uses_every_slot(redis_url: str, budget_name: str):
    budget = RedisBudget(Redis.from_url(redis_url), 8, None, lease_s=60, name=budget_name)
    try:
        async with AsyncExitStack() as stack, asyncio.timeout(WAIT_S):
            for _ in range(8):
                await stack.enter_async_context(budget.slot(JOB))
    finally:
        await budget.close()


async def test_a_cancelled_interactive_waiter_no_longer_holds_jobs_back(
    replicas: list[tuple[RedisBudget, WatchedRedis]],
):
    """A request's deadline cancels its wait: jobs are not kept waiting for a caller
    who left."""
    (job_replica, job_client), (interactive_replica, interactive_client) = replicas
    job_holders = Holders(job_replica)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(job_replica.slot(JOB))
        interactive = Holders(interactive_replica).start(INTERACTIVE)
        async with asyncio.timeout(WAIT_S):
            await interactive_client.refused[INTERACTIVE].wait()
        interactive.cancel()
        with pytest.raises(asyncio.CancelledError):
            await interactive
    job = job_holders.start(JOB)
    await job_holders.first_taken()
    assert not job_client.refused[JOB].is_set()  # taken at its first ask
    job_holders.release.set()
    await job


async def test_calls_per_second_are_counted_for_the_account(redis_url: str, budget_name: str):
    """Two replicas with a budget of two calls a second: the third call started, by
    either, waits although no call is in flight."""
    clients = [WatchedRedis.from_url(redis_url) for _ in range(2)]
    budgets = [RedisBudget(c, 8, 2, lease_s=60, name=budget_name) for c in clients]
    try:
        async with asyncio.timeout(WAIT_S):
            for budget in budgets:
                async with budget.slot(JOB):
                    pass
            assert not any(c.refused[JOB].is_set() for c in clients)
            async with budgets[0].slot(JOB):
                pass
        assert clients[0].refused[JOB].is_set()
    finally:
        for budget in budgets:
            await budget.close()


HOLDER = """
import asyncio, sys
from contextlib import AsyncExitStack
from redis.asyncio import Redis
from resolvers.budget import JOB, RedisBudget

async def main():
    budget = RedisBudget(Redis.from_url(sys.argv[1]), 3, None, lease_s=3, name=sys.argv[2])
    async with AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(budget.slot(JOB))
        print("held", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_dead_holders_leases_free_themselves(redis_url: str, budget_name: str):
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, redis_url, budget_name, cwd=ROOT, stdout=PIPE
    )
    client = Redis.from_url(redis_url)
    budget = RedisBudget(Redis.from_url(redis_url), 3, None, lease_s=60, name=budget_name)
    try:
        assert holder.stdout is not None
        async with asyncio.timeout(WAIT_S):
            assert await holder.stdout.readline() == b"held\n"
        assert await client.zcard(f"{{{budget_name}}}:leases") == 3
        holder.kill()  # SIGKILL: it gives nothing back
        await holder.wait()
        async with asyncio.timeout(WAIT_S), budget.slot(INTERACTIVE):
            pass
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await budget.close()
        await client.aclose()


@pytest.fixture
def slow_upstream(upstream: Any) -> Any:
    """The simulator shared by the replicas, 50 ms a call, its peak in flight reset."""
    upstream.simulator.state.knobs.latency_s = 0.05
    upstream.simulator.state.reset_calls()
    return upstream


@pytest.fixture
def three_replicas(
    tmp_path: Path, redis_url: str, budget_name: str, slow_upstream: Any
) -> Iterator[list[Api]]:
    environment = {
        "UWS_BASE_URL": slow_upstream.base_url,
        "UWS_USERNAME": "demo",
        "UWS_PASSWORD": "demo",
        "UPSTREAM_CONCURRENCY": "8",
        "UPSTREAM_BUDGET_URL": redis_url,
    }
    with ExitStack() as stack:
        urls = [
            stack.enter_context(
                server_process(**environment, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/{n}.db")
            )
            for n in range(3)
        ]
        yield [Api(url, slow_upstream.simulator) for url in urls]


async def test_three_replicas_never_pass_the_account_budget(three_replicas: list[Api]):
    fleet = three_replicas[0].simulator.fleet
    devices = [d for d in fleet.devices if d.profile.name == "ordinary"][:36]
    shares = [devices[n::3] for n in range(3)]
    reads = [
        api.query(REPORT, {"input": {"devices": [ident(d) for d in share], **RANGE}})
        for api, share in zip(three_replicas, shares, strict=True)
    ] + [
        api.query(HISTORY, {**ident(d), "first": 50})
        for api, share in zip(three_replicas, shares, strict=True)
        for d in share[:4]
    ]
    async with asyncio.timeout(120):
        answers = await asyncio.gather(*reads)
    assert all(
        answer["data"]["provisioningReport"]["devicesScanned"] == 12 for answer in answers[:3]
    )
    state = three_replicas[0].simulator.state
    assert state.calls["GetDeviceProvisioningHistory"] >= 36
    assert state.peak_in_flight <= 8


async def test_with_redis_down_the_budget_falls_back_to_the_process_own():
    # Nothing listens on the port: every ask of Redis fails at once. The calls go on, as
    # with a cache outage, within the process's own concurrency.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    budget = budget_from_url(f"redis://127.0.0.1:{closed}/0", 1, None, lease_s=10)
    try:
        for priority in (INTERACTIVE, JOB):
            async with asyncio.timeout(WAIT_S), budget.slot(priority):
                pass
    finally:
        await budget.close()

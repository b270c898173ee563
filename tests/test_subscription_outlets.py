"""A shared subscription's live results sent through an outlet (graph/sharing.py's
``OUTLET``), as a WebSocket sends them (server/sockets.py): in order, after the member's
replay, one member's blocked client dropping that member alone; and on the wire the very
message Strawberry's protocol handlers send."""

import asyncio
import json
from typing import Any

import pytest
from strawberry.http import process_result
from strawberry.types import ExecutionResult
from support import WAIT_S, Api, bearer
from test_shared_subscriptions import (
    CREATED,
    Members,
    Socket,
    create_over_http,
    event_id,
    members,
    receive,
    tier,
)

from graph.sharing import OUTLET, Outlet
from server.http import json_text

__all__ = ["tier"]  # the in-process tests' module-wide service, from the sharing tests


def body(result: ExecutionResult) -> dict[str, Any]:
    return json.loads(json_text(process_result(result)))  # type: ignore[no-any-return]


async def through(
    m: Members, outlet: Outlet, after: str
) -> tuple[list[ExecutionResult], asyncio.Task[None]]:
    """A member whose live results go to ``outlet``: what its stream yields, read to its
    end as Strawberry's handler reads it, and the task reading it."""
    token = OUTLET.set(outlet)
    try:
        stream = await m.subscribe(CREATED, {"after": after})
    finally:
        OUTLET.reset(token)
    yielded: list[ExecutionResult] = []

    async def read() -> None:
        async for result in stream:
            yielded.append(result)

    reading = asyncio.create_task(read())

    async def stop() -> None:  # before the stream is closed
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)

    m.stack.push_async_callback(stop)
    return yielded, reading


async def sent(outlet: asyncio.Queue[ExecutionResult]) -> str:
    async with asyncio.timeout(WAIT_S):
        return event_id(body(await outlet.get()))


async def test_an_outlet_takes_the_live_results_in_order_after_the_replay(tier, tmp_path):
    async with members(tier, tmp_path) as m:
        seed = (await m.create(serialNumber="SN-seed"))["event"]["id"]
        replayed = (await m.create(serialNumber="SN-replayed"))["event"]["id"]
        await m.api.services.hub.catch_up()  # delivered: the member replays it
        results: asyncio.Queue[ExecutionResult] = asyncio.Queue()
        yielded, _ = await through(m, results.put, seed)
        plain = await m.subscribe(CREATED, {"after": seed})  # the same group, no outlet
        assert event_id(await receive(plain)) == replayed
        live = [(await m.create(serialNumber=f"SN-{n}"))["event"]["id"] for n in range(3)]
        got = [await sent(results) for _ in live]
        assert [event_id(await receive(plain)) for _ in live] == live
    # The replay from the stream, as the member's own results; then the group's.
    assert [event_id(body(result)) for result in yielded] == [replayed]
    assert got == live


async def test_a_client_that_does_not_read_drops_its_member_alone(tier, tmp_path):
    async with members(tier, tmp_path, subscriber_queue_size=2) as m:
        seed = (await m.create(serialNumber="SN-seed"))["event"]["id"]
        held: list[ExecutionResult] = []
        entered, release = asyncio.Event(), asyncio.Event()

        async def stuck(result: ExecutionResult) -> None:  # a socket that cannot send
            held.append(result)
            entered.set()
            await release.wait()

        fast: asyncio.Queue[ExecutionResult] = asyncio.Queue()
        last_words, slow_reading = await through(m, stuck, seed)
        _, fast_reading = await through(m, fast.put, seed)
        ids = [(await m.create(serialNumber="SN-0"))["event"]["id"]]
        assert await sent(fast) == ids[0]
        async with asyncio.timeout(WAIT_S):
            await entered.wait()
        for n in range(1, 4):  # two wait behind the first, the third is one too many
            ids.append((await m.create(serialNumber=f"SN-{n}"))["event"]["id"])
            assert await sent(fast) == ids[-1]
        release.set()
        async with asyncio.timeout(WAIT_S):
            await slow_reading  # the stream ends
        later = (await m.create(serialNumber="SN-later"))["event"]["id"]
        assert await sent(fast) == later
        assert not fast_reading.done()
    assert [event_id(body(result)) for result in held] == ids[:1]
    (dropped,) = map(body, last_words)
    assert dropped["data"] is None
    (error,) = dropped["errors"]
    assert error["extensions"]["code"] == "SUBSCRIBER_TOO_SLOW"


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_an_outlet_sends_the_message_strawberry_would(api: Api, protocol: str):
    seed = await create_over_http(api, "SN-seed")
    replayed = await create_over_http(api, "SN-replayed")
    async with Socket(api, protocol, bearer(subject=protocol)) as socket:
        await socket.subscribe("op-1", CREATED, {"after": seed})
        first = await socket.result()  # replayed: sent by Strawberry's handler
        live = await create_over_http(api, "SN-live")
        second = await socket.result()  # live: sent through the socket's outlet
    assert [event_id(first), event_id(second)] == [replayed, live]
    by_strawberry, by_outlet = socket.frames[-2:]
    # Compact JSON both, and the same around the payload: id, type, their order.
    assert all(frame == json_text(json.loads(frame)) for frame in (by_strawberry, by_outlet))
    assert by_outlet.replace(json_text(second), "") == by_strawberry.replace(json_text(first), "")

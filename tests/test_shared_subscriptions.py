"""Subscribers who would get the same events share one execution per event (graph/sharing.py)
and one encoded payload (server/frames.py): counted, compared with unshared executions,
and held to the rules each subscriber had alone: organizations, replay with ``after``
without gap or duplicate at the seam, a slow subscriber dropped alone, a subscriber
leaving ending no one else's stream; over both WebSocket protocols and the HTTP streams.

In process (the schema and the services, no server), where the hub's pace is the test's;
then over the wire, against a served app."""

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from strawberry.http import process_result
from support import (
    CREATE,
    ORG,
    OTHER_ORG,
    UPDATE,
    WAIT_S,
    Api,
    FastTier,
    InProcess,
    bearer,
    document,
    fast_tier,
    full_input,
    in_process,
)
from test_http_subscriptions import MULTIPART, SSE, connected, reserved, start, streaming

from graph.schema import schema
from graph.sharing import SharedData, SharedSubscriptions
from models.principal import LOCAL_DEVELOPER, RECIPES_READ
from resolvers.recipes import NewRecipe
from server.frames import encode
from server.http import json_text
from server.testing import authorization

CREATED = document("RecipeCreated")
EVENTS = document("RecipeEvents")
EXECUTIONS = "provgraph_shared_subscription_executions_total"
DELIVERIES = "provgraph_shared_subscription_deliveries_total"
GROUPS = "provgraph_shared_subscription_groups"


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def receive(stream: AsyncIterator[Any]) -> dict[str, Any]:
    """The next result of an in-process stream, as the HTTP view would send it."""
    async with asyncio.timeout(WAIT_S):
        result = await anext(stream)
    return json.loads(json_text(process_result(result)))


def event_id(body: dict[str, Any]) -> str:
    (field,) = body["data"].values()
    return str(field["id"])


# --- In process ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def tier(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastTier]:
    async with fast_tier(tmp_path_factory.mktemp("sharing")) as shared:
        yield shared


class Members:
    """Subscriptions started through one SharedSubscriptions, as the app starts them."""

    def __init__(self, api: InProcess) -> None:
        self.api = api
        self.shared = SharedSubscriptions(schema)
        self.stack = AsyncExitStack()

    async def subscribe(
        self, query: str, variables: dict[str, Any], token: str | None = None
    ) -> AsyncGenerator[Any, None]:
        context = await self.api.context(authorization(token) if token else None)
        stream = await self.shared.stream(query, variables, context_value=context)
        self.stack.push_async_callback(stream.aclose)
        return stream

    async def create(self, **changes: Any) -> dict[str, Any]:
        body = await self.api.query(CREATE, {"input": full_input(**changes)})
        return body["data"]["createProvisioningRecipe"]  # type: ignore[no-any-return]


@asynccontextmanager
async def members(tier: FastTier, tmp_path: Path, **settings: Any) -> AsyncIterator[Members]:
    async with in_process(tier, tmp_path, **settings) as api:
        group = Members(api)
        async with group.stack:
            yield group


async def test_identical_subscribers_share_one_execution_per_event(tier, tmp_path):
    async with members(tier, tmp_path) as m:
        seed = (await m.create(serialNumber="SN-seed"))["event"]["id"]
        # Different credentials (subjects) with the same organizations and scopes, and
        # different replay starts: one group.
        starts = [seed, seed, seed, "0", "0"]
        streams = [
            await m.subscribe(CREATED, {"after": start}, bearer(subject=f"dashboard-{n}"))
            for n, start in enumerate(starts)
        ]
        warm = (await m.create(serialNumber="SN-warm"))["event"]["id"]
        for stream, start in zip(streams, starts, strict=True):
            if start == "0":
                assert event_id(await receive(stream)) == seed
            assert event_id(await receive(stream)) == warm  # joined
        executions, deliveries = counted(EXECUTIONS), counted(DELIVERIES)
        ids = [(await m.create(serialNumber=f"SN-{n}"))["event"]["id"] for n in range(3)]
        received = [[await receive(s) for _ in ids] for s in streams]
    assert [[event_id(body) for body in bodies] for bodies in received] == [ids] * 5
    assert all(bodies == received[0] for bodies in received)
    assert counted(EXECUTIONS) - executions == 3
    assert counted(DELIVERIES) - deliveries == 15


async def test_variables_organizations_and_scopes_keep_executions_apart(tier, tmp_path):
    async with members(tier, tmp_path) as m:
        seed = (await m.create(serialNumber="SN-seed"))["event"]["id"]
        everyone = {"after": seed}
        subscribers = {
            "everything": await m.subscribe(CREATED, everyone),
            "another subject": await m.subscribe(CREATED, everyone, bearer(subject="other")),
            "one organization's events": await m.subscribe(
                CREATED, {**everyone, "organizationUid": ORG}
            ),
            "one organization's credential": await m.subscribe(
                CREATED, everyone, bearer(subject="org", organizations=[ORG])
            ),
            "fewer scopes": await m.subscribe(
                CREATED, everyone, bearer(subject="reader", scopes=[RECIPES_READ])
            ),
        }
        warm = (await m.create(serialNumber="SN-warm"))["event"]["id"]
        for stream in subscribers.values():
            assert event_id(await receive(stream)) == warm
        executions = counted(EXECUTIONS)
        ours = (await m.create(serialNumber="SN-ours"))["event"]["id"]
        theirs = (await m.create(serialNumber="SN-theirs", organizationUid=OTHER_ORG))["event"]
        last = (await m.create(serialNumber="SN-last"))["event"]["id"]
        every, org_only = [ours, theirs["id"], last], [ours, last]
        expected = {
            "everything": every,
            "another subject": every,
            "one organization's events": org_only,
            "one organization's credential": org_only,
            "fewer scopes": every,
        }
        received = {
            name: [event_id(await receive(subscribers[name])) for _ in ids]
            for name, ids in expected.items()
        }
    assert received == expected
    # One group but for the subject: four see ORG's events, two the other organization's.
    assert counted(EXECUTIONS) - executions == 4 + 2 + 4


async def test_shared_results_are_those_of_an_unshared_execution(tier, tmp_path):
    async with members(tier, tmp_path) as m:
        first = await m.create(serialNumber="SN-1")
        seed = first["event"]["id"]
        shared = [await m.subscribe(EVENTS, {"after": seed}) for _ in range(2)]
        context = await m.api.context()
        alone = await schema.subscribe(EVENTS, {"after": seed}, context_value=context)
        m.stack.push_async_callback(alone.aclose)
        await m.create(serialNumber="SN-2")
        for stream in (*shared, alone):  # all joined: what follows is live
            await receive(stream)
        update = {"uid": first["recipe"]["uid"], "status": "APPLIED"}
        await m.api.query(UPDATE, {"input": update})
        await m.create(serialNumber="SN-3", organizationUid=OTHER_ORG)
        results = [[await anext(s) for _ in range(2)] for s in (*shared, alone)]
    one, other, unshared = results
    assert [r.data["provisioningRecipeEvents"]["__typename"] for r in one] == [
        "DeviceProvisioningRecipeStatusUpdated",
        "DeviceProvisioningRecipeCreated",
    ]
    for mine, theirs, reference in zip(one, other, unshared, strict=True):
        assert isinstance(mine.data, SharedData)
        assert mine.data is theirs.data
        assert process_result(mine) == process_result(theirs) == process_result(reference)


async def test_a_slow_subscriber_is_dropped_alone_with_the_error_it_had_unshared(tier, tmp_path):
    async with members(tier, tmp_path, subscriber_queue_size=2) as m:
        seed = (await m.create(serialNumber="SN-seed"))["event"]["id"]
        slow = await m.subscribe(CREATED, {"after": seed})
        fast = await m.subscribe(CREATED, {"after": seed})
        context = await m.api.context()
        alone = await schema.subscribe(CREATED, {"after": seed}, context_value=context)
        m.stack.push_async_callback(alone.aclose)
        await m.create(serialNumber="SN-warm")
        for stream in (slow, fast, alone):
            await receive(stream)
        executions = counted(EXECUTIONS)
        ids = []
        for n in range(4):  # fast keeps up; slow and alone read nothing: 2 fit
            ids.append((await m.create(serialNumber=f"SN-{n}"))["event"]["id"])
            assert event_id(await receive(fast)) == ids[-1]
        dropped, dropped_alone = await receive(slow), await receive(alone)
        with pytest.raises(StopAsyncIteration):
            await anext(slow)
        later = (await m.create(serialNumber="SN-later"))["event"]["id"]
        assert event_id(await receive(fast)) == later
    # SubscriberTooSlow, as the unshared subscriber gets it: typed, saying what to do.
    assert dropped["data"] is None
    (error,) = dropped["errors"]
    assert error["extensions"]["code"] == "SUBSCRIBER_TOO_SLOW"
    assert "fell 2 events behind" in error["message"]
    assert dropped == dropped_alone
    assert counted(EXECUTIONS) - executions == 5


async def test_members_leave_without_ending_the_others_and_the_last_ends_the_group(tier, tmp_path):
    async with members(tier, tmp_path) as m:
        groups = counted(GROUPS)
        seed = (await m.create(serialNumber="SN-seed"))["event"]["id"]
        one, two, three = [await m.subscribe(CREATED, {"after": seed}) for _ in range(3)]
        warm = (await m.create(serialNumber="SN-warm"))["event"]["id"]
        assert [event_id(await receive(s)) for s in (one, two, three)] == [warm] * 3
        assert counted(GROUPS) == groups + 1
        await one.aclose()
        first = (await m.create(serialNumber="SN-1"))["event"]["id"]
        assert [event_id(await receive(s)) for s in (two, three)] == [first] * 2
        await three.aclose()
        second = (await m.create(serialNumber="SN-2"))["event"]["id"]
        assert event_id(await receive(two)) == second
        assert counted(GROUPS) == groups + 1
        await two.aclose()
        assert counted(GROUPS) == groups


async def test_replay_hands_over_to_the_group_without_gap_or_duplicate(tier, tmp_path):
    async with members(tier, tmp_path, events_poll_s=3600) as m:
        hub, store = m.api.services.hub, m.api.services.recipes

        async def commit(brand: str) -> str:
            # Committed without telling the hub: it delivers when the test says.
            outcome = await store.create(
                NewRecipe(organization_uid=ORG, brand=brand), LOCAL_DEVELOPER, lambda _: None
            )
            assert outcome.seq is not None
            return f"{outcome.seq:020d}"

        def ids(*numbers: int) -> list[str]:
            return [f"{n:020d}" for n in numbers]

        executions = counted(EXECUTIONS)
        live = await m.subscribe(CREATED, {"after": "0"})
        first = asyncio.create_task(receive(live))
        await commit("e1")
        await hub.catch_up()
        assert event_id(await first) == ids(1)[0]
        await commit("e2")  # committed, not delivered yet
        await commit("e3")
        # Joins while the hub lags: replays e1 (delivered), then the group's e2, e3.
        lagging = await m.subscribe(CREATED, {"after": "0"})
        assert event_id(await receive(lagging)) == ids(1)[0]
        # Asks for what follows e2, which the hub has not delivered: never e2 itself.
        ahead = await m.subscribe(CREATED, {"after": ids(2)[0]})
        ahead_first = asyncio.create_task(receive(ahead))
        await commit("e4")
        await hub.catch_up()
        # Joins mid-stream: replays e2 to e4 on its own, then takes the group's e5.
        joining = await m.subscribe(CREATED, {"after": ids(1)[0]})
        replayed = [event_id(await receive(joining)) for _ in range(3)]
        await commit("e5")
        await hub.catch_up()
        got = {
            "live": [event_id(await receive(live)) for _ in range(4)],
            "lagging": [event_id(await receive(lagging)) for _ in range(4)],
            "ahead": [event_id(await ahead_first)]
            + [event_id(await receive(ahead)) for _ in range(2)],
            "joining": [*replayed, event_id(await receive(joining))],
        }
    assert got == {
        "live": ids(2, 3, 4, 5),
        "lagging": ids(2, 3, 4, 5),
        "ahead": ids(3, 4, 5),
        "joining": ids(2, 3, 4, 5),
    }
    # e1 to e5 executed once each, for the group; the joiner's replay on its own.
    assert counted(EXECUTIONS) - executions == 5


# --- Over the wire ----------------------------------------------------------------------


class Socket:
    """A raw WebSocket client of either protocol: its messages as they come."""

    def __init__(self, api: Api, protocol: str, token: str) -> None:
        self.api, self.protocol, self.token = api, protocol, token
        self.legacy = protocol == "graphql-ws"
        self.frames: list[str] = []

    async def __aenter__(self) -> "Socket":
        self.socket = await websockets.connect(self.api.ws_url, subprotocols=[self.protocol])
        await self.socket.send(
            json.dumps({"type": "connection_init", "payload": authorization(self.token)})
        )
        assert (await self.message())["type"] == "connection_ack"
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.socket.close()

    async def message(self) -> dict[str, Any]:
        while True:
            async with asyncio.timeout(WAIT_S):
                text = await self.socket.recv()
            message = json.loads(text)
            if message["type"] not in ("ka", "ping", "pong"):
                self.frames.append(str(text))
                return message  # type: ignore[no-any-return]

    async def subscribe(self, operation: str, query: str, variables: dict[str, Any]) -> None:
        kind = "start" if self.legacy else "subscribe"
        payload = {"query": query, "variables": variables}
        await self.socket.send(json.dumps({"id": operation, "type": kind, "payload": payload}))

    async def stop(self, operation: str) -> None:
        await self.socket.send(
            json.dumps({"id": operation, "type": "stop" if self.legacy else "complete"})
        )

    async def result(self) -> dict[str, Any]:
        message = await self.message()
        assert message["type"] == ("data" if self.legacy else "next"), message
        return message["payload"]  # type: ignore[no-any-return]


async def served_count(api: Api, name: str) -> float:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        text = (await http.get(f"{api.base_url}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def create_over_http(api: Api, serial: str) -> str:
    body = await api.query(CREATE, {"input": full_input(serialNumber=serial)})
    return str(body["data"]["createProvisioningRecipe"]["event"]["id"])


async def test_both_socket_protocols_and_the_http_streams_share_one_execution(api: Api):
    seed = await create_over_http(api, "SN-seed")
    variables = {"after": seed}
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(Socket(api, protocol, bearer(subject=protocol)))
            for protocol in ("graphql-transport-ws", "graphql-ws")
        ]
        for socket in sockets:
            await socket.subscribe("1", CREATED, variables)
        streams = [
            await stack.enter_async_context(
                streaming(api, accept, CREATED, variables, bearer(subject=name))
            )
            for name, accept in (("multipart", MULTIPART), ("sse", SSE))
        ]
        http, token = await stack.enter_async_context(reserved(api))
        single = await stack.enter_async_context(connected(http, token))
        assert (await start(http, token, "s", CREATED, variables)).status_code == 202

        async def results() -> list[dict[str, Any]]:
            received = [await socket.result() for socket in sockets]
            received += [await stream.data() for stream in streams]
            while (message := await single.next()) == {"comment": "ping"}:
                pass  # a keep-alive
            assert message is not None
            assert message["event"] == "next", message
            return [*received, message["data"]["payload"]]

        warm = await create_over_http(api, "SN-warm")
        assert {event_id(body) for body in await results()} == {warm}  # all joined
        executions = await served_count(api, EXECUTIONS)
        events = [await create_over_http(api, f"SN-{n}") for n in range(2)]
        received = [await results() for _ in events]
        executed = await served_count(api, EXECUTIONS) - executions
    assert [[event_id(body) for body in bodies] for bodies in received] == [
        [event] * 5 for event in events
    ]
    assert all(body == bodies[0] for bodies in received for body in bodies)
    assert executed == 2
    # Over the sockets, each message is the payload's one text beside its own id.
    for socket in sockets:
        for frame, bodies in zip(socket.frames[-2:], received, strict=True):
            assert json_text(bodies[0]) in frame


async def test_a_subscriber_leaving_ends_no_one_elses_stream(api: Api):
    seed = await create_over_http(api, "SN-seed")
    async with (
        Socket(api, "graphql-transport-ws", bearer(subject="one")) as one,
        Socket(api, "graphql-ws", bearer(subject="two")) as two,
    ):
        async with Socket(api, "graphql-transport-ws", bearer(subject="three")) as three:
            for socket in (one, two, three):
                await socket.subscribe("1", CREATED, {"after": seed})
            warm = await create_over_http(api, "SN-warm")
            for socket in (one, two, three):
                assert event_id(await socket.result()) == warm
            await one.stop("1")
            first = await create_over_http(api, "SN-1")
            assert event_id(await two.result()) == first
            assert event_id(await three.result()) == first
        second = await create_over_http(api, "SN-2")  # three's socket is closed
        assert event_id(await two.result()) == second
        await two.stop("1")
        assert await two.message() == {"type": "complete", "id": "1"}
        # one's socket is still open, and answers: nothing came of its stopped operation.
        await one.subscribe("2", "{ __typename }", {})
        assert (await one.result())["data"] == {"__typename": "Query"}


# --- The encoded payload ----------------------------------------------------------------


def test_a_shared_payload_is_encoded_once_and_spliced_beside_each_id():
    data = SharedData({"provisioningRecipeCreated": {"id": "00000000000000000001", "json": {}}})
    extensions = {"cost": {"upstreamCalls": 0, "cacheHits": 0}}
    encoded: list[object] = []

    def dumps(value: object) -> str:
        encoded.append(value)
        return json_text(value)

    def payload() -> dict[str, Any]:  # as Strawberry builds it for each subscriber
        return {"data": data, "extensions": extensions}

    messages = [
        {"id": "1", "type": "next", "payload": payload()},  # graphql-transport-ws
        {"type": "data", "id": "op-7", "payload": payload()},  # graphql-ws
        {"payload": payload()},  # multipart
        {"id": "s", "payload": payload()},  # SSE, single connection mode
        payload(),  # SSE, distinct connections mode
    ]
    texts = [encode(message, dumps) for message in messages]
    assert texts == [json_text(message) for message in messages]
    assert sum(1 for value in encoded if isinstance(value, dict) and "data" in value) == 1
    # A payload that differs (its own errors) is encoded for itself.
    other = {"data": data, "errors": [{"message": "x"}], "extensions": extensions}
    assert encode(other, json_text) == json_text(other)

"""Live recipe events over WebSocket, with real clients: replay, filters, replicas, outages."""

import asyncio
import gc
import json
import subprocess
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import websockets
from gql import Client, GraphQLRequest, gql
from support import (
    OTHER_ORG,
    Api,
    api_server,
    assert_seed_shape,
    create,
    document,
    fresh_postgres,
    server_process,
)

from models.principal import LOCAL_DEVELOPER
from resolvers.database import create_engine, migrate, sessions
from resolvers.events import Broker, EventHub, SubscriberTooSlow
from resolvers.recipes import NewRecipe, RecipeStore
from soap.simulator.background import listening_socket

CREATED = gql(document("RecipeCreated"))
EVENTS = gql(document("RecipeEvents"))
UPDATE = document("UpdateRecipeStatus")
WAIT_S = 30  # an upper bound for a delivery, never a synchronisation


@asynccontextmanager
async def subscription(api, query, variables, protocol="graphql-transport-ws"):
    async with Client(transport=api.websocket(protocol)) as session:
        stream = session.subscribe(GraphQLRequest(query, variable_values=variables))
        try:
            yield stream
        finally:
            await stream.aclose()  # ends the subscription, or the client waits for it


async def receive(stream) -> dict:
    async with asyncio.timeout(WAIT_S):
        return await anext(stream)


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_subscriber_receives_the_seed_event(api, protocol):
    first = await create(api)
    async with subscription(api, CREATED, {"after": first["event"]["id"]}, protocol) as stream:
        second = await create(api, serialNumber="SN-2")
        received = await receive(stream)
    assert received["provisioningRecipeCreated"]["id"] == second["event"]["id"]
    event = received["provisioningRecipeCreated"]["json"]
    assert_seed_shape(event)
    assert event == second["event"]["json"]  # the mutation returned what subscribers get


def graphql_execution_objects() -> int:
    """Objects of graphql-core's executor alive in this process, the server's included."""
    gc.collect()
    modules = (str(type(o).__module__) for o in gc.get_objects())
    return sum(1 for module in modules if module.startswith("graphql.execution"))


async def test_a_long_subscription_keeps_nothing_of_the_events_it_delivered(api):
    first = await create(api)
    async with subscription(api, CREATED, {"after": first["event"]["id"]}) as stream:
        for i in range(5):  # everything a subscription holds for its life is made by now
            await create(api, serialNumber=f"SN-warm-{i}")
            await receive(stream)
        before = graphql_execution_objects()
        for i in range(40):
            await create(api, serialNumber=f"SN-{i}")
            await receive(stream)
        grown = graphql_execution_objects() - before
    # Keeping each event's execution alive holds several objects per event: 160 here
    # when events shared the subscription's executor.
    assert grown < 20, f"{grown} more graphql-core objects after 40 events"


async def test_replay_then_live_without_gap_or_duplicate(api):
    created = [await create(api, serialNumber=f"SN-{i}") for i in range(4)]
    ids = [c["event"]["id"] for c in created]
    async with subscription(api, CREATED, {"after": ids[0]}) as stream:
        later = [await create(api, serialNumber=f"SN-late-{i}") for i in range(3)]
        ids += [c["event"]["id"] for c in later]
        got = [(await receive(stream))["provisioningRecipeCreated"]["id"] for _ in ids[1:]]
    assert got == ids[1:]


async def test_creations_and_status_changes_arrive_in_order(api):
    first = await create(api)
    uid = first["recipe"]["uid"]
    async with subscription(api, EVENTS, {"after": first["event"]["id"]}) as stream:
        await api.query(UPDATE, {"input": {"uid": uid, "status": "APPLIED"}})
        second = await create(api, serialNumber="SN-2")
        got = [(await receive(stream))["provisioningRecipeEvents"] for _ in range(2)]
    assert [g["__typename"] for g in got] == [
        "DeviceProvisioningRecipeStatusUpdated",
        "DeviceProvisioningRecipeCreated",
    ]
    assert got[0]["json"]["payload"]["status"] == "Applied"
    assert got[1]["id"] == second["event"]["id"]
    assert got[0]["id"] < got[1]["id"]  # ids sort in emission order


async def test_an_organization_sees_only_its_events(api):
    start = await create(api)
    async with subscription(
        api, CREATED, {"after": start["event"]["id"], "organizationUid": OTHER_ORG}
    ) as stream:
        await create(api, serialNumber="SN-mine")
        theirs = await create(api, serialNumber="SN-theirs", organizationUid=OTHER_ORG)
        received = await receive(stream)
    assert received["provisioningRecipeCreated"]["id"] == theirs["event"]["id"]


async def test_a_bad_after_is_refused(api):
    with pytest.raises(Exception, match="not an event id"):
        async with subscription(api, CREATED, {"after": "yesterday"}) as stream:
            await receive(stream)


async def test_a_slow_subscriber_is_dropped_and_others_go_on(tmp_path: Path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/hub.db")
    await migrate(engine)
    store = RecipeStore(sessions(engine))
    hub = EventHub(store, Broker(), queue_size=2, poll_s=3600)
    await hub.start()
    try:
        slow = hub.subscribe(lambda row: True, None)
        fast = hub.subscribe(lambda row: True, None)
        slow_first = asyncio.create_task(anext(slow))
        fast_first = asyncio.create_task(anext(fast))
        for i in range(4):
            await store.create(
                NewRecipe(organization_uid="a" * 32, brand=f"b{i}"), LOCAL_DEVELOPER, lambda _: None
            )
            await hub.catch_up()
            if i == 0:
                assert (await slow_first).seq == (await fast_first).seq == 1
            else:
                assert (await anext(fast)).seq == i + 1
        with pytest.raises(SubscriberTooSlow, match="fell 2 events behind"):
            await anext(slow)
    finally:
        await hub.stop()
        await engine.dispose()


async def test_after_an_event_the_hub_has_not_delivered_yet_skips_it(tmp_path: Path):
    # The mutation answers once its transaction commits; the hub hands the row out
    # later. A client that subscribes in between, after the event it was just given, must
    # get the next event first, not that one again.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/hub.db")
    await migrate(engine)
    store = RecipeStore(sessions(engine))
    hub = EventHub(store, Broker(), queue_size=10, poll_s=3600)
    await hub.start()
    try:

        async def create(brand: str) -> int:
            outcome = await store.create(
                NewRecipe(organization_uid="a" * 32, brand=brand), LOCAL_DEVELOPER, lambda _: None
            )
            assert outcome.seq is not None
            return outcome.seq

        seen = await create("first")  # committed; the hub has not caught up
        assert hub.delivered < seen
        stream = hub.subscribe(lambda row: True, seen)
        first = asyncio.create_task(anext(stream))
        following = await create("second")
        await hub.catch_up()
        assert (await first).seq == following
    finally:
        await hub.stop()
        await engine.dispose()


@contextmanager
def redis_server():
    """A Redis of this test's own, to stop and start again; yields (url, restart, stop)."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    sock.close()
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    processes: list[subprocess.Popen] = []

    def start() -> None:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        for line in process.stdout:  # blocks until Redis says it is ready
            if "Ready to accept connections" in line:
                break
        processes.append(process)

    def stop() -> None:
        processes[-1].terminate()
        processes[-1].wait(timeout=10)

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", start, stop
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str):
    """Two replicas on one PostgreSQL and one Redis broker, both polling almost never:
    an event crosses from one to the other only through the broker."""
    with redis_server() as (broker_url, restart, stop):
        settings = {"database_url": postgres_url, "broker_url": broker_url, "events_poll_s": 3600}
        yield settings, restart, stop


async def test_an_event_crosses_server_processes_through_redis(replicas, upstream):
    settings, _, _ = replicas
    await fresh_postgres()
    environment = {
        "DATABASE_URL": settings["database_url"],
        "BROKER_URL": settings["broker_url"],
        "EVENTS_POLL_S": "3600",
        "UWS_BASE_URL": upstream.base_url,
        "UWS_USERNAME": "demo",
        "UWS_PASSWORD": "demo",
    }
    with server_process(**environment) as one_url, server_process(**environment) as other_url:
        one, other = Api(one_url, upstream.simulator), Api(other_url, upstream.simulator)
        first = await create(one)
        async with subscription(other, CREATED, {"after": first["event"]["id"]}) as stream:
            second = await create(one, serialNumber="SN-2")
            received = await receive(stream)
    assert received["provisioningRecipeCreated"]["id"] == second["event"]["id"]


async def test_an_event_made_during_a_broker_outage_arrives_when_it_is_back(
    tmp_path: Path, replicas
):
    settings, restart, stop = replicas
    await fresh_postgres()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    servers = [api_server(tmp_path / n, **settings) for n in ("a", "b")]
    one, other = next(servers[0]), next(servers[1])
    try:
        first = await create(one)
        async with subscription(other, CREATED, {"after": first["event"]["id"]}) as stream:
            stop()
            during = await create(one, serialNumber="SN-during-outage")
            assert during["userErrors"] == []  # the mutation succeeds without the broker
            restart()
            received = await receive(stream)
        assert received["provisioningRecipeCreated"]["id"] == during["event"]["id"]
    finally:
        for server in servers:
            server.close()


async def test_a_server_shutting_down_tells_subscribers_to_reconnect(tmp_path: Path):
    servers = api_server(tmp_path)
    api = next(servers)
    async with websockets.connect(api.ws_url, subprotocols=["graphql-transport-ws"]) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": api.headers}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await socket.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": "subscription { provisioningRecipeCreated { id } }"},
                }
            )
        )
        stopping = asyncio.create_task(asyncio.to_thread(servers.close))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(WAIT_S):
                await socket.recv()
        await stopping
    assert closed.value.rcvd.code == 1012  # service restart: reconnect, with after


async def test_a_server_restart_between_a_mutation_and_a_reconnect_loses_nothing(
    postgres_url: str, upstream
):
    await fresh_postgres()
    environment = {
        "DATABASE_URL": postgres_url,
        "BROKER_URL": "memory://",
        "UWS_BASE_URL": upstream.base_url,
        "UWS_USERNAME": "demo",
        "UWS_PASSWORD": "demo",
    }
    with server_process(**environment) as url:
        api = Api(url, upstream.simulator)
        first = await create(api)
        async with subscription(api, CREATED, {"after": first["event"]["id"]}) as stream:
            second = await create(api, serialNumber="SN-2")
            seen = (await receive(stream))["provisioningRecipeCreated"]["id"]
        missed = await create(api, serialNumber="SN-while-away")  # nobody is listening
    with server_process(**environment) as url:  # a new server process, same database
        api = Api(url, upstream.simulator)
        async with subscription(api, CREATED, {"after": seen}) as stream:
            replayed = (await receive(stream))["provisioningRecipeCreated"]["id"]
    assert seen == second["event"]["id"]
    assert replayed == missed["event"]["id"]

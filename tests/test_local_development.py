"""Local development: the development token of `make serve` and switched-off
authentication serve only requests made on this host directly (a loopback peer and
Host, no proxy, no page of another origin); the token lives in one process only. The
embedded simulator keeps out of the access log and keeps its control API to itself."""

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from support import Api, api_server, embedded_service, schema_at
from test_auth import WAIT_S, assert_unauthenticated, printed_token

from models.principal import ALL_ORGANIZATIONS, SCOPES
from resolvers.auth import Unauthenticated
from resolvers.database import create_engine, sessions
from resolvers.tokens import TokenStore
from server.settings import SIMULATOR_MOUNT
from soap.simulator.background import serving
from soap.simulator.server import create_app as standalone_simulator

RECIPES = "{ provisioningRecipes(first: 1) { totalCount } }"
HISTORY = """{ device(kind: ESN, identifier: "09123456123") {
  provisioningHistory(first: 1) { totalCount } } }"""


@pytest.fixture
async def developer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Api]:
    """`make serve`: the service with its development token, which ``Api.token`` holds."""
    for api in api_server(tmp_path, auth_dev_token=True):
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            await http.get(f"{api.base_url}/healthz")  # answered once the start is done
        api.token = printed_token(capsys.readouterr().out)
        yield api


def port(api: Api) -> int:
    return int(api.base_url.rsplit(":", 1)[1])


async def page(api: Api, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        response = await http.get(
            f"{api.base_url}/graphql", headers={"accept": "text/html", **headers}
        )
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()
    assert response.headers["cache-control"] == "no-store"  # it may carry the token
    return response.text


async def post(api: Api, headers: dict[str, str], authorization: str | None) -> httpx.Response:
    if authorization is not None:
        headers = {**headers, "Authorization": authorization}
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        return await http.post(f"{api.base_url}/graphql", json={"query": RECIPES}, headers=headers)


async def connection_init(
    api: Api, payload: dict[str, str], *, host: str | None = None, headers: dict | None = None
) -> int | None:
    """The close code a graphql-transport-ws connection_init gets (None: acknowledged),
    the upgrade naming ``host`` (a name that resolves to this host, as rebinding makes)."""
    url = api.ws_url if host is None else f"ws://{host}/graphql"
    with socket.create_connection(("127.0.0.1", port(api))) as sock:
        async with websockets.connect(
            url,
            sock=sock,
            subprotocols=["graphql-transport-ws"],
            additional_headers=headers or {},
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            try:
                async with asyncio.timeout(WAIT_S):
                    while json.loads(await ws.recv())["type"] != "connection_ack":
                        pass
                return None
            except websockets.ConnectionClosed:
                return ws.close_code


def local_requests(port: int) -> list[dict[str, str]]:
    return [
        {},  # Host: 127.0.0.1:<port>
        {"Host": f"localhost:{port}"},
        {"Host": f"[::1]:{port}"},
        {"Host": "localhost"},
        {"Sec-Fetch-Site": "none"},  # an address typed into the browser
        {
            "Host": f"localhost:{port}",
            "Origin": f"http://localhost:{port}",
            "Sec-Fetch-Site": "same-origin",
        },
    ]


REBOUND_HOSTS = [
    "rebind.example:8000",
    "rebind.example",
    "127.0.0.1.nip.io",
    "localhost.rebind.example",
    "user@localhost",
    "localhost:notaport",
    "",
]
FORWARDING_HEADERS = [
    {"X-Forwarded-For": "203.0.113.9"},
    {"X-Forwarded-For": "127.0.0.1"},
    {"X-Forwarded-Host": "rebind.example"},
    {"X-Forwarded-Proto": "https"},
    {"Forwarded": "for=203.0.113.9;host=rebind.example"},
    {"X-Real-IP": "203.0.113.9"},
    {"Via": "1.1 proxy"},
    {"CF-Connecting-IP": "203.0.113.9"},
]


def cross_origin_headers(port: int) -> list[dict[str, str]]:
    return [
        {"Origin": "http://rebind.example:8000"},
        {"Origin": "null"},
        {"Origin": f"http://localhost:{port}"},  # Host is 127.0.0.1:<port>: another origin
        {"Origin": "http://127.0.0.1:1"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]


async def assert_no_token_for(api: Api, headers: dict[str, str]) -> None:
    """The page is served without the token, and the token does not work either."""
    assert api.token not in await page(api, headers)
    assert "pgr_" not in await page(api, headers)
    assert_unauthenticated(await post(api, headers, f"Bearer {api.token}"))


async def test_dev_token_prefilled_for_a_browser_on_this_host(developer):
    for headers in local_requests(port(developer)):
        assert developer.token in await page(developer, headers), headers
        response = await post(developer, headers, f"Bearer {developer.token}")
        assert response.json()["data"] == {"provisioningRecipes": {"totalCount": 0}}, headers


async def test_dev_token_not_prefilled_for_rebound_host(developer):
    for host in REBOUND_HOSTS:
        await assert_no_token_for(developer, {"Host": host})


async def test_dev_token_not_prefilled_for_forwarded_request(developer):
    for headers in FORWARDING_HEADERS:
        await assert_no_token_for(developer, headers)
    # As the issue reproduced it: a proxy on this host relaying a rebound name.
    await assert_no_token_for(
        developer, {"Host": "rebind.example:8000", "X-Forwarded-For": "203.0.113.9"}
    )


async def test_dev_token_not_prefilled_for_cross_origin_page(developer):
    for headers in cross_origin_headers(port(developer)):
        await assert_no_token_for(developer, headers)


async def test_dev_token_works_over_a_websocket_from_this_host_only(developer):
    authorization = {"Authorization": f"Bearer {developer.token}"}
    assert await connection_init(developer, authorization) is None
    assert (
        await connection_init(developer, authorization, host=f"localhost:{port(developer)}") is None
    )
    assert await connection_init(developer, authorization, host="rebind.example:8000") == 4403
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    assert await connection_init(developer, authorization, headers=forwarded) == 4403


async def test_dev_token_does_not_work_on_another_replica(tmp_path, capsys):
    """Two processes' worth of service on one SQLite database, as replicas share one:
    each has its own token, and neither accepts the other's."""

    async def started(api: Api) -> str:
        assert (await post(api, {}, None)).status_code == 401  # answered: started
        return printed_token(capsys.readouterr().out)

    for first in api_server(tmp_path, auth_dev_token=True):
        first.token = await started(first)
        for second in api_server(tmp_path, auth_dev_token=True):
            second.token = await started(second)
            assert first.token != second.token
            for api, theirs in ((first, second.token), (second, first.token)):
                assert (await post(api, {}, f"Bearer {api.token}")).status_code == 200
                assert_unauthenticated(await post(api, {}, f"Bearer {theirs}"))
                assert theirs not in await page(api, {})


async def test_auth_disabled_refuses_forwarded_request(tmp_path):
    for api in api_server(tmp_path, auth_disabled=True):
        for headers in local_requests(port(api)):
            assert (await post(api, headers, None)).status_code == 200, headers
        refused = [
            *({"Host": host} for host in REBOUND_HOSTS),
            *FORWARDING_HEADERS,
            *cross_origin_headers(port(api)),
        ]
        for headers in refused:
            assert_unauthenticated(await post(api, headers, None))
        assert await connection_init(api, {}) is None
        assert await connection_init(api, {}, host="rebind.example:8000") == 4403
        assert await connection_init(api, {}, headers={"X-Real-IP": "203.0.113.9"}) == 4403


async def test_embedded_simulator_calls_are_logged_at_debug_only(api, caplog):
    caplog.set_level(logging.DEBUG, logger="provgraph.access")
    await api.query(HISTORY)
    lines = [record for record in caplog.records if record.name == "provgraph.access"]
    simulator = [r for r in lines if str(r.path).startswith(SIMULATOR_MOUNT)]
    graphql = [r for r in lines if r.path == "/graphql"]
    assert len(simulator) == api.calls() + api.calls("LogIn") + api.calls("GetDeviceList")
    assert simulator
    assert {r.levelno for r in simulator} == {logging.DEBUG}
    assert [r.levelno for r in graphql] == [logging.INFO]


async def control(base: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        return await http.post(
            f"{base}{SIMULATOR_MOUNT}/_control",
            json={"fail": [{"kind": "http503", "times": 5}]},
        )


async def test_embedded_simulator_control_api_is_off_unless_enabled(tmp_path):
    for base in embedded_service(tmp_path):
        assert (await control(base)).status_code == 404
    for base in embedded_service(tmp_path, simulator_control=True):
        switched_on = await control(base)
        assert switched_on.status_code == 200
        assert "calls" in switched_on.json()


async def test_standalone_simulator_serves_its_control_api():
    with serving(standalone_simulator()) as base:
        response = await control(base)
    assert response.status_code == 200
    assert response.json()["knobs"]["latency_s"] == 0


async def test_the_control_api_refuses_a_knob_value_it_cannot_serve():
    with serving(standalone_simulator()) as base:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            url = f"{base}{SIMULATOR_MOUNT}/_control"
            refused = await http.post(url, json={"attributes_namespace": "elsewhere"})
            knobs = (await http.get(url)).json()["knobs"]
    assert refused.status_code == 400
    assert "attributes_namespace" in refused.json()["error"]
    assert knobs["attributes_namespace"] == "device"


async def test_a_development_token_row_of_an_earlier_version_is_revoked(tmp_path: Path):
    """Earlier versions kept the development token as a database row with every scope and
    no expiry, valid on every replica sharing the database: migrating revokes it."""
    url = f"sqlite+aiosqlite:///{tmp_path}/earlier.db"
    engine = create_engine(url)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(schema_at(url, "head"))
            await connection.run_sync(schema_at(url, "0004", down=True))
        tokens = TokenStore(sessions(engine))
        earlier = await tokens.create("development", [ALL_ORGANIZATIONS], SCOPES)
        kept = await tokens.create("ci", [ALL_ORGANIZATIONS], ["history:read"])
        async with engine.begin() as connection:
            await connection.run_sync(schema_at(url, "head"))
        with pytest.raises(Unauthenticated):
            await tokens.verify(earlier.secret)
        assert (await tokens.verify(kept.secret)).scopes == {"history:read"}
    finally:
        await engine.dispose()

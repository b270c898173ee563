"""WebSockets keep to their credential and its limits, over both protocols: revocation and
expiry close an open socket, operations count against the rate limit, refused credentials
are limited per address, handshakes per credential, and subscriptions are capped per
credential."""

import asyncio
import json
import socket as stdlib_socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
import websockets
from support import Api, api_server, bearer
from test_auth import token_store
from test_resilience import Clock

from models.principal import ALL_ORGANIZATIONS, SCOPES
from server.ratelimit import CHECKS_PER_ADDRESS
from server.testing import authorization

WAIT_S = 30  # an upper bound for an answer or a close, never a synchronisation
TRANSPORT, LEGACY = "graphql-transport-ws", "graphql-ws"
PROTOCOLS = [TRANSPORT, LEGACY]
CREATED = 'subscription { provisioningRecipeCreated(after: "0") { id } }'
"""Every event from the first: one made after subscribing arrives whenever it joins."""
CREATE = """mutation { createProvisioningRecipe(input: {owner: {},
  organizationUid: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", brand: "b"}) { event { id } } }"""


class Socket:
    """A raw WebSocket client of either protocol, connected and acknowledged."""

    def __init__(self, connection: websockets.ClientConnection, protocol: str) -> None:
        self.connection = connection
        self.protocol = protocol

    async def start(self, operation_id: str, query: str) -> None:
        kind = "subscribe" if self.protocol == TRANSPORT else "start"
        payload = {"query": query}
        await self.connection.send(
            json.dumps({"id": operation_id, "type": kind, "payload": payload})
        )

    async def stop(self, operation_id: str) -> None:
        kind = "complete" if self.protocol == TRANSPORT else "stop"
        await self.connection.send(json.dumps({"id": operation_id, "type": kind}))

    async def stopped(self, operation_id: str) -> None:
        """Stops an operation, and waits until the server has."""
        await self.stop(operation_id)
        if self.protocol == LEGACY:
            assert (await self.answer(operation_id))["type"] == "complete"
            return
        # Messages are handled in order: once the ping is answered, so is the complete.
        await self.connection.send(json.dumps({"type": "ping"}))
        while (await self.receive())["type"] != "pong":
            pass

    async def receive(self) -> dict:
        """The next message, keep-alives skipped."""
        async with asyncio.timeout(WAIT_S):
            while True:
                message = json.loads(await self.connection.recv())
                if message["type"] != "ka":
                    return message

    async def answer(self, operation_id: str) -> dict:
        """The next message about one operation."""
        while (message := await self.receive()).get("id") != operation_id:
            pass
        return message

    async def closed(self) -> tuple[list[dict], int | None, str | None]:
        """Everything up to the server's close, and its code and reason."""
        received = []
        try:
            while True:
                received.append(await self.receive())
        except websockets.ConnectionClosed:
            return received, self.connection.close_code, self.connection.close_reason


def error_of(message: dict) -> dict:
    """The error an ``error`` message carries (a list in one protocol, one in the other)."""
    assert message["type"] == "error", message
    payload = message["payload"]
    return payload[0] if isinstance(payload, list) else payload


def data_type(protocol: str) -> str:
    return "next" if protocol == TRANSPORT else "data"


@asynccontextmanager
async def raw_socket(api: Api, protocol: str) -> AsyncIterator[websockets.ClientConnection]:
    async with websockets.connect(api.ws_url, subprotocols=[protocol]) as connection:
        yield connection


async def init(connection: websockets.ClientConnection, token: str) -> dict:
    await connection.send(json.dumps({"type": "connection_init", "payload": authorization(token)}))
    async with asyncio.timeout(WAIT_S):
        while (message := json.loads(await connection.recv()))["type"] == "ka":
            pass
    return message


@asynccontextmanager
async def socket(api: Api, protocol: str, token: str | None = None) -> AsyncIterator[Socket]:
    async with raw_socket(api, protocol) as connection:
        assert (await init(connection, token or api.token))["type"] == "connection_ack"
        yield Socket(connection, protocol)


async def create_recipe(api: Api, token: str) -> str:
    body = await api.query(CREATE, headers=authorization(token))
    return body["data"]["createProvisioningRecipe"]["event"]["id"]


async def subscribed(api: Api, opened: Socket, token: str) -> None:
    """Starts a subscription on the socket and sees an event arrive on it."""
    await opened.start("1", CREATED)
    event_id = await create_recipe(api, token)
    delivered = await opened.answer("1")
    assert delivered["type"] == data_type(opened.protocol)
    assert delivered["payload"]["data"]["provisioningRecipeCreated"]["id"] == event_id


def assert_forbidden(protocol: str, received: list[dict], code: int | None, reason: str) -> None:
    assert code == 4403
    if protocol == LEGACY:
        (error,) = [m for m in received if m["type"] == "connection_error"]
        assert error["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
        assert error["payload"]["message"] == reason


# --- Revocation and expiry -----------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_revoked_token_closes_open_socket(tmp_path: Path, protocol: str):
    for api in api_server(tmp_path, ws_recheck_s=0.1):
        async with token_store(tmp_path) as tokens:
            issued = await tokens.create("dashboard", [ALL_ORGANIZATIONS], SCOPES)
            async with socket(api, protocol, issued.secret) as opened:
                await subscribed(api, opened, issued.secret)
                assert issued.token.id is not None
                await tokens.revoke(issued.token.id)
                received, code, reason = await opened.closed()
    assert reason == "The token has been revoked."
    assert_forbidden(protocol, received, code, "The token has been revoked.")
    assert not [m for m in received if m["type"] == data_type(protocol)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_new_operation_checks_the_token_again(tmp_path: Path, protocol: str):
    # Re-checked every hour only: the operation itself must find the revocation.
    for api in api_server(tmp_path, ws_recheck_s=3600):
        async with token_store(tmp_path) as tokens:
            issued = await tokens.create("dashboard", [ALL_ORGANIZATIONS], SCOPES)
            async with socket(api, protocol, issued.secret) as opened:
                assert issued.token.id is not None
                await tokens.revoke(issued.token.id)
                await opened.start("1", "{ __typename }")
                received, code, _ = await opened.closed()
    assert_forbidden(protocol, received, code, "The token has been revoked.")
    assert not [m for m in received if m["type"] == data_type(protocol)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_expired_jwt_closes_open_socket(tmp_path: Path, protocol: str):
    # The service's clock says when the token has expired, and it moves only when told:
    # the token holds until then, however slow the run. PyJWT's own check of `exp`, on
    # the wall clock, is an hour away. Re-checked every hour only: the close comes from
    # the token's own expiry.
    expires = int(time.time()) + 3600
    clock = Clock()
    clock.now = expires - 0.5
    token = bearer(subject="short-lived", exp=expires)
    for api in api_server(tmp_path, clock, ws_recheck_s=3600, auth_jwt_leeway_s=0):
        event_id = await create_recipe(api, api.token)
        async with socket(api, protocol, token) as opened:
            await running(opened, "1", event_id)  # the token holds: the socket serves
            clock.advance(1)
            received, code, reason = await opened.closed()
    assert reason == "The token has expired."
    assert_forbidden(protocol, received, code, "The token has expired.")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_second_connection_init_cannot_switch_credentials(tmp_path: Path, protocol: str):
    # Were the socket to take on another credential, it would still count under the
    # first one, and the other's cap would not see its subscriptions.
    for api in api_server(tmp_path, max_subscriptions_per_credential=1):
        event_id = await create_recipe(api, api.token)
        async with socket(api, protocol) as opened:
            await running(opened, "1", event_id)  # the credential's one subscription
            await opened.connection.send(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": authorization(bearer(subject="someone-else")),
                    }
                )
            )
            received, code, reason = await opened.closed()
    assert code == 4429
    assert reason == "Too many initialisation requests"
    assert not [m for m in received if m["type"] == "connection_ack"]
    if protocol == LEGACY:
        (error,) = [m for m in received if m["type"] == "connection_error"]
        assert error["payload"]["extensions"]["code"] == "TOO_MANY_INITIALISATION_REQUESTS"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_token_store_outage_does_not_close_an_open_socket(
    tmp_path: Path, protocol: str, caplog: pytest.LogCaptureFixture
):
    # Re-checked every hour only: the new operation is the one that asks the store.
    for api in api_server(tmp_path, ws_recheck_s=3600):
        async with token_store(tmp_path) as tokens:
            issued = await tokens.create("dashboard", [ALL_ORGANIZATIONS], SCOPES)
        async with socket(api, protocol, issued.secret) as opened:
            # The store unreachable: its table gone from under it.
            with sqlite3.connect(tmp_path / "provgraph.db") as database:
                database.execute("ALTER TABLE api_tokens RENAME TO api_tokens_away")
            await opened.start("1", "{ __typename }")
            answer = await opened.answer("1")
            # The token held at its last check: the operation runs, as the watcher would
            # let it, and the socket stays open for the next one.
            assert answer["type"] == data_type(protocol)
            await opened.start("2", "{ __typename }")
            assert (await opened.answer("2"))["type"] == data_type(protocol)
    warnings = [
        r for r in caplog.records if r.name == "server.credentials" and r.levelname == "WARNING"
    ]
    assert warnings
    assert issued.secret not in caplog.text


# --- Rate limits -----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_socket_operations_count_against_rate_limit(tmp_path: Path, protocol: str):
    for api in api_server(tmp_path, rate_limit="3/hour"):
        async with socket(api, protocol) as opened:  # the handshake is the first
            for operation_id in ("1", "2"):
                await opened.start(operation_id, "{ __typename }")
                answer = await opened.answer(operation_id)
                assert answer["type"] == data_type(protocol)
            await opened.start("3", "{ __typename }")
            error = error_of(await opened.answer("3"))
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert 0 < error["extensions"]["retryAfter"] <= 3600
            # The socket stays open, and HTTP shares the count.
            await opened.start("4", "{ __typename }")
            assert error_of(await opened.answer("4"))["extensions"]["code"] == "RATE_LIMITED"
            async with httpx.AsyncClient(headers=api.headers) as http:
                refused = await http.post(
                    f"{api.base_url}/graphql", json={"query": "{ __typename }"}
                )
            assert refused.status_code == 429


async def test_failed_authentications_limited_per_address(tmp_path: Path):
    for api in api_server(tmp_path, auth_failure_limit="3/hour"):
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            for _ in range(2):
                wrong = await http.post(
                    f"{api.base_url}/graphql",
                    json={"query": "{ __typename }"},
                    headers=authorization("pgr_guessed"),
                )
                assert wrong.status_code == 401
            async with raw_socket(api, TRANSPORT) as connection:
                with pytest.raises(websockets.ConnectionClosed):
                    await init(connection, "pgr_guessed")
                assert connection.close_code == 4403
            # Three refused: now even a good credential is not looked at.
            refused = await http.post(
                f"{api.base_url}/graphql", json={"query": "{ __typename }"}, headers=api.headers
            )
        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= 3600
        (error,) = refused.json()["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        async with raw_socket(api, TRANSPORT) as connection:
            with pytest.raises(websockets.ConnectionClosed):
                await init(connection, api.token)
        assert connection.close_code == 1013  # try again later
        async with raw_socket(api, LEGACY) as connection:
            refusal = await init(connection, api.token)
        assert refusal["type"] == "connection_error"
        assert refusal["payload"]["extensions"]["code"] == "RATE_LIMITED"


async def test_an_identity_provider_outage_is_no_refused_credential(tmp_path: Path):
    # A JWKS endpoint that refuses connections: the keys are unavailable, which says
    # nothing about the credentials, so they do not count against the address.
    with closed_port() as port:
        for api in api_server(
            tmp_path,
            auth_jwt_public_key=None,
            auth_jwt_jwks_url=f"http://127.0.0.1:{port}/jwks.json",
            auth_failure_limit="30/minute",
        ):
            async with httpx.AsyncClient(timeout=WAIT_S) as http:
                answers = [
                    await http.post(
                        f"{api.base_url}/graphql",
                        json={"query": "{ __typename }"},
                        headers=api.headers,
                    )
                    for _ in range(40)
                ]
    assert {answer.status_code for answer in answers} == {401}
    assert {answer.json()["errors"][0]["message"] for answer in answers} == {
        "The identity provider's keys are unavailable."
    }


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with stdlib_socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


async def test_a_burst_of_wrong_tokens_stays_within_the_failure_limit(tmp_path: Path):
    # All at once: none of them has been counted yet when the others arrive.
    for api in api_server(tmp_path, auth_failure_limit="10/minute"):
        async with httpx.AsyncClient(
            timeout=WAIT_S, limits=httpx.Limits(max_connections=100)
        ) as http:
            answers = await asyncio.gather(
                *(
                    http.post(
                        f"{api.base_url}/graphql",
                        json={"query": "{ __typename }"},
                        headers=authorization(f"pgr_guessed{number}"),
                    )
                    for number in range(100)
                )
            )
    statuses = [answer.status_code for answer in answers]
    # Checked at most CHECKS_PER_ADDRESS at a time, each after the count of the ones
    # before: those in flight as the count reaches the limit are the only excess.
    assert 10 <= statuses.count(401) <= 10 + CHECKS_PER_ADDRESS - 1
    assert statuses.count(429) == 100 - statuses.count(401)


async def test_every_429_has_the_same_shape(tmp_path: Path):
    for api in api_server(tmp_path, rate_limit="1/hour", auth_failure_limit="1/hour"):
        url, query = f"{api.base_url}/graphql", {"query": "{ __typename }"}
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            assert (await http.post(url, json=query, headers=api.headers)).status_code == 200
            over_requests = await http.post(url, json=query, headers=api.headers)
            wrong = await http.post(url, json=query, headers=authorization("pgr_guessed"))
            assert wrong.status_code == 401
            over_failures = await http.post(url, json=query, headers=api.headers)
    for refused in (over_requests, over_failures):
        assert refused.status_code == 429
        retry_after = int(refused.headers["retry-after"])
        assert 0 < retry_after <= 3600
        (error,) = refused.json()["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["retryAfter"] == retry_after
        assert error["extensions"]["requestId"] == refused.headers["x-request-id"]
        assert error["message"].startswith("Too many")


async def test_many_sockets_behind_one_address_can_connect(tmp_path: Path):
    # Far more sockets from this one address than the limit allows requests: each
    # dashboard counts against its own credential.
    for api in api_server(tmp_path, rate_limit="4/hour"):
        dashboards = [bearer(subject=f"dashboard-{n}") for n in range(12)]
        async with asyncio.TaskGroup() as group:
            for number, token in enumerate(dashboards):
                group.create_task(_connects_and_operates(api, PROTOCOLS[number % 2], token))


async def _connects_and_operates(api: Api, protocol: str, token: str) -> None:
    async with socket(api, protocol, token) as opened:
        await opened.start("1", "{ __typename }")
        assert (await opened.answer("1"))["type"] == data_type(protocol)


async def test_handshakes_count_against_their_credential(tmp_path: Path):
    for api in api_server(tmp_path, rate_limit="2/hour"):
        async with socket(api, TRANSPORT), socket(api, LEGACY):
            async with raw_socket(api, TRANSPORT) as connection:
                with pytest.raises(websockets.ConnectionClosed):
                    await init(connection, api.token)
            assert connection.close_code == 1013
            async with raw_socket(api, LEGACY) as connection:
                refusal = await init(connection, api.token)
            assert refusal["type"] == "connection_error"
            assert refusal["payload"]["extensions"]["code"] == "RATE_LIMITED"
            async with socket(api, TRANSPORT, bearer(subject="someone-else")):
                pass


# --- Caps per credential -----------------------------------------------------------------


async def running(opened: Socket, operation_id: str, event_id: str) -> None:
    """Starts a subscription, and sees it running: it replays the event."""
    await opened.start(operation_id, CREATED)
    answer = await opened.answer(operation_id)
    assert answer["payload"]["data"]["provisioningRecipeCreated"]["id"] == event_id


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscriptions_capped_per_credential(tmp_path: Path, protocol: str):
    for api in api_server(tmp_path, max_subscriptions_per_credential=3):
        event_id = await create_recipe(api, api.token)
        async with socket(api, protocol) as first, socket(api, protocol) as second:
            await running(first, "1", event_id)
            await running(first, "2", event_id)
            await running(second, "3", event_id)
            await second.start("4", CREATED)
            error = error_of(await second.answer("4"))
            assert error["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            assert error["extensions"]["limit"] == 3
            async with socket(api, protocol, bearer(subject="someone-else")) as other:
                await running(other, "1", event_id)  # a count of its own
            await first.stopped("1")  # frees one
            await running(second, "5", event_id)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_per_socket_cap_has_a_code(tmp_path: Path, protocol: str):
    for api in api_server(tmp_path, max_subscriptions_per_credential=1000):
        async with socket(api, protocol) as opened:
            for number in range(100):
                await opened.start(str(number), CREATED)
            await opened.start("100", CREATED)
            error = error_of(await opened.answer("100"))
    assert error["extensions"] == {"code": "TOO_MANY_SUBSCRIPTIONS", "limit": 100}
    assert "one socket" in error["message"]


async def test_a_restarted_operation_counts_once(tmp_path: Path):
    # graphql-ws starts an operation again under an id in use: the one it replaces ends
    # (and says so), and its end must not be taken for the new one's.
    for api in api_server(tmp_path, max_subscriptions_per_credential=2):
        event_id = await create_recipe(api, api.token)
        async with socket(api, LEGACY) as opened:
            for _ in range(3):
                await opened.start("1", CREATED)
                while (answer := await opened.answer("1"))["type"] == "complete":
                    pass
                assert answer["payload"]["data"]["provisioningRecipeCreated"]["id"] == event_id
            await running(opened, "2", event_id)
            await opened.start("3", CREATED)
            error = error_of(await opened.answer("3"))
            assert error["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            await opened.stopped("1")  # frees one
            await running(opened, "4", event_id)

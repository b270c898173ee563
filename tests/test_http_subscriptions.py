"""Subscriptions over HTTP, read off the wire: Apollo's multipart protocol and GraphQL over
SSE (distinct connections mode), held to a WebSocket's rules: organization filtering,
replay with ``after``, the credential checked again, operations counted per credential,
keep-alives, and streams that end at shutdown. The client libraries themselves are run in
tests/test_clients.py."""

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import ANY

import httpx
import pytest
from support import OTHER_ORG, WAIT_S, Api, api_server, bearer, full_input
from test_auth import token_store
from test_resilience import Clock
from test_startup import WAIT_S as PROCESS_WAIT_S
from test_startup import serving_dev

from models.principal import ALL_ORGANIZATIONS, SCOPES
from server.testing import authorization

MULTIPART = 'multipart/mixed;subscriptionSpec="1.0",application/json'
SSE = "text/event-stream"
CREATED = "subscription($after: ID) { provisioningRecipeCreated(after: $after) { id } }"
CREATE = """mutation($input: CreateProvisioningRecipeInput!) {
  createProvisioningRecipe(input: $input) { event { id } }
}"""


@dataclass
class Stream:
    """One streaming response, its messages parsed as they arrive: a multipart part's JSON,
    or an SSE event as {"event": ..., "data": ...} (a comment as {"comment": ...})."""

    response: httpx.Response
    accept: str
    chunks: AsyncIterator[str] = field(init=False)
    buffer: str = ""
    ended: bool = False

    def __post_init__(self) -> None:
        self.chunks = self.response.aiter_text()

    async def next(self) -> dict | None:
        """The next message; None once the response has ended."""
        while (message := self._parse()) is None:
            if self.ended:
                return None
            try:
                self.buffer += await asyncio.wait_for(anext(self.chunks), WAIT_S)
            except StopAsyncIteration:
                self.ended = True
        return message

    def _parse(self) -> dict | None:
        if self.accept == SSE:
            head, separator, rest = self.buffer.partition("\r\n\r\n")
            if not separator:
                return None
            self.buffer = rest
            if head.startswith(":"):
                return {"comment": head[1:].strip()}
            fields = dict(
                line.split(": ", 1) if ": " in line else (line, "") for line in head.split("\r\n")
            )
            return {
                "event": fields["event"],
                "data": json.loads(fields["data"]) if fields["data"] else None,
            }
        # Multipart: each part ends where the next boundary starts.
        start = self.buffer.find("\r\n\r\n")
        end = self.buffer.find("\r\n--graphql", start + 1)
        if start < 0 or end < 0:
            return None
        body = self.buffer[start + 4 : end]
        self.buffer = self.buffer[end + len("\r\n--graphql") :]
        return json.loads(body)

    async def data(self) -> dict:
        """The next result the operation sends, past keep-alives."""
        while True:
            message = await self.next()
            assert message is not None, "the stream ended"
            if self.accept == SSE:
                if "comment" in message:
                    continue
                assert message["event"] == "next", message
                return message["data"]
            if message == {}:
                continue
            return message["payload"]

    async def rest(self) -> list[dict]:
        """Every message until the response ends."""
        messages = []
        while (message := await self.next()) is not None:
            messages.append(message)
        return messages


@asynccontextmanager
async def streaming(
    api: Api | str, accept: str, query: str, variables: dict | None = None, token: str | None = None
) -> AsyncIterator[Stream]:
    """``query`` streamed from the service ``api`` (or at that URL), as ``token``'s (the
    api's own, unless said)."""
    base_url = api if isinstance(api, str) else api.base_url
    bearer_token = token or (None if isinstance(api, str) else api.token)
    assert bearer_token is not None
    headers = {"accept": accept, **authorization(bearer_token)}
    async with (
        httpx.AsyncClient(timeout=WAIT_S) as http,
        http.stream(
            "POST",
            f"{base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        yield Stream(response, accept)


async def create(api: Api, organization: str = "624c9c670000000000000000ad7cd727") -> str:
    body = await api.query(CREATE, {"input": full_input(organizationUid=organization)})
    return body["data"]["createProvisioningRecipe"]["event"]["id"]


PROTOCOLS = [pytest.param(MULTIPART, id="multipart"), pytest.param(SSE, id="sse")]


@pytest.mark.parametrize("accept", PROTOCOLS)
async def test_a_subscription_streams_events_made_after_it_started(api: Api, accept: str):
    async with streaming(api, accept, CREATED) as stream:
        if accept == MULTIPART:
            assert await stream.next() == {}  # the first keep-alive says the stream is open
        event_id = await create(api)
        result = await stream.data()
    assert result["data"] == {"provisioningRecipeCreated": {"id": event_id}}
    assert stream.response.headers["content-type"].startswith(accept.split(";")[0].split(",")[0])


@pytest.mark.parametrize("accept", PROTOCOLS)
async def test_replay_with_after_and_organization_filtering(api: Api, accept: str):
    first = await create(api)
    mine = await create(api, OTHER_ORG)
    theirs = await create(api)
    # Sees only OTHER_ORG's events: of the three after "0", the second alone.
    only_other = bearer(subject="other", organizations=[OTHER_ORG])
    async with streaming(api, accept, CREATED, {"after": "0"}, only_other) as stream:
        assert (await stream.data())["data"]["provisioningRecipeCreated"]["id"] == mine
        later = await create(api, OTHER_ORG)
        assert (await stream.data())["data"]["provisioningRecipeCreated"]["id"] == later
    async with streaming(api, accept, CREATED, {"after": first}) as stream:
        assert (await stream.data())["data"]["provisioningRecipeCreated"]["id"] == mine
        assert (await stream.data())["data"]["provisioningRecipeCreated"]["id"] == theirs


@pytest.mark.parametrize("accept", PROTOCOLS)
async def test_a_query_streams_one_result_and_ends(api: Api, accept: str):
    async with streaming(api, accept, "{ __typename }") as stream:
        messages = [m for m in await stream.rest() if m != {}]
    if accept == MULTIPART:
        assert messages == [{"payload": {"data": {"__typename": "Query"}, "extensions": ANY}}]
        return
    assert messages[0] == {
        "event": "next",
        "data": {"data": {"__typename": "Query"}, "extensions": messages[0]["data"]["extensions"]},
    }
    assert messages[-1] == {"event": "complete", "data": None}


async def test_a_subscription_without_a_stream_is_refused_with_a_way_forward(api: Api):
    async with httpx.AsyncClient(headers=api.headers) as http:
        response = await http.post(f"{api.base_url}/graphql", json={"query": CREATED})
    assert response.status_code == 400
    assert "text/event-stream" in response.text
    assert "WebSocket" in response.text


@pytest.mark.parametrize("accept", PROTOCOLS)
async def test_a_revoked_token_ends_the_stream_with_an_error(tmp_path: Path, accept: str):
    for api in api_server(tmp_path, ws_recheck_s=0.1):
        async with token_store(tmp_path) as tokens:
            issued = await tokens.create("dashboard", [ALL_ORGANIZATIONS], SCOPES)
            async with streaming(api, accept, CREATED, {"after": "0"}, issued.secret) as stream:
                event_id = await create(api)
                assert (await stream.data())["data"]["provisioningRecipeCreated"]["id"] == event_id
                assert issued.token.id is not None
                await tokens.revoke(issued.token.id)
                last = [m for m in await stream.rest() if m not in ({}, {"comment": "ping"})]
    error = {"message": "The token has been revoked.", "extensions": {"code": "UNAUTHENTICATED"}}
    if accept == MULTIPART:
        assert last == [{"payload": None, "errors": [error]}]
    else:
        assert last == [
            {"event": "next", "data": {"errors": [error]}},
            {"event": "complete", "data": None},
        ]


@pytest.mark.parametrize("accept", PROTOCOLS)
async def test_an_expired_jwt_ends_the_stream(tmp_path: Path, accept: str):
    # The service's clock decides, and moves only when told (as in test_sockets.py).
    expires = int(Clock().now) + 3600
    clock = Clock()
    clock.now = expires - 0.5
    token = bearer(subject="short-lived", exp=expires)
    for api in api_server(tmp_path, clock, ws_recheck_s=3600, auth_jwt_leeway_s=0):
        event_id = await create(api)
        async with streaming(api, accept, CREATED, {"after": "0"}, token) as stream:
            assert (await stream.data())["data"]["provisioningRecipeCreated"]["id"] == event_id
            clock.advance(1)
            text = json.dumps(await stream.rest())
    assert "The token has expired." in text
    assert "UNAUTHENTICATED" in text


@pytest.mark.parametrize("accept", PROTOCOLS)
async def test_streams_count_with_sockets_per_credential(tmp_path: Path, accept: str):
    for api in api_server(tmp_path, max_subscriptions_per_credential=1):
        event_id = await create(api)
        async with streaming(api, accept, CREATED, {"after": "0"}) as stream:
            await stream.data()  # running: it counts
            async with httpx.AsyncClient(headers=api.headers) as http:
                refused = await http.post(
                    f"{api.base_url}/graphql",
                    json={"query": CREATED},
                    headers={"accept": accept},
                )
            assert refused.status_code == 429
            assert refused.json()["errors"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            async with streaming(
                api, accept, CREATED, {"after": "0"}, bearer(subject="else")
            ) as other:
                await other.data()  # a count of its own
        # The client went away: its operation no longer counts.
        async with streaming(api, accept, CREATED, {"after": "0"}) as again:
            assert (await again.data())["data"]["provisioningRecipeCreated"]["id"] == event_id


@pytest.mark.parametrize("accept", PROTOCOLS)
async def test_keep_alives_flow_while_no_event_does(tmp_path: Path, accept: str):
    for api in api_server(tmp_path, keep_alive_s=0.05):
        async with streaming(api, accept, CREATED) as stream:
            first, second = await stream.next(), await stream.next()
    keep_alive = {} if accept == MULTIPART else {"comment": "ping"}
    assert first == second == keep_alive


@pytest.mark.parametrize("accept", PROTOCOLS)
async def test_shutdown_ends_open_streams(tmp_path: Path, accept: str):
    # uvicorn waits for every response to end before it exits: a subscription's would
    # never, and a deploy would hang. The stream ends without its closing message, as
    # a dropped connection does, so that clients connect again.
    async with serving_dev(tmp_path) as served, asyncio.timeout(PROCESS_WAIT_S):
        async with streaming(served.base, accept, CREATED, token=served.token) as stream:
            if accept == MULTIPART:
                assert await stream.next() == {}
            served.process.send_signal(signal.SIGTERM)
            rest = await stream.rest()
        # uvicorn exits by the signal it was sent, once it has shut down.
        assert await served.process.wait() == -signal.SIGTERM
    assert [m for m in rest if m not in ({}, {"comment": "ping"})] == []


# --- GraphQL over SSE, single connection mode -------------------------------------------


@asynccontextmanager
async def reserved(
    api: Api, token: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client of ``token``'s (the api's own, unless said) and an event stream's token."""
    headers = authorization(token or api.token)
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=WAIT_S) as http:
        reservation = await http.put("/graphql")
        assert reservation.status_code == 201
        assert reservation.headers["content-type"].startswith("text/plain")
        yield http, reservation.text


@asynccontextmanager
async def connected(http: httpx.AsyncClient, stream_token: str) -> AsyncIterator[Stream]:
    headers = {"accept": SSE, "x-graphql-event-stream-token": stream_token}
    async with http.stream("GET", "/graphql", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        stream = Stream(response, SSE)
        assert await stream.next() == {"comment": "ping"}  # open
        yield stream


async def start(
    http: httpx.AsyncClient,
    stream_token: str,
    operation_id: str,
    query: str,
    variables: dict | None = None,
) -> httpx.Response:
    return await http.post(
        "/graphql",
        json={
            "query": query,
            "variables": variables or {},
            "extensions": {"operationId": operation_id},
        },
        headers={"x-graphql-event-stream-token": stream_token},
    )


async def test_single_connection_mode_runs_operations_on_one_stream(api: Api):
    first = await create(api)
    async with reserved(api) as (http, token), connected(http, token) as stream:
        assert (await start(http, token, "q", "{ __typename }")).status_code == 202
        assert (await start(http, token, "s", CREATED, {"after": "0"})).status_code == 202
        messages = [await stream.next() for _ in range(3)]
        query_result = next(m for m in messages if m["event"] == "next" and m["data"]["id"] == "q")
        assert query_result["data"]["payload"]["data"] == {"__typename": "Query"}
        assert {"event": "complete", "data": {"id": "q"}} in messages
        replayed = next(m for m in messages if m["event"] == "next" and m["data"]["id"] == "s")
        assert replayed["data"]["payload"]["data"]["provisioningRecipeCreated"]["id"] == first
        # An id in use is refused; a stopped operation sends nothing more.
        assert (await start(http, token, "s", CREATED)).status_code == 409
        stopped = await http.delete(
            "/graphql", params={"operationId": "s"}, headers={"x-graphql-event-stream-token": token}
        )
        assert stopped.status_code == 200
        assert (await start(http, token, "t", CREATED)).status_code == 202
        later = await create(api)
        message = await stream.next()
    assert message == {"event": "next", "data": {"id": "t", "payload": message["data"]["payload"]}}
    assert message["data"]["payload"]["data"]["provisioningRecipeCreated"]["id"] == later


async def test_a_reserved_stream_is_its_credentials_alone_and_opens_once(api: Api):
    async with reserved(api) as (http, token), connected(http, token):
        again = await http.get(
            "/graphql", headers={"accept": SSE, "x-graphql-event-stream-token": token}
        )
        assert again.status_code == 409
        async with httpx.AsyncClient(
            base_url=api.base_url, headers=authorization(bearer(subject="other"))
        ) as other:
            stolen = await start(other, token, "x", "{ __typename }")
            unknown = await start(other, "no-such-token", "x", "{ __typename }")
    assert stolen.status_code == unknown.status_code == 404
    assert stolen.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_single_connection_operations_count_and_end_with_the_credential(tmp_path: Path):
    for api in api_server(tmp_path, ws_recheck_s=0.1, max_subscriptions_per_credential=1):
        async with token_store(tmp_path) as tokens:
            issued = await tokens.create("dashboard", [ALL_ORGANIZATIONS], SCOPES)
            async with (
                reserved(api, issued.secret) as (http, token),
                connected(http, token) as stream,
            ):
                assert (await start(http, token, "1", CREATED)).status_code == 202
                created = await create(api)
                assert (await stream.next())["data"]["payload"]["data"][
                    "provisioningRecipeCreated"
                ]["id"] == created
                refused = await start(http, token, "2", CREATED)
                assert refused.status_code == 429
                assert refused.json()["errors"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
                assert issued.token.id is not None
                await tokens.revoke(issued.token.id)
                rest = [m for m in await stream.rest() if m != {"comment": "ping"}]
    error = {"message": "The token has been revoked.", "extensions": {"code": "UNAUTHENTICATED"}}
    assert rest == [
        {"event": "next", "data": {"id": "1", "payload": {"errors": [error]}}},
        {"event": "complete", "data": {"id": "1"}},
    ]

"""Input no operation can take is refused in our words, as BAD_USER_INPUT, before it
reaches storage, the upstream or a cursor, and changes nothing: never a (masked) 500."""

import asyncio
import json

import httpx
import pytest
import websockets
from gql import Client, GraphQLRequest, gql
from support import RECIPES, Api, create, document, full_input

from models.instants import InvalidInstant, format_instant, parse_instant
from server.http import MAX_JSON_DEPTH

CREATE = document("CreateRecipe")
CREATED = gql(document("RecipeCreated"))
HISTORY = document("DeviceHistory")
WAIT_S = 30  # an upper bound for an answer, never a synchronisation
NOT_TEXT = "text must not hold NUL (U+0000) or unpaired surrogates (U+D800 to U+DFFF)."


async def post(api: Api, body: bytes | str, **headers: str) -> httpx.Response:
    """A raw POST /graphql: ``json=`` could not carry what these tests need to send."""
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            f"{api.base_url}/graphql",
            content=body,
            headers={**api.headers, "Content-Type": "application/json", **headers},
        )


def refusal(response: httpx.Response) -> str:
    """The message of a whole-request 400 BAD_USER_INPUT."""
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    return error["message"]


def graphql_error(body: dict) -> dict:
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    return error


async def recipe_count(api: Api) -> int:
    body = await api.query(RECIPES, {"first": 0})
    return body["data"]["provisioningRecipes"]["totalCount"]


def nested(depth: int, innermost: str = "1") -> str:
    return "[" * depth + innermost + "]" * depth


async def test_non_utf8_body_is_400(api):
    recipe = json.dumps({"query": CREATE, "variables": {"input": full_input(brand="BRAND")}})
    latin1 = recipe.replace("BRAND", "Br\u00e4nd").encode("latin-1")
    assert refusal(await post(api, latin1)) == "The request body is not UTF-8 text."
    utf16 = json.dumps({"query": "{ __typename }"}).encode("utf-16")
    assert refusal(await post(api, utf16)) == "The request body is not UTF-8 text."
    assert await recipe_count(api) == 0


async def test_deeply_nested_variables_are_400(api):
    too_deep = f"The request's JSON is nested more than {MAX_JSON_DEPTH} levels deep."
    for depth in (10_000, MAX_JSON_DEPTH):  # past the C parser's stack, and just past ours
        arrays = f'{{"query": "{{ __typename }}", "variables": {{"v": {nested(depth)}}}}}'
        assert refusal(await post(api, arrays)) == too_deep
    objects = '{"query": "{ __typename }", "variables": ' + '{"v": ' * 10_000 + "1"
    assert refusal(await post(api, objects + "}" * 10_001)) == too_deep
    # The deepest input the schema has is far inside the bound.
    body = await api.query(CREATE, {"input": full_input()})
    assert body["data"]["createProvisioningRecipe"]["userErrors"] == []


async def test_numbers_too_long_to_read_are_400(api):
    # Python reads integers of at most 4,300 digits; JSON itself sets no bound.
    body = '{"query": "query($n: Int) { __typename }", "variables": {"n": 1' + "0" * 5_000 + "}}"
    assert refusal(await post(api, body)) == "The request's JSON holds a number too long to read."


async def test_deeply_nested_websocket_messages_close_as_invalid(api):
    async with websockets.connect(api.ws_url, subprotocols=["graphql-transport-ws"]) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": api.headers}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await socket.send(nested(10_000))
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400  # an invalid message, as the protocol says


@pytest.mark.parametrize(
    ("variables", "where"),
    [
        ({"filter": {"serialNumber": "SN\u0000"}}, "variables.filter.serialNumber"),
        ({"filter": {"organizationUid": "\ud800"}}, "variables.filter.organizationUid"),
        ({"after": "\udfff"}, "variables.after"),
    ],
)
async def test_nul_and_lone_surrogates_never_reach_storage(recipe_api, variables, where):
    # json.dumps escapes them as \u0000 and \ud800, which is how a JSON client sends them.
    body = json.dumps({"query": RECIPES, "variables": variables})
    assert refusal(await post(recipe_api, body)) == f"{where}: {NOT_TEXT}"


async def test_nul_in_a_document_literal_is_refused(recipe_api):
    literal = '{ provisioningRecipes(filter: {serialNumber: "SN\\u0000"}) { totalCount } }'
    assert refusal(await post(recipe_api, json.dumps({"query": literal}))) == f"query: {NOT_TEXT}"
    braced = literal.replace("\\u0000", "\\u{0}")
    assert refusal(await post(recipe_api, json.dumps({"query": braced}))) == f"query: {NOT_TEXT}"
    for document_text in (literal, literal.replace("\\u0000", "\x00")):  # over GET too
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.get(
                f"{recipe_api.base_url}/graphql",
                params={"query": document_text},
                headers=recipe_api.headers,
            )
        assert refusal(response) == f"query: {NOT_TEXT}"
    # An escaped backslash is text, not an escape: "\\u0000" is six harmless characters.
    text = literal.replace("\\u0000", "\\\\u0000")
    body = (await post(recipe_api, json.dumps({"query": text}))).json()
    assert body["data"]["provisioningRecipes"]["totalCount"] == 0


async def test_lone_surrogates_in_a_recipe_change_nothing(recipe_api):
    recipe = {"query": CREATE, "variables": {"input": full_input(brand="\ud800")}}
    message = refusal(await post(recipe_api, json.dumps(recipe)))
    assert message == f"variables.input.brand: {NOT_TEXT}"
    assert await recipe_count(recipe_api) == 0


@pytest.mark.parametrize(
    "after",
    ["\u00b2", "\u0661", "9" * 5_000, str(2**63), "-1", "1.0", " 1"],
    ids=["superscript", "arabic-indic", "5000-digits", "2**63", "negative", "decimal", "space"],
)
async def test_subscription_after_must_be_ascii_digits(api, after):
    # Two events: an Arabic-Indic one read as event 1 would replay the second, not refuse.
    for serial in ("SN-1", "SN-2"):
        assert (await create(api, serialNumber=serial))["userErrors"] == []
    async with Client(transport=api.websocket()) as session:
        stream = session.subscribe(GraphQLRequest(CREATED, variable_values={"after": after}))
        try:
            async with asyncio.timeout(WAIT_S):
                with pytest.raises(Exception, match="after is not an event id") as refused:
                    await anext(stream)
        finally:
            await stream.aclose()
    assert "BAD_USER_INPUT" in repr(refused.value)


async def test_subscriptions_over_plain_http_are_400(api):
    # A request that accepts no stream: the answer says which would do.
    body = json.dumps({"query": document("RecipeCreated"), "variables": {"after": "\u00b2"}})
    assert refusal(await post(api, body)) == (
        "A subscription needs a stream: a WebSocket at /graphql (graphql-transport-ws or "
        'graphql-ws), or a request that accepts multipart/mixed;subscriptionSpec="1.0" or '
        "text/event-stream."
    )


@pytest.mark.parametrize(
    "text",
    [
        "2017-01-02T12:00:48+25:00",
        "2017-01-02T12:00:48-24:00",
        "2017-01-02T12:00:48+23:60",
        "2017-01-02T12:00:48+99:99",
    ],
)
def test_offset_beyond_a_day_is_refused(text):
    with pytest.raises(InvalidInstant):
        parse_instant(text)


def test_offsets_up_to_a_day_are_read():
    assert format_instant(parse_instant("2017-01-02T23:59:00+23:59")) == "2017-01-02T00:00:00Z"
    assert format_instant(parse_instant("2017-01-01T00:01:00-23:59")) == "2017-01-02T00:00:00Z"


@pytest.mark.parametrize(
    "text",
    [
        "2017-01-02T\u0661\u0662:00:48Z",  # Arabic-Indic 12
        "2017-01-02T12:00:48.\u0661Z",
        "2017-01-02T12:00:48+\u0660\u0661:00",
    ],
)
def test_instant_digits_are_ascii(text):
    with pytest.raises(InvalidInstant):
        parse_instant(text)


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-23:59", "0001-01-01T00:00:00+00:01"])
def test_instants_outside_what_the_upstream_can_hold_are_refused(text):
    with pytest.raises(InvalidInstant):
        parse_instant(text)


async def test_a_bad_offset_in_a_query_is_bad_user_input_and_costs_no_call(api):
    device = api.simulator.fleet.by_name("seed-esn").primary
    variables = {
        "kind": device.kind.upper(),
        "identifier": device.identifier,
        "occurredAfter": "2016-01-01T00:00:00+25:00",
    }
    body = await api.query(HISTORY, variables, expect_errors=True)
    error = graphql_error(body)
    assert "'2016-01-01T00:00:00+25:00' is not an ISO-8601 date-time" in error["message"]
    assert "at most \u00b123:59" in error["message"]
    assert api.calls() == 0

"""Query.provisioningRecipeEvents: the recipe events the service still keeps, newest last,
and where a live feed goes on from them (latestEventId as the subscription's ``after``);
occurredAt on every event, alike from the query, the mutations and the subscription."""

from dataclasses import replace

import pytest
from gql import gql
from support import (
    ORG,
    OTHER_ORG,
    Api,
    api_server,
    assert_seed_shape,
    bearer,
    create,
    full_input,
)
from test_subscriptions import receive, subscription

from models.principal import RECIPES_READ, SCOPES

RECENT = """query Recent($organizationUid: String, $last: Int, $before: String) {
  provisioningRecipeEvents(organizationUid: $organizationUid, last: $last, before: $before) {
    edges {
      cursor
      node {
        __typename
        ... on DeviceProvisioningRecipeCreated { id occurredAt json }
        ... on DeviceProvisioningRecipeStatusUpdated { id occurredAt json }
      }
    }
    pageInfo { hasPreviousPage hasNextPage startCursor endCursor }
    latestEventId
  }
}"""
# The mutations' own documents (tests/queries) do not ask for the time; these do.
CREATE_TIMED = """mutation ($input: CreateProvisioningRecipeInput!) {
  createProvisioningRecipe(input: $input) {
    recipe { uid createdAt }
    event { id occurredAt json }
  }
}"""
UPDATE_TIMED = """mutation ($input: UpdateProvisioningRecipeStatusInput!) {
  updateProvisioningRecipeStatus(input: $input) {
    recipe { updatedAt }
    event { id occurredAt json }
  }
}"""
LIVE = gql(
    """subscription ($after: ID) {
  provisioningRecipeEvents(after: $after) {
    ... on DeviceProvisioningRecipeCreated { id occurredAt }
    ... on DeviceProvisioningRecipeStatusUpdated { id occurredAt }
  }
}"""
)
NO_EVENT = "0" * 20


def as_caller(api: Api, organizations=(ORG,), scopes=SCOPES) -> Api:
    return replace(api, token=bearer("reader", organizations, scopes))


async def recent(api: Api, **variables) -> dict:
    body = await api.query(RECENT, variables)
    return body["data"]["provisioningRecipeEvents"]


def ids(page: dict) -> list[str]:
    return [edge["node"]["id"] for edge in page["edges"]]


async def test_events_come_newest_last_with_their_time_as_the_mutations_gave_them(recipe_api):
    api = recipe_api
    assert await recent(api) == {
        "edges": [],
        "pageInfo": {
            "hasPreviousPage": False,
            "hasNextPage": False,
            "startCursor": None,
            "endCursor": None,
        },
        "latestEventId": NO_EVENT,
    }
    first = await create(api, serialNumber="SN-1")
    creation = {"input": full_input(serialNumber="SN-2")}
    made = (await api.query(CREATE_TIMED, creation))["data"]["createProvisioningRecipe"]
    failed = {"input": {"uid": made["recipe"]["uid"], "status": "FAILED"}}
    changed = (await api.query(UPDATE_TIMED, failed))["data"]["updateProvisioningRecipeStatus"]

    page = await recent(api)
    nodes = [edge["node"] for edge in page["edges"]]
    assert [n["id"] for n in nodes] == [
        first["event"]["id"],
        made["event"]["id"],
        changed["event"]["id"],
    ]
    assert [e["cursor"] for e in page["edges"]] == ids(page)
    assert [n["__typename"] for n in nodes] == [
        "DeviceProvisioningRecipeCreated",
        "DeviceProvisioningRecipeCreated",
        "DeviceProvisioningRecipeStatusUpdated",
    ]
    # What the mutations answered, time included, is what the log reads back.
    assert [{k: v for k, v in n.items() if k != "__typename"} for n in nodes[1:]] == [
        made["event"],
        changed["event"],
    ]
    assert nodes[0]["json"] == first["event"]["json"]
    assert_seed_shape(nodes[0]["json"])  # the time is no part of the event's JSON
    assert [n["occurredAt"] for n in nodes] == sorted(n["occurredAt"] for n in nodes)
    assert made["event"]["occurredAt"] >= made["recipe"]["createdAt"]
    assert changed["event"]["occurredAt"] >= changed["recipe"]["updatedAt"]
    assert page["latestEventId"] == changed["event"]["id"] == page["pageInfo"]["endCursor"]
    assert page["pageInfo"]["hasPreviousPage"] is False


async def test_pages_go_back_with_before_to_the_first_event(recipe_api):
    api = recipe_api
    made = [(await create(api, serialNumber=f"SN-{i}"))["event"]["id"] for i in range(5)]
    newest = await recent(api, last=2)
    assert ids(newest) == made[3:]
    assert newest["pageInfo"]["hasPreviousPage"] is True
    assert newest["pageInfo"]["hasNextPage"] is False
    middle = await recent(api, last=2, before=newest["pageInfo"]["startCursor"])
    assert ids(middle) == made[1:3]
    assert middle["pageInfo"]["hasPreviousPage"] is True
    assert middle["pageInfo"]["hasNextPage"] is True
    oldest = await recent(api, last=2, before=middle["pageInfo"]["startCursor"])
    assert ids(oldest) == made[:1]
    assert oldest["pageInfo"]["hasPreviousPage"] is False
    # Where the log stands does not depend on the page.
    assert {p["latestEventId"] for p in (newest, middle, oldest)} == {made[-1]}
    position = await recent(api, last=0)
    assert (ids(position), position["latestEventId"]) == ([], made[-1])


async def test_only_the_callers_organizations_are_read(recipe_api):
    api = recipe_api
    mine = (await create(api, serialNumber="SN-mine"))["event"]["id"]
    theirs = (await create(api, serialNumber="SN-theirs", organizationUid=OTHER_ORG))["event"]["id"]
    also_mine = (await create(api, serialNumber="SN-mine-2"))["event"]["id"]
    reader = as_caller(api, organizations=[ORG.upper()])  # credentials may shout
    assert ids(await recent(reader)) == [mine, also_mine]
    # Asking for another organization by name shows nothing of it.
    assert ids(await recent(reader, organizationUid=OTHER_ORG)) == []
    # The one page asked for is the caller's last events, not the log's last rows.
    one = await recent(reader, last=1)
    assert (ids(one), one["pageInfo"]["hasPreviousPage"]) == ([also_mine], True)
    everyone = as_caller(api, organizations=["*"])
    assert ids(await recent(everyone, organizationUid=OTHER_ORG.upper())) == [theirs]
    assert ids(await recent(everyone)) == [mine, theirs, also_mine]


async def test_a_caller_without_recipes_read_is_refused(api):
    await create(api)
    lacking = as_caller(api, scopes=[s for s in SCOPES if s != RECIPES_READ])
    body = await lacking.query(RECENT, {}, expect_errors=True)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["path"] == ["provisioningRecipeEvents"]
    assert RECIPES_READ in error["message"]


@pytest.mark.parametrize(
    ("variables", "argument"),
    [
        ({"last": 501}, "last"),
        ({"last": -1}, "last"),
        ({"before": "not-an-id"}, "before"),
        ({"before": "\u00b9"}, "before"),  # a digit to str.isdigit, not to int()
        ({"before": "9" * 21}, "before"),
        ({"before": str(2**63)}, "before"),
    ],
)
async def test_bad_input_is_a_typed_error(api, variables, argument):
    body = await api.query(RECENT, variables, expect_errors=True)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": argument}, error


async def test_the_page_is_priced_by_last(tmp_path):
    for api in api_server(tmp_path, max_query_cost=100):
        body = await api.query(RECENT, {"last": 101}, expect_errors=True)
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["cost"] == 101
        assert (await recent(api, last=100))["edges"] == []


async def test_a_feed_read_then_subscribed_misses_nothing_and_repeats_nothing(recipe_api):
    api = recipe_api
    before = [(await create(api, serialNumber=f"SN-{i}"))["event"]["id"] for i in range(3)]
    page = await recent(api)
    assert ids(page) == before
    # Made between the read and the subscription: the replay from latestEventId has it.
    between = (await create(api, serialNumber="SN-between"))["event"]["id"]
    async with subscription(api, LIVE, {"after": page["latestEventId"]}) as stream:
        after = (await create(api, serialNumber="SN-after"))["event"]["id"]
        got = [(await receive(stream))["provisioningRecipeEvents"] for _ in range(2)]
    assert [g["id"] for g in got] == [between, after]
    shown = {n["id"]: n["occurredAt"] for n in (e["node"] for e in (await recent(api))["edges"])}
    assert {g["id"]: g["occurredAt"] for g in got} == {i: shown[i] for i in (between, after)}


async def test_from_an_empty_log_the_position_still_misses_nothing(recipe_api):
    api = recipe_api
    page = await recent(api)
    assert page["latestEventId"] == NO_EVENT
    first = (await create(api))["event"]["id"]
    async with subscription(api, LIVE, {"after": page["latestEventId"]}) as stream:
        second = (await create(api, serialNumber="SN-2"))["event"]["id"]
        got = [(await receive(stream))["provisioningRecipeEvents"]["id"] for _ in range(2)]
    assert got == [first, second]

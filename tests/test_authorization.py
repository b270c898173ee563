"""Who may do what: every root field and subscription, probed without credentials, with
every scope but the one it needs, with only that scope, and from another organization.

Every probe must fail closed: a refusal, or an answer that holds nothing of the other
organization, and nothing changed by a refused mutation.
"""

import asyncio
from dataclasses import replace

import httpx
import pytest
import websockets
from gql import Client, GraphQLRequest, gql
from support import ORG, OTHER_ORG, Api, api_server, bearer, create, document, full_input

from models.principal import SCOPES

SEED_MEID = {"kind": "MEID", "identifier": "54689785258599"}
YEAR_2017 = {"occurredAfter": "2017-01-01T00:00:00Z", "occurredBefore": "2018-01-01T00:00:00Z"}
REPORT_INPUT = {"devices": [SEED_MEID], **YEAR_2017, "groupBy": ["EVENT_TYPE"]}
WAIT_S = 30  # an upper bound for a delivery, never a synchronisation

# Each root field with the scope it needs and a request that would succeed with it.
# ``{recipe}`` and ``{job}`` stand for ids made by the test before it probes.
ROOT_FIELDS = {
    "node(Device)": ("history:read", 'query { node(id: "{device}") { id } }', {}),
    "node(ProvisioningRecipe)": ("recipes:read", 'query { node(id: "{recipe}") { id } }', {}),
    "node(ProvisioningReportJob)": ("reports:read", 'query { node(id: "{job}") { id } }', {}),
    "device": (
        "history:read",
        "query ($kind: DeviceIdentifierKind!, $identifier: String!) "
        "{ device(kind: $kind, identifier: $identifier) { id } }",
        SEED_MEID,
    ),
    "devices": ("history:read", "query { devices(first: 1) { edges { cursor } } }", {}),
    "provisioningRecipe": (
        "recipes:read",
        'query { provisioningRecipe(uid: "{uid}") { uid } }',
        {},
    ),
    "provisioningRecipes": (
        "recipes:read",
        "query { provisioningRecipes { edges { node { uid } } } }",
        {},
    ),
    "provisioningReport": (
        "reports:read",
        "query ($input: ProvisioningReportInput!) "
        "{ provisioningReport(input: $input) { totalEvents } }",
        {"input": REPORT_INPUT},
    ),
    "provisioningReportJob": (
        "reports:read",
        'query { provisioningReportJob(id: "{job}") { state } }',
        {},
    ),
    "createProvisioningRecipe": (
        "recipes:write",
        "mutation ($input: CreateProvisioningRecipeInput!) "
        "{ createProvisioningRecipe(input: $input) { recipe { uid } userErrors { code } } }",
        {"input": {"organizationUid": ORG, "owner": {}, "brand": "probe"}},
    ),
    "updateProvisioningRecipeStatus": (
        "recipes:write",
        'mutation { updateProvisioningRecipeStatus(input: {uid: "{uid}", status: APPLIED}) '
        "{ recipe { status } userErrors { code } } }",
        {},
    ),
    "startProvisioningReport": (
        "reports:write",
        "mutation ($input: ProvisioningReportInput!) "
        "{ startProvisioningReport(input: $input) { job { id } } }",
        {"input": REPORT_INPUT},
    ),
    "cancelProvisioningReport": (
        "reports:write",
        'mutation { cancelProvisioningReport(id: "{job}") { state } }',
        {},
    ),
}
SUBSCRIPTIONS = {
    "provisioningRecipeCreated": (
        "recipes:read",
        "subscription { provisioningRecipeCreated { id } }",
    ),
    "provisioningRecipeEvents": (
        "recipes:read",
        "subscription { provisioningRecipeEvents { __typename } }",
    ),
    "provisioningReportProgress": (
        "reports:read",
        'subscription { provisioningReportProgress(jobId: "{job}") { state } }',
    ),
}
EXPORTS = {
    "provisioning-history.csv": ("history:read", {"kind": "MEID", **SEED_MEID, **YEAR_2017}),
    "provisioning-report.csv": (
        "reports:read",
        {"devices": "MEID:54689785258599", **YEAR_2017},
    ),
}


def caller(api: Api, scopes=SCOPES, organizations=(ORG,), subject: str = "caller") -> Api:
    return replace(api, token=bearer(subject, organizations, scopes))


async def fixtures(api: Api) -> dict[str, str]:
    """A recipe of ORG and a finished report job of ORG's caller, to aim probes at."""
    owner = caller(api)
    recipe = (await create(owner))["recipe"]
    started = await owner.query(ROOT_FIELDS["startProvisioningReport"][1], {"input": REPORT_INPUT})
    job = started["data"]["startProvisioningReport"]["job"]["id"]
    device = (await owner.query(ROOT_FIELDS["device"][1], SEED_MEID))["data"]["device"]["id"]
    return {"recipe": recipe["id"], "uid": recipe["uid"], "job": job, "device": device}


def filled(text: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        text = text.replace("{" + name + "}", value)
    return text


async def recipe_count(api: Api) -> int:
    body = await caller(api, organizations=("*",)).query(
        "query { provisioningRecipes { totalCount } }"
    )
    return body["data"]["provisioningRecipes"]["totalCount"]


@pytest.mark.parametrize("field", ROOT_FIELDS)
async def test_no_credentials_is_401_for_every_root_field(api, field):
    ids = await fixtures(api)
    _, query, variables = ROOT_FIELDS[field]
    recipes, calls = await recipe_count(api), api.calls()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{api.base_url}/graphql", json={"query": filled(query, ids), "variables": variables}
        )
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (await recipe_count(api), api.calls()) == (recipes, calls)


@pytest.mark.parametrize("field", ROOT_FIELDS)
async def test_a_missing_scope_is_forbidden_and_changes_nothing(api, field):
    ids = await fixtures(api)
    scope, query, variables = ROOT_FIELDS[field]
    recipes, calls = await recipe_count(api), api.calls()
    lacking = caller(api, scopes=[s for s in SCOPES if s != scope])
    body = await lacking.query(filled(query, ids), variables, expect_errors=True)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"], body
    assert scope in body["errors"][0]["message"]
    assert (await recipe_count(api), api.calls()) == (recipes, calls)


@pytest.mark.parametrize("field", ROOT_FIELDS)
async def test_the_one_scope_a_field_needs_is_enough(api, field):
    ids = await fixtures(api)
    scope, query, variables = ROOT_FIELDS[field]
    body = await caller(api, scopes=[scope]).query(filled(query, ids), variables)
    assert body["data"] is not None


@pytest.mark.parametrize("name", SUBSCRIPTIONS)
async def test_subscriptions_need_credentials_and_their_scope(api, name):
    ids = await fixtures(api)
    scope, query = SUBSCRIPTIONS[name]
    async with websockets.connect(api.ws_url, subprotocols=["graphql-transport-ws"]) as socket:
        await socket.send('{"type": "connection_init"}')
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), WAIT_S)
    assert closed.value.rcvd.code == 4403
    lacking = caller(api, scopes=[s for s in SCOPES if s != scope])
    async with Client(transport=lacking.websocket()) as session:
        stream = session.subscribe(GraphQLRequest(filled(query, ids)))
        with pytest.raises(Exception, match=f"needs the {scope} scope"):
            await asyncio.wait_for(anext(stream), WAIT_S)


@pytest.mark.parametrize("export", EXPORTS)
async def test_exports_need_their_scope(api, export):
    scope, params = EXPORTS[export]
    calls = api.calls()
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        anonymous = await http.get(f"/exports/{export}", params=params)
        lacking = caller(api, scopes=[s for s in SCOPES if s != scope])
        refused = await http.get(f"/exports/{export}", params=params, headers=lacking.headers)
        assert api.calls() == calls  # refused before any upstream call
        allowed = await http.get(
            f"/exports/{export}", params=params, headers=caller(api, scopes=[scope]).headers
        )
    assert anonymous.status_code == 401
    assert refused.status_code == 403
    assert [e["extensions"]["code"] for e in refused.json()["errors"]] == ["FORBIDDEN"]
    assert scope in refused.json()["errors"][0]["message"]
    assert allowed.status_code == 200, allowed.text
    assert api.calls() > calls


async def test_another_organization_sees_nothing_of_ours_through_any_query(api):
    ids = await fixtures(api)
    stranger = caller(api, organizations=(OTHER_ORG,), subject="stranger")
    theirs = (await create(stranger, organizationUid=OTHER_ORG, serialNumber="SN-theirs"))["recipe"]
    body = await stranger.query(
        filled(
            """query {
              byNode: node(id: "{recipe}") { id }
              byUid: provisioningRecipe(uid: "{uid}") { uid }
              list: provisioningRecipes { totalCount edges { node { uid organizationUid } } }
              filtered: provisioningRecipes(filter: {organizationUid: "{org}"}) { totalCount }
              job: provisioningReportJob(id: "{job}") { id }
              jobNode: node(id: "{job}") { id }
            }""",
            {**ids, "org": ORG},
        )
    )
    data = body["data"]
    assert data["byNode"] is None
    assert data["byUid"] is None
    assert data["list"]["totalCount"] == 1
    assert [e["node"]["uid"] for e in data["list"]["edges"]] == [theirs["uid"]]
    assert data["filtered"]["totalCount"] == 0
    assert data["job"] is None
    assert data["jobNode"] is None


async def test_another_organization_cannot_create_or_change_our_recipes(api):
    ids = await fixtures(api)
    stranger = caller(api, organizations=(OTHER_ORG,), subject="stranger")
    recipes = await recipe_count(api)
    created = await create(stranger)  # for ORG, not the stranger's organization
    assert created["recipe"] is None
    assert created["event"] is None
    assert [e["code"] for e in created["userErrors"]] == ["FORBIDDEN"]
    changed = await stranger.query(filled(ROOT_FIELDS["updateProvisioningRecipeStatus"][1], ids))
    payload = changed["data"]["updateProvisioningRecipeStatus"]
    assert payload["recipe"] is None
    assert payload["userErrors"]
    cancelled = await stranger.query(filled(ROOT_FIELDS["cancelProvisioningReport"][1], ids))
    assert cancelled["data"]["cancelProvisioningReport"] is None
    owner = caller(api)
    still = await owner.query(filled('query { provisioningRecipe(uid: "{uid}") { status } }', ids))
    assert still["data"]["provisioningRecipe"]["status"] == "PENDING"
    assert await recipe_count(api) == recipes


async def test_another_organizations_events_never_reach_a_subscriber(api):
    await fixtures(api)  # ORG's first event is in the outbox: replay must skip it too
    stranger = caller(api, organizations=(OTHER_ORG,), subject="stranger")
    owner = caller(api)
    first_theirs = None
    for query, field in (
        (document("RecipeCreated"), "provisioningRecipeCreated"),
        (document("RecipeEvents"), "provisioningRecipeEvents"),
    ):
        # From the start of the outbox (replay), then live, with no organization argument.
        async with Client(transport=stranger.websocket()) as session:
            stream = session.subscribe(GraphQLRequest(gql(query), variable_values={"after": "0"}))
            await create(owner, serialNumber="SN-ours-live")
            theirs = await create(stranger, organizationUid=OTHER_ORG, serialNumber="SN-theirs")
            received = await asyncio.wait_for(anext(stream), WAIT_S)
            await stream.aclose()
        first_theirs = first_theirs or theirs["event"]["id"]
        # Events arrive in emission order: had one of ours passed the filter, it would
        # come before the stranger's first.
        assert received[field]["id"] == first_theirs


async def test_a_report_job_is_its_callers_alone(api):
    ids = await fixtures(api)
    colleague = caller(api, subject="colleague")  # same organization, another caller
    body = await colleague.query(filled('query { provisioningReportJob(id: "{job}") { id } }', ids))
    assert body["data"]["provisioningReportJob"] is None
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        csv = await http.get(
            "/exports/provisioning-report.csv",
            params={"jobId": ids["job"]},
            headers=colleague.headers,
        )
    assert csv.status_code == 404
    async with Client(transport=colleague.websocket()) as session:
        stream = session.subscribe(
            GraphQLRequest(filled(SUBSCRIPTIONS["provisioningReportProgress"][1], ids))
        )
        with pytest.raises(StopAsyncIteration):  # ends at once, as for a job that is not
            await asyncio.wait_for(anext(stream), WAIT_S)


async def test_events_name_the_authenticated_caller_as_originator(tmp_path):
    for api in api_server(tmp_path, auth_jwt_account_id_claim="account_id"):
        acting = replace(api, token=bearer("acting", (ORG,), SCOPES, account_id=4242))
        event = (await create(acting))["event"]["json"]
        assert event["payload"]["originator"] == {"accountId": 4242, "organizationUid": ORG}


# --- Scopes below the root: nested fields and payloads check their own ------------------

RECIPE_HISTORY = """query ($uid: String!) {
  provisioningRecipe(uid: $uid) { uid device { provisioningHistory { totalCount } } }
}"""
DEVICE_RECIPES = """query ($kind: DeviceIdentifierKind!, $identifier: String!) {
  device(kind: $kind, identifier: $identifier) {
    id provisioningRecipes { totalCount edges { node { uid serialNumber } } }
  }
}"""
DEVICE_ONLY = """query ($kind: DeviceIdentifierKind!, $identifier: String!) {
  device(kind: $kind, identifier: $identifier) { id }
}"""


def refusals(body: dict) -> list[tuple[str, list, bool]]:
    """(code, path, names the scope) of each error."""
    return [(e["extensions"]["code"], e["path"], "scope" in e["message"]) for e in body["errors"]]


def upstream_calls(body: dict) -> int:
    return body["extensions"]["cost"]["upstreamCalls"]


async def test_recipes_read_token_cannot_read_history_through_recipe_device(api):
    recipe = (await create(caller(api), device=SEED_MEID))["recipe"]
    reader = caller(api, scopes=["recipes:read"])
    history_calls = api.calls()
    body = await reader.query(RECIPE_HISTORY, {"uid": recipe["uid"]}, expect_errors=True)
    assert body["data"] == {"provisioningRecipe": {"uid": recipe["uid"], "device": None}}
    assert refusals(body) == [("FORBIDDEN", ["provisioningRecipe", "device"], True)]
    assert "history:read" in body["errors"][0]["message"]
    assert upstream_calls(body) == 0
    assert api.calls() == history_calls
    both = caller(api, scopes=["recipes:read", "history:read"])
    allowed = await both.query(RECIPE_HISTORY, {"uid": recipe["uid"]})
    assert allowed["data"]["provisioningRecipe"]["device"]["provisioningHistory"]["totalCount"] > 0


async def test_recipes_write_token_cannot_read_history_through_created_payload(api):
    await caller(api).query(DEVICE_ONLY, SEED_MEID)  # the device list, cached before
    writer = caller(api, scopes=["recipes:write"])
    history_calls = api.calls()
    body = await writer.query(
        """mutation ($input: CreateProvisioningRecipeInput!) {
          createProvisioningRecipe(input: $input) {
            recipe { uid status device { provisioningHistory { totalCount } } }
            event { type }
            userErrors { code }
          }
        }""",
        {"input": full_input(device=SEED_MEID)},
        expect_errors=True,
    )
    payload = body["data"]["createProvisioningRecipe"]
    # What the caller has just written it may read back; the device behind it it may not.
    assert payload["userErrors"] == []
    assert payload["event"] == {"type": "Device.ProvisioningRecipeCreated"}
    assert payload["recipe"]["status"] == "PENDING"
    assert payload["recipe"]["device"] is None
    assert refusals(body) == [("FORBIDDEN", ["createProvisioningRecipe", "recipe", "device"], True)]
    assert upstream_calls(body) == 0
    assert api.calls() == history_calls


async def test_history_read_token_cannot_read_recipes_through_device(api):
    await create(caller(api), device=SEED_MEID)
    reader = caller(api, scopes=["history:read"])
    baseline = await reader.query(DEVICE_ONLY, SEED_MEID)  # the device list, cached now
    assert upstream_calls(await reader.query(DEVICE_ONLY, SEED_MEID)) == 0
    body = await reader.query(DEVICE_RECIPES, SEED_MEID, expect_errors=True)
    # provisioningRecipes is non-null: its refusal nulls the device, the nearest nullable.
    assert body["data"] == {"device": None}
    assert refusals(body) == [("FORBIDDEN", ["device", "provisioningRecipes"], True)]
    assert "recipes:read" in body["errors"][0]["message"]
    assert upstream_calls(body) == 0
    assert baseline["data"]["device"]["id"]


async def test_a_devices_recipes_are_only_the_callers_organizations(api):
    ours = (await create(caller(api), device=SEED_MEID))["recipe"]
    stranger = caller(api, organizations=(OTHER_ORG,), subject="stranger")
    theirs = (
        await create(stranger, organizationUid=OTHER_ORG, serialNumber="SN-t", device=SEED_MEID)
    )["recipe"]
    for who, uid in ((caller(api), ours["uid"]), (stranger, theirs["uid"])):
        body = await who.query(DEVICE_RECIPES, SEED_MEID)
        recipes = body["data"]["device"]["provisioningRecipes"]
        assert recipes["totalCount"] == 1
        assert [e["node"]["uid"] for e in recipes["edges"]] == [uid]


async def finished(api: Api, job: str) -> str:
    """The job's final state, from its progress subscription (its last message)."""
    state = None
    async with Client(transport=api.websocket()) as session:
        query = GraphQLRequest(
            "subscription ($id: ID!) { provisioningReportProgress(jobId: $id) { state } }",
            variable_values={"id": job},
        )
        async for message in session.subscribe(query):
            state = message["provisioningReportProgress"]["state"]
    assert state is not None
    return state


async def test_reports_write_token_cannot_read_a_job_result_through_cancel(api):
    ids = await fixtures(api)
    assert await finished(caller(api), ids["job"]) == "SUCCEEDED"
    writer = caller(api, scopes=["reports:write"])  # the job's owner, with another token
    body = await writer.query(
        filled(
            'mutation { cancelProvisioningReport(id: "{job}") { state result { totalEvents } } }',
            ids,
        ),
        expect_errors=True,
    )
    assert body["data"] == {"cancelProvisioningReport": {"state": "SUCCEEDED", "result": None}}
    assert refusals(body) == [("FORBIDDEN", ["cancelProvisioningReport", "result"], True)]
    reader = caller(api, scopes=["reports:read"])
    read = await reader.query(
        filled('query { provisioningReportJob(id: "{job}") { result { totalEvents } } }', ids)
    )
    assert read["data"]["provisioningReportJob"]["result"]["totalEvents"] > 0

"""Recipes through the API, on SQLite and PostgreSQL: mutations, events, queries."""

import asyncio

import pytest
from support import OTHER_ORG, RECIPES, SEED_EXAMPLE, UPDATE, assert_seed_shape, create


async def test_a_created_recipe_emits_the_seed_event(recipe_api):
    result = await create(recipe_api)
    assert result["userErrors"] == []
    event = result["event"]["json"]
    assert_seed_shape(event)
    example = SEED_EXAMPLE["payload"]
    payload = event["payload"]
    assert payload["status"] == "Pending"
    assert payload["macAddress"] == "29:9F:66:C8:0A:1B"  # stored in one canonical form
    for key in ("confirmedOwnership", "serialNumber", "model", "brand", "deviceName"):
        assert payload[key] == example[key]
    assert "originator" not in payload  # the local development caller has no account
    assert "errorMessage" not in payload
    assert result["recipe"]["uid"] == payload["uid"]
    assert len(payload["uid"]) == 32
    assert payload["uid"] == payload["uid"].lower()
    assert result["event"]["id"] == event["id"]
    assert result["recipe"]["status"] == "PENDING"


async def test_absent_owner_organizations_are_null_and_optional_keys_absent(recipe_api):
    result = await create(
        recipe_api,
        owner={},
        serialNumber=None,
        macAddress=None,
        model=None,
        tagUids=None,
        deviceName=None,
        policyUid=None,
        locationUid=None,
        confirmedOwnership=None,
    )
    payload = result["event"]["json"]["payload"]
    assert payload["owner"] == {
        "ownershipType": "organization",
        "organizationUid": None,
        "parentCompanyUid": None,
    }
    assert list(payload) == ["owner", "organizationUid", "status", "brand", "uid", "type"]
    assert_seed_shape(result["event"]["json"])


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"organizationUid": ""}, ["input", "organizationUid"], "REQUIRED"),
        ({"organizationUid": "xyz"}, ["input", "organizationUid"], "INVALID_UID"),
        ({"brand": "  "}, ["input", "brand"], "REQUIRED"),
        ({"brand": "b" * 129}, ["input", "brand"], "TOO_LONG"),
        ({"serialNumber": "s" * 129}, ["input", "serialNumber"], "TOO_LONG"),
        ({"deviceName": "d" * 257}, ["input", "deviceName"], "TOO_LONG"),
        ({"macAddress": "29:9F:66:C8:0A"}, ["input", "macAddress"], "INVALID_MAC_ADDRESS"),
        ({"macAddress": "GG:9F:66:C8:0A:1B"}, ["input", "macAddress"], "INVALID_MAC_ADDRESS"),
        ({"tagUids": ["nope"]}, ["input", "tagUids", "0"], "INVALID_UID"),
        ({"tagUids": [f"{i:032x}" for i in range(51)]}, ["input", "tagUids"], "TOO_MANY"),
        ({"policyUid": "1234"}, ["input", "policyUid"], "INVALID_UID"),
        ({"locationUid": "z" * 32}, ["input", "locationUid"], "INVALID_UID"),
        (
            {"owner": {"organizationUid": "short"}},
            ["input", "owner", "organizationUid"],
            "INVALID_UID",
        ),
        (
            {"device": {"kind": "IMEI", "identifier": "000000000000000"}},
            ["input", "device"],
            "DEVICE_NOT_FOUND",
        ),
        (
            {"device": {"kind": "IMEI", "identifier": "12'3"}},
            ["input", "device", "identifier"],
            "INVALID_IDENTIFIER",
        ),
        ({"idempotencyKey": "k" * 129}, ["input", "idempotencyKey"], "INVALID"),
    ],
)
async def test_invalid_input_is_a_user_error_and_changes_nothing(recipe_api, changes, field, code):
    result = await create(recipe_api, **changes)
    assert result["recipe"] is None
    assert result["event"] is None
    assert [(e["field"], e["code"]) for e in result["userErrors"]] == [(field, code)]
    listing = await recipe_api.query(RECIPES, {"first": 10})
    assert listing["data"]["provisioningRecipes"]["totalCount"] == 0
    replay = await recipe_api.query("{ provisioningRecipes(first: 1) { totalCount } }")
    assert replay["data"]["provisioningRecipes"]["totalCount"] == 0


async def test_a_retry_with_the_same_idempotency_key_changes_nothing(recipe_api):
    first = await create(recipe_api, idempotencyKey="order-42")
    again = await create(recipe_api, idempotencyKey="order-42")
    assert again["userErrors"] == []
    assert again["recipe"]["uid"] == first["recipe"]["uid"]
    assert again["event"] == first["event"]
    listing = await recipe_api.query(RECIPES, {"first": 10})
    assert listing["data"]["provisioningRecipes"]["totalCount"] == 1

    other = await create(recipe_api, idempotencyKey="order-42", brand="another brand")
    assert other["recipe"] is None
    assert [e["code"] for e in other["userErrors"]] == ["IDEMPOTENCY_KEY_REUSED"]


async def test_concurrent_retries_with_one_key_make_one_recipe(recipe_api):
    results = await asyncio.gather(
        *(create(recipe_api, idempotencyKey="burst-1") for _ in range(8))
    )
    assert len({r["recipe"]["uid"] for r in results}) == 1
    listing = await recipe_api.query(RECIPES, {"first": 10})
    assert listing["data"]["provisioningRecipes"]["totalCount"] == 1


async def test_status_moves_by_the_documented_transitions(recipe_api):
    uid = (await create(recipe_api))["recipe"]["uid"]

    async def move(status, **extra):
        body = await recipe_api.query(UPDATE, {"input": {"uid": uid, "status": status, **extra}})
        return body["data"]["updateProvisioningRecipeStatus"]

    failed = await move(
        "FAILED", errorMessage="Something went wrong", warningMessage="Something went wrong"
    )
    assert failed["recipe"]["status"] == "FAILED"
    assert failed["recipe"]["unsuccessfulRegisterAttemptStatus"] == {
        "warningMessage": "Something went wrong"
    }
    event = failed["event"]["json"]
    assert event["type"] == "Device.ProvisioningRecipeStatusUpdated"
    assert event["payload"]["status"] == "Failed"
    assert event["payload"]["uid"] == uid
    assert event["payload"]["errorMessage"] == "Something went wrong"
    assert event["payload"]["type"] == event["type"]

    assert (await move("APPLIED"))["userErrors"][0]["code"] == "INVALID_TRANSITION"
    assert (await move("PENDING"))["recipe"]["status"] == "PENDING"
    assert (await move("APPLIED"))["recipe"]["status"] == "APPLIED"
    final = await move("PENDING")
    assert final["userErrors"][0]["code"] == "INVALID_TRANSITION"
    assert final["event"] is None


async def test_unknown_recipe_uid_is_a_user_error(recipe_api):
    body = await recipe_api.query(UPDATE, {"input": {"uid": "0" * 32, "status": "APPLIED"}})
    assert body["data"]["updateProvisioningRecipeStatus"]["userErrors"][0]["code"] == "NOT_FOUND"


async def test_recipe_pages_are_keyset_and_stable_under_inserts(recipe_api):
    uids = [(await create(recipe_api, serialNumber=f"SN-{i}"))["recipe"]["uid"] for i in range(7)]
    page = (await recipe_api.query(RECIPES, {"first": 3}))["data"]["provisioningRecipes"]
    assert [e["node"]["uid"] for e in page["edges"]] == uids[:3]
    assert page["pageInfo"]["hasNextPage"] is True
    # Recipes created meanwhile come after the cursor: no duplicate, no skip.
    uids += [(await create(recipe_api, serialNumber="SN-late"))["recipe"]["uid"]]
    seen = [e["node"]["uid"] for e in page["edges"]]
    after = page["pageInfo"]["endCursor"]
    while True:
        page = (await recipe_api.query(RECIPES, {"first": 3, "after": after}))["data"][
            "provisioningRecipes"
        ]
        seen += [e["node"]["uid"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == uids

    back = (await recipe_api.query(RECIPES, {"last": 2}))["data"]["provisioningRecipes"]
    assert [e["node"]["uid"] for e in back["edges"]] == uids[-2:]
    assert back["pageInfo"]["hasPreviousPage"] is True
    before = (
        await recipe_api.query(RECIPES, {"last": 2, "before": back["pageInfo"]["startCursor"]})
    )["data"]["provisioningRecipes"]
    assert [e["node"]["uid"] for e in before["edges"]] == uids[-4:-2]


async def test_recipe_filters(recipe_api):
    a = await create(recipe_api, serialNumber="SN-A", macAddress="00-11-22-33-44-55")
    await create(recipe_api, serialNumber="SN-B", organizationUid=OTHER_ORG)
    await recipe_api.query(UPDATE, {"input": {"uid": a["recipe"]["uid"], "status": "INVALID"}})

    async def uids(filter):
        body = await recipe_api.query(RECIPES, {"first": 10, "filter": filter})
        return [e["node"]["serialNumber"] for e in body["data"]["provisioningRecipes"]["edges"]]

    assert await uids({"organizationUid": OTHER_ORG}) == ["SN-B"]
    assert await uids({"statuses": ["INVALID"]}) == ["SN-A"]
    assert await uids({"statuses": ["PENDING", "APPLIED"]}) == ["SN-B"]
    assert await uids({"macAddress": "001122334455"}) == ["SN-A"]
    assert await uids({"serialNumber": "SN-B"}) == ["SN-B"]
    body = await recipe_api.query(
        RECIPES, {"first": 1, "filter": {"macAddress": "zz"}}, expect_errors=True
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_recipe_links_to_its_device_and_back(recipe_api):
    device = {"kind": "MEID", "identifier": "54689785258599"}
    created = await create(recipe_api, device=device)
    uid = created["recipe"]["uid"]
    body = await recipe_api.query(
        """
        query ($uid: String!, $id: ID!) {
          provisioningRecipe(uid: $uid) { uid device { identifier { kind identifier } } }
          device(kind: MEID, identifier: "54689785258599") {
            provisioningRecipes(first: 5) { edges { node { uid } } totalCount }
          }
          node(id: $id) { ... on ProvisioningRecipe { uid brand } }
        }
        """,
        {"uid": uid, "id": created["recipe"]["id"]},
    )
    data = body["data"]
    assert data["provisioningRecipe"]["device"]["identifier"] == device
    assert data["device"]["provisioningRecipes"]["edges"] == [{"node": {"uid": uid}}]
    assert data["device"]["provisioningRecipes"]["totalCount"] == 1
    assert data["node"] == {"uid": uid, "brand": "example-model"}


async def test_an_unknown_recipe_is_null(recipe_api):
    body = await recipe_api.query('{ provisioningRecipe(uid: "abc") { uid } }')
    assert body["data"]["provisioningRecipe"] is None

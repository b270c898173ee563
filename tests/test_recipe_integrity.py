"""Recipes hold together under concurrency and across tenants, on SQLite and PostgreSQL:
the status machine, idempotency keys, owner organizations, and text a database can keep."""

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from support import (
    CREATE,
    ORG,
    OTHER_ORG,
    POSTGRES_URL,
    UPDATE,
    Api,
    bearer,
    create,
    fresh_postgres,
    full_input,
    schema_at,
)

from models.devices import DeviceIdentifier
from models.principal import LOCAL_DEVELOPER
from resolvers.database import create_engine, migrate, sessions
from resolvers.recipes import NewRecipe, RecipeFilter, RecipeStore

LEGAL = {"Pending": {"Applied", "Failed", "Invalid"}, "Failed": {"Pending"}}
"""The documented transitions; Applied and Invalid are final."""
STATUSES = ["APPLIED", "FAILED", "INVALID", "PENDING"]
REFUSAL = re.compile(r"A (\w+) recipe cannot become (\w+); allowed: .+\.")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """One connection pool for a test's requests: a burst of 50 opens no 50 clients."""
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


def acting_for(api: Api, subject: str, organization: str) -> Api:
    return replace(api, token=bearer(subject, [organization]))


async def mutate(api: Api, document: str, input: dict, http: httpx.AsyncClient) -> dict:
    """The mutation's payload."""
    response = await http.post(
        f"{api.base_url}/graphql",
        json={"query": document, "variables": {"input": input}},
        headers=api.headers,
    )
    body = response.json()
    assert response.status_code == 200, body
    assert "errors" not in body, body["errors"]
    return next(iter(body["data"].values()))


async def stored(api: Api, uid: str) -> str:
    body = await api.query(
        "query ($uid: String!) { provisioningRecipe(uid: $uid) { status } }", {"uid": uid}
    )
    return body["data"]["provisioningRecipe"]["status"]


async def recipe_count(api: Api) -> int:
    body = await api.query("{ provisioningRecipes { totalCount } }")
    return body["data"]["provisioningRecipes"]["totalCount"]


# --- hole 3: the status machine under concurrent updates -----------------------------


async def test_concurrent_status_updates_emit_only_legal_transitions(recipe_api, http):
    # One burst may come through a broken machine unharmed: several make it show.
    for burst in range(4):
        uid = (await create(recipe_api, serialNumber=f"SN-burst-{burst}"))["recipe"]["uid"]
        moves = [STATUSES[(i + burst) % len(STATUSES)] for i in range(50)]
        results = await asyncio.gather(
            *(mutate(recipe_api, UPDATE, {"uid": uid, "status": s}, http) for s in moves)
        )
        events = sorted(
            (r["event"]["json"] for r in results if r["event"] is not None), key=lambda e: e["id"]
        )
        chain = ["Pending"] + [e["payload"]["status"] for e in events]
        for before, after in pairwise(chain):
            assert after in LEGAL.get(before, set()), f"burst {burst}: {before} -> {after}"
        assert all(e["payload"]["uid"] == uid for e in events)
        assert await stored(recipe_api, uid) == chain[-1].upper()
        for result, status in zip(results, moves, strict=True):
            if result["event"] is not None:
                assert result["userErrors"] == []
                assert result["recipe"]["status"] == status
                continue
            # A lost race is refused as an illegal move is, naming a status it then had.
            [error] = result["userErrors"]
            assert (error["field"], error["code"]) == (["input", "status"], "INVALID_TRANSITION")
            current, wanted = REFUSAL.fullmatch(error["message"]).groups()
            assert wanted == status.capitalize()
            assert current in chain
            assert wanted not in LEGAL.get(current, set())


# --- hole 9: idempotency keys belong to their organization and caller -----------------


async def test_idempotency_keys_are_scoped_to_their_organization_and_caller(recipe_api, http):
    alice = acting_for(recipe_api, "alice", ORG)
    bob = acting_for(recipe_api, "bob", OTHER_ORG)
    carol = acting_for(recipe_api, "carol", ORG)  # Alice's organization, another caller
    mine = await mutate(alice, CREATE, full_input(idempotencyKey="order-7"), http)
    assert mine["userErrors"] == []

    theirs = await mutate(
        bob, CREATE, full_input(organizationUid=OTHER_ORG, idempotencyKey="order-7"), http
    )
    assert theirs["userErrors"] == []
    assert theirs["recipe"]["uid"] != mine["recipe"]["uid"]
    assert theirs["recipe"]["organizationUid"] == OTHER_ORG
    assert theirs["event"]["id"] != mine["event"]["id"]
    again = await mutate(
        bob, CREATE, full_input(organizationUid=OTHER_ORG, idempotencyKey="order-7"), http
    )
    assert again["recipe"]["uid"] == theirs["recipe"]["uid"]  # Bob's own key still replays

    colleague = await mutate(carol, CREATE, full_input(idempotencyKey="order-7"), http)
    assert colleague["userErrors"] == []
    assert colleague["recipe"]["uid"] not in {mine["recipe"]["uid"], theirs["recipe"]["uid"]}

    retry = await mutate(alice, CREATE, full_input(idempotencyKey="order-7"), http)
    assert retry["recipe"]["uid"] == mine["recipe"]["uid"]
    assert retry["event"] == mine["event"]
    reuse = await mutate(alice, CREATE, full_input(idempotencyKey="order-7", brand="another"), http)
    assert reuse["recipe"] is None
    assert [e["code"] for e in reuse["userErrors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    assert await recipe_count(recipe_api) == 3


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_the_idempotency_migration_keeps_recipes_and_scopes_their_keys(
    database, tmp_path: Path, request
):
    if database == "postgresql":
        request.getfixturevalue("postgres_url")
        await fresh_postgres()
        url = POSTGRES_URL
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    engine = create_engine(url)

    insert = text(
        "INSERT INTO provisioning_recipes (uid, organization_uid, owner_ownership_type, status,"
        " brand, idempotency_key, created_at, updated_at) VALUES (:uid, :org, 'organization',"
        " 'Pending', 'b', 'order-1', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    try:
        async with engine.begin() as connection:
            await connection.run_sync(schema_at(url, "head"))
            await connection.run_sync(schema_at(url, "0003", down=True))
            await connection.execute(insert, {"uid": "a" * 32, "org": ORG})
        async with engine.begin() as connection:
            await connection.run_sync(schema_at(url, "head"))
            # The same key in another organization, and the same organization for a caller.
            await connection.execute(insert, {"uid": "b" * 32, "org": OTHER_ORG})
            await connection.execute(
                text("UPDATE provisioning_recipes SET idempotency_subject = 'x' WHERE uid = :uid"),
                {"uid": "b" * 32},
            )
            rows = await connection.execute(
                text("SELECT uid FROM provisioning_recipes WHERE idempotency_key = 'order-1'")
            )
            assert sorted(r.uid for r in rows) == ["a" * 32, "b" * 32]
            await connection.execute(text("DELETE FROM provisioning_recipes"))
    finally:
        await engine.dispose()


# --- owner organizations --------------------------------------------------------------


async def test_an_owner_organization_the_caller_does_not_act_for_is_refused(recipe_api, http):
    caller = acting_for(recipe_api, "alice", ORG)
    refused = await mutate(caller, CREATE, full_input(owner={"organizationUid": OTHER_ORG}), http)
    assert refused["recipe"] is None
    assert refused["event"] is None
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [
        (["input", "owner", "organizationUid"], "FORBIDDEN")
    ]
    assert await recipe_count(recipe_api) == 0

    accepted = await mutate(
        caller, CREATE, full_input(owner={"organizationUid": ORG.upper()}), http
    )
    assert accepted["userErrors"] == []
    assert accepted["event"]["json"]["payload"]["owner"]["organizationUid"] == ORG


# --- text no database can keep --------------------------------------------------------


UNSTORABLE = {"NUL": "before\x00after", "lone surrogate": "before\ud800after"}


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path: Path) -> AsyncIterator[RecipeStore]:
    """The recipe store itself: the HTTP edge refuses such text before any resolver runs,
    and the store must hold without it (WebSocket messages, future entry points)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/recipes.db"
    if request.param == "postgresql":
        request.getfixturevalue("postgres_url")
        await fresh_postgres()
        url = POSTGRES_URL
    engine = create_engine(url)
    await migrate(engine)
    yield RecipeStore(sessions(engine))
    await engine.dispose()


async def no_device(_: DeviceIdentifier) -> bool:
    raise AssertionError("no device is named")


@pytest.mark.parametrize("character", UNSTORABLE)
async def test_text_a_database_cannot_keep_is_a_user_error_and_changes_nothing(store, character):
    value = UNSTORABLE[character]
    fields = {
        "brand": "brand",
        "model": "model",
        "serialNumber": "serial_number",
        "deviceName": "device_name",
        "idempotencyKey": "idempotency_key",
    }
    for name, attribute in fields.items():
        new = replace(NewRecipe(organization_uid=ORG, brand="b"), **{attribute: value})
        outcome = await store.create(new, LOCAL_DEVELOPER, no_device)
        assert outcome.recipe is None, name
        assert [(e.field, e.code) for e in outcome.errors] == [
            (["input", name], "INVALID_CHARACTERS")
        ], name
        assert "U+0000" in outcome.errors[0].message
    everything = RecipeFilter()
    assert await store.count(everything, LOCAL_DEVELOPER) == 0

    created = await store.create(
        NewRecipe(organization_uid=ORG, brand="b"), LOCAL_DEVELOPER, no_device
    )
    assert created.recipe is not None
    for name, attribute in (
        ("errorMessage", "error_message"),
        ("warningMessage", "warning_message"),
    ):
        outcome = await store.update_status(
            created.recipe.uid, "Failed", LOCAL_DEVELOPER, **{attribute: value}
        )
        assert outcome.event is None, name
        assert [(e.field, e.code) for e in outcome.errors] == [
            (["input", name], "INVALID_CHARACTERS")
        ], name
    assert (await store.get(created.recipe.uid, LOCAL_DEVELOPER)).status == "Pending"
    assert await store.last_seq() == created.seq

"""Every document of the frontend's (tests/queries/*.graphql), answered and snapshotted.

The clock is pinned, so that a range without an end, and the cursors that sign it, are
the same on every run; what the service makes up afresh each time (recipe uids and the
ids made of them, their timestamps and cursors, report job ids) is normalised.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import (
    QUERIES,
    RANGE,
    WAIT_S,
    FastTier,
    InProcess,
    document,
    full_input,
    in_process,
)
from syrupy.extensions.json import JSONSnapshotExtension

NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
SEED_MEID = {"kind": "MEID", "identifier": "54689785258599"}
SEED_ESN = {"kind": "ESN", "identifier": "09123456123"}
UNKNOWN = {"kind": "IMEI", "identifier": "000000000000000"}


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.fixture
async def api(tier: FastTier, tmp_path: Path) -> AsyncIterator[InProcess]:
    async with in_process(tier, tmp_path, clock=lambda: NOW) as executed:
        yield executed


def normalised(value, varying: tuple[str, ...], names: dict | None = None, path: tuple = ()):
    """``value`` with what is found at each of the ``varying`` key paths (dotted, matched
    at the end of a path: "recipe.id") as a placeholder, one per distinct value, so that
    values equal in the response stay equal in the snapshot: "<id 1>" wherever the first
    such id was."""
    names = {} if names is None else names
    if isinstance(value, dict):
        return {k: normalised(v, varying, names, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v, varying, names, path) for v in value]
    for rule in varying:
        parts = tuple(rule.split("."))
        if value is not None and path[-len(parts) :] == parts:
            return names.setdefault(value, f"<{parts[-1]} {len(names) + 1}>")
    return value


@pytest.mark.parametrize(
    ("name", "variables"),
    [
        pytest.param(
            "DeviceHistory",
            {**SEED_MEID, "first": 5, "occurredAfter": "2017-01-02"},
            id="history-first-page",
        ),
        pytest.param(
            "DeviceHistory",
            {**SEED_MEID, "first": 3, "filter": {"eventTypes": ["Deactivate"]}},
            id="history-filtered",
        ),
        pytest.param("LatestEvents", {**SEED_MEID, "last": 4}, id="latest-events"),
        pytest.param(
            "HistoryCount", {**SEED_MEID, "filter": {"statuses": ["Failure"]}}, id="failure-count"
        ),
        pytest.param("DeviceOverview", SEED_ESN, id="overview"),
        pytest.param("DeviceOverview", UNKNOWN, id="overview-unknown-device"),
        pytest.param("DeviceList", {"first": 3}, id="device-list"),
        pytest.param("NodeDevice", {"id": "RGV2aWNlOm1laWQ6NTQ2ODk3ODUyNTg1OTk"}, id="node"),
        pytest.param(
            "FleetReport",
            {"input": {"devices": [SEED_MEID, SEED_ESN, UNKNOWN], **RANGE, "groupBy": ["STATUS"]}},
            id="fleet-report",
        ),
    ],
)
async def test_frontend_query(api, snapshot_json, name, variables):
    assert await api.query(document(name), variables) == snapshot_json


RECIPE_VARYING = (
    "uid",
    "recipe.id",
    "createdAt",
    "updatedAt",
    "cursor",
    "startCursor",
    "endCursor",
)


async def next_events(stream: AsyncIterator[dict], count: int) -> list[dict]:
    async with asyncio.timeout(WAIT_S):
        return [await anext(stream) for _ in range(count)]


async def test_recipe_documents(api, snapshot_json):
    created = await api.query(document("CreateRecipe"), {"input": full_input(device=SEED_MEID)})
    uid = created["data"]["createProvisioningRecipe"]["recipe"]["uid"]
    first_event = created["data"]["createProvisioningRecipe"]["event"]["id"]
    updated = await api.query(
        document("UpdateRecipeStatus"),
        {
            "input": {
                "uid": uid,
                "status": "FAILED",
                "errorMessage": "Something went wrong",
                "warningMessage": "Try again later",
            }
        },
    )
    await api.query(document("CreateRecipe"), {"input": full_input(serialNumber="SN-2")})
    listed = await api.query(document("Recipes"), {"first": 5})
    async with aclosing(api.subscribe(document("RecipeCreated"), {"after": "0"})) as stream:
        created_events = await next_events(stream, 2)
    async with aclosing(api.subscribe(document("RecipeEvents"), {"after": first_event})) as stream:
        events = await next_events(stream, 2)  # the status update, then the second recipe
    responses = {
        "CreateRecipe": created,
        "UpdateRecipeStatus": updated,
        "Recipes": listed,
        "RecipeCreated": created_events,
        "RecipeEvents": events,
    }
    assert normalised(responses, RECIPE_VARYING) == snapshot_json


async def test_report_job_documents(api, snapshot_json):
    variables = {"input": {"devices": [SEED_MEID, SEED_ESN], **RANGE}}
    started = await api.query(document("StartReport"), variables)
    job_id = started["data"]["startProvisioningReport"]["job"]["id"]
    progress = document("ReportProgress")
    async with asyncio.timeout(WAIT_S):
        watched = [update async for update in api.subscribe(progress, {"jobId": job_id})]
        # The job has ended: a new subscriber hears of its end once, whatever the timing.
        ended = [update async for update in api.subscribe(progress, {"jobId": job_id})]
    assert watched[-1] == ended[-1]
    responses = {"StartReport": started, "ReportProgress": ended}
    assert normalised(responses, ("job.id", "provisioningReportProgress.id")) == snapshot_json


def test_every_document_is_snapshotted():
    snapshotted = {
        "DeviceHistory",
        "LatestEvents",
        "HistoryCount",
        "DeviceOverview",
        "DeviceList",
        "NodeDevice",
        "FleetReport",
        "CreateRecipe",
        "UpdateRecipeStatus",
        "Recipes",
        "RecipeCreated",
        "RecipeEvents",
        "StartReport",
        "ReportProgress",
    }
    # The dashboard's documents are snapshotted in test_dashboard_queries.py.
    documents = {path.stem for path in QUERIES.glob("*.graphql")}
    assert {name for name in documents if not name.startswith("Dashboard")} == snapshotted

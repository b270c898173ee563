"""Every document of the dashboard's (tests/queries/Dashboard*.graphql), answered and
snapshotted, as test_frontend_queries.py does the other frontend's: the clock pinned, what
the service makes up afresh each time normalised."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
from support import QUERIES, WAIT_S, FastTier, InProcess, document, full_input, in_process
from syrupy.extensions.json import JSONSnapshotExtension
from test_frontend_queries import NOW, SEED_ESN, SEED_MEID, UNKNOWN, next_events, normalised

HALF_YEAR = {"occurredAfter": "2016-01-01T00:00:00+01:00", "occurredBefore": "2016-06-30"}
JOB_VARYING = (
    "job.id",
    "provisioningReportProgress.id",
    "cancelProvisioningReport.id",
    "createdAt",
    "finishedAt",
)


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.fixture
async def api(tier: FastTier, tmp_path: Path) -> AsyncIterator[InProcess]:
    async with in_process(tier, tmp_path, clock=lambda: NOW) as executed:
        yield executed


async def test_the_report_and_the_device_list(api, snapshot_json):
    report = await api.query(
        document("DashboardReport"),
        {
            "input": {
                "devices": [SEED_ESN, UNKNOWN],
                **HALF_YEAR,
                "groupBy": ["STATUS", "EVENT_TYPE"],
                "bucket": "MONTH",
                "timeZone": "Europe/Berlin",
            }
        },
    )
    devices = await api.query(document("DashboardDevices"), {"first": 3})
    assert {"DashboardReport": report, "DashboardDevices": devices} == snapshot_json


async def test_a_devices_timeline_pages_back_and_its_recipes(api, snapshot_json):
    timeline = document("DashboardDeviceTimeline")
    variables = {**SEED_MEID, "last": 3, "filter": {"statuses": ["Failure"]}}
    newest = await api.query(timeline, variables)
    history = newest["data"]["device"]["provisioningHistory"]
    before = history["pageInfo"]["startCursor"]
    older = await api.query(timeline, {**variables, "before": before})
    await api.query(document("CreateRecipe"), {"input": full_input(device=SEED_MEID)})
    recipes = await api.query(document("DashboardDeviceRecipes"), {**SEED_MEID, "first": 5})
    unknown = await api.query(timeline, {**UNKNOWN, "last": 3})
    responses = {
        "DashboardDeviceTimeline": [newest, older, unknown],
        "DashboardDeviceRecipes": recipes,
    }
    varying = ("uid", "createdAt", "updatedAt", "cursor", "startCursor")
    assert normalised(responses, varying) == snapshot_json


async def test_the_live_feed(api, snapshot_json):
    created = await api.query(document("CreateRecipe"), {"input": full_input()})
    uid = created["data"]["createProvisioningRecipe"]["recipe"]["uid"]
    await api.query(
        document("UpdateRecipeStatus"),
        {"input": {"uid": uid, "status": "FAILED", "errorMessage": "SIM not found"}},
    )
    recent = await api.query(document("DashboardRecentRecipeEvents"), {"last": 50})
    subscription = api.subscribe(document("DashboardRecipeEvents"), {"after": "0"})
    async with aclosing(subscription) as stream:
        events = await next_events(stream, 2)
    responses = {"DashboardRecentRecipeEvents": recent, "DashboardRecipeEvents": events}
    # The same event has the same time, whichever way it is read.
    assert normalised(responses, ("uid", "occurredAt")) == snapshot_json


async def test_a_report_job_watched_to_its_end_and_cancelled(api, snapshot_json):
    variables = {"input": {"devices": [SEED_MEID, SEED_ESN], **HALF_YEAR, "bucket": "MONTH"}}
    started = await api.query(document("DashboardStartReport"), variables)
    job_id = started["data"]["startProvisioningReport"]["job"]["id"]
    progress = document("DashboardReportProgress")
    async with asyncio.timeout(WAIT_S):
        # The job may have ended already: a late subscriber hears of its end once.
        updates = [update async for update in api.subscribe(progress, {"jobId": job_id})]
    cancelled = await api.query(document("DashboardCancelReport"), {"id": job_id})
    responses = {
        "DashboardStartReport": started,
        "DashboardReportProgress": updates[-1],
        "DashboardCancelReport": cancelled,
    }
    assert normalised(responses, JOB_VARYING) == snapshot_json


def test_every_dashboard_document_is_snapshotted():
    snapshotted = {
        "DashboardReport",
        "DashboardDevices",
        "DashboardDeviceTimeline",
        "DashboardDeviceRecipes",
        "DashboardRecipeEvents",
        "DashboardRecentRecipeEvents",
        "DashboardStartReport",
        "DashboardReportProgress",
        "DashboardCancelReport",
    }
    assert {path.stem for path in QUERIES.glob("Dashboard*.graphql")} == snapshotted

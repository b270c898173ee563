"""The report CSV over a whole account: the same request as GraphQL's without devices, the
device filter's fields as parameters; checked against the simulator's ground truth."""

import asyncio
import csv
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gql import Client, GraphQLRequest, gql
from support import RANGE, START, WAIT_S, Api, api_server, bearer, document

from models.instants import parse_instant
from models.principal import HISTORY_READ, SCOPES
from soap.simulator.fleet import SUB_ACCOUNT

REPORT_CSV = "/exports/provisioning-report.csv"
PROGRESS = gql(document("ReportProgress"))


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[Api]:
    """A service whose reports in a request read at most 50 devices."""
    yield from api_server(tmp_path, report_max_devices=50)


async def get(api: Api, params: list[tuple[str, str]]) -> httpx.Response:
    async with httpx.AsyncClient(headers=api.headers, timeout=60) as http:
        return await http.get(api.base_url + REPORT_CSV, params=params)


def rows_by_device(response: httpx.Response) -> Counter[str]:
    """Counts by the ``device`` column of a CSV grouped by DEVICE alone."""
    assert response.status_code == 200, response.text
    header, *rows = csv.reader(io.StringIO(response.text, newline=""))
    assert header[:2] == ["device", "count"]
    return Counter({row[0]: int(row[1]) for row in rows})


def esn_truth(api: Api) -> Counter[str]:
    """Events in RANGE of every device with an ESN, by it (no history of these crowds 500
    events into one instant, so the upstream delivers them all)."""
    lo, hi = parse_instant(RANGE["occurredAfter"]), parse_instant(RANGE["occurredBefore"])
    counts: Counter[str] = Counter()
    for device in api.simulator.fleet.devices:
        esn = next((i for i in device.identifiers if i.kind == "esn"), None)
        if esn is not None:
            events = api.simulator.fleet.history(device)
            counts[f"ESN:{esn.identifier}"] += sum(lo <= e.occurred_at <= hi for e in events)
    return +counts


async def test_the_report_csv_of_a_whole_account_matches_the_ground_truth(api):
    params = [*RANGE.items(), ("groupBy", "DEVICE"), ("kinds", "ESN")]
    assert rows_by_device(await get(api, params)) == esn_truth(api)
    assert api.calls("GetDeviceList") == 1


async def test_the_report_csv_of_a_whole_account_past_the_cap_says_to_start_a_job(capped):
    response = await get(capped, list(RANGE.items()))
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "REPORT_TOO_LARGE"
    assert error["extensions"]["limit"] == 50
    assert "startProvisioningReport" in error["message"]
    assert capped.calls() == 0


async def test_the_report_csv_of_a_whole_account_job(capped):
    sub_account = {"accountName": SUB_ACCOUNT}
    variables = {"input": {**RANGE, "groupBy": ["DEVICE"], "deviceFilter": sub_account}}
    started = (await capped.query(START, variables))["data"]["startProvisioningReport"]
    job_id = started["job"]["id"]
    async with asyncio.timeout(WAIT_S), Client(transport=capped.websocket()) as session:
        request = GraphQLRequest(PROGRESS, variable_values={"jobId": job_id})
        updates = [u["provisioningReportProgress"] async for u in session.subscribe(request)]
    assert updates[-1]["state"] == "SUCCEEDED"

    by_job = rows_by_device(await get(capped, [("jobId", job_id)]))
    lo, hi = parse_instant(RANGE["occurredAfter"]), parse_instant(RANGE["occurredBefore"])
    fleet = capped.simulator.fleet
    expected = Counter(
        {
            f"{d.primary.kind.upper()}:{d.primary.identifier}": sum(
                lo <= e.occurred_at <= hi for e in fleet.history(d)
            )
            for d in fleet.devices
            if d.account == SUB_ACCOUNT
        }
    )
    assert by_job == +expected


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ([("kinds", "NOPE")], "kinds"),
        ([("kinds", "")], "kinds"),
        ([("accountName", " ")], "accountName"),
        ([("activatedAfter", "soon")], "activatedAfter"),
        (
            [("activatedAfter", "2020-01-01"), ("activatedBefore", "2019-01-01")],
            "activatedAfter",
        ),
        ([("devices", "ESN:09123456123"), ("activatedBefore", "2019-01-01")], "activatedBefore"),
    ],
    ids=["unknown kind", "empty kind", "blank account", "instant", "range", "devices too"],
)
async def test_bad_device_filter_parameters_are_refused_in_our_words(api, params, parameter):
    response = await get(api, [*RANGE.items(), *params])
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert parameter in error["message"]
    assert (api.calls(), api.calls("GetDeviceList")) == (0, 0)


async def test_a_whole_account_needs_history_read_for_the_csv_and_for_a_job(api):
    # Such a report lists the account's devices, which only history:read shows.
    without = [s for s in SCOPES if s != HISTORY_READ]
    api.token = bearer(scopes=without)
    csv_response = await get(api, list(RANGE.items()))
    started = await api.query(START, {"input": dict(RANGE)}, expect_errors=True)
    refused_calls = (api.calls(), api.calls("GetDeviceList"))
    named = await get(api, [*RANGE.items(), ("devices", "ESN:09123456123")])
    assert csv_response.status_code == 403, csv_response.text
    assert csv_response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert [e["extensions"]["code"] for e in started["errors"]] == ["FORBIDDEN"]
    assert started["data"] is None or started["data"]["startProvisioningReport"] is None
    assert refused_calls == (0, 0)
    assert named.status_code == 200, named.text  # devices it names: reports:read alone

"""Report and history CSV exports, checked against the simulator's ground truth."""

import csv
import io
from collections import defaultdict

import httpx
import pytest
from gql import Client, GraphQLRequest, gql
from support import RANGE, START, document, ident, ordinary

from models.devices import DeviceIdentifier
from models.events import ProvisioningEvent
from models.instants import format_api_instant, parse_instant

PROGRESS = gql(document("ReportProgress"))


def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


async def test_the_history_csv_parses_back_to_the_history(api):
    device = api.simulator.fleet.by_name("seed-meid")
    async with httpx.AsyncClient(headers=api.headers) as http:
        response = await http.get(
            f"{api.base_url}/exports/provisioning-history.csv",
            params={
                "kind": "meid",
                "identifier": device.primary.identifier,
                "occurredAfter": "2016-01-01",
                "occurredBefore": "2018-12-31",
                "statuses": ["Success"],
            },
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert (
        'filename="provisioning-history-meid-54689785258599.csv"'
        in (response.headers["content-disposition"])
    )
    rows = parse_csv(response.text)
    assert response.text.endswith("\r\n")
    truth = [e for e in api.simulator.fleet.history(device) if e.status == "Success"]
    assert rows[0][:3] == ["occurredAt", "eventType", "status"]
    assert [r[0] for r in rows[1:]] == [format_api_instant(e.occurred_at) for e in truth]
    assert [r[3] for r in rows[1:]] == [e.event_by or "" for e in truth]


async def test_csv_quotes_commas_quotes_and_newlines(api):
    awkward = 'Doe, Jane "JJ"\nsecond line'
    event = ProvisioningEvent(
        parse_instant("2017-01-01T00:00:00Z"),
        "Success",
        awkward,
        "Activation",
        "Plan, large",
        None,
        None,
        (),
    )
    device = api.simulator.fleet.script(DeviceIdentifier("imei", "771111111111111"), [event])
    async with httpx.AsyncClient(headers=api.headers) as http:
        response = await http.get(
            f"{api.base_url}/exports/provisioning-history.csv",
            params={
                "kind": "IMEI",
                "identifier": device.primary.identifier,
                "occurredAfter": "2016-01-01",
                "occurredBefore": "2018-01-01",
            },
        )
    assert '"Doe, Jane ""JJ""\nsecond line"' in response.text
    (row,) = parse_csv(response.text)[1:]
    assert row[3] == awkward
    assert row[4] == "Plan, large"


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"kind": "IMEI", "identifier": "000000000000000"}, 404, "NOT_FOUND"),
        ({"kind": "NOPE", "identifier": "1"}, 400, "BAD_USER_INPUT"),
        ({"kind": "IMEI", "identifier": "12'3"}, 400, "BAD_USER_INPUT"),
        (
            {"kind": "ESN", "identifier": "09123456123", "occurredAfter": "soon"},
            400,
            "BAD_USER_INPUT",
        ),
    ],
)
async def test_csv_errors_before_the_first_byte_have_a_status(api, params, status, code):
    async with httpx.AsyncClient(headers=api.headers) as http:
        response = await http.get(f"{api.base_url}/exports/provisioning-history.csv", params=params)
    assert response.status_code == status
    assert response.json()["errors"][0]["extensions"]["code"] == code


async def test_an_upstream_failure_mid_stream_is_no_complete_file(api):
    device = api.simulator.fleet.by_name("twelve-thousand")
    params = {
        "kind": "ICCID",
        "identifier": device.primary.identifier,
        "occurredAfter": "2000-01-01T00:00:00Z",
        "occurredBefore": "2026-06-01T00:00:00Z",
    }
    # The first window is cached by a history read; the export's next call fails.
    await api.query(document("DeviceHistory"), {**ident(device), "first": 1, **params})
    api.simulator.state.fail_next("http500", operation="GetDeviceProvisioningHistory")
    statuses = []

    async def download() -> None:
        async with (
            httpx.AsyncClient(headers=api.headers) as http,
            http.stream(
                "GET", f"{api.base_url}/exports/provisioning-history.csv", params=params
            ) as response,
        ):
            statuses.append(response.status_code)
            async for _ in response.aiter_bytes():
                pass

    with pytest.raises(httpx.HTTPError):
        await download()
    assert statuses == [200]


def code_of(response: httpx.Response) -> str:
    return response.json()["errors"][0]["extensions"]["code"]


async def test_the_report_csv_of_an_unknown_or_malformed_job(api):
    from graph.relay import global_id

    async with httpx.AsyncClient(headers=api.headers) as http:
        missing = await http.get(
            f"{api.base_url}/exports/provisioning-report.csv",
            params={"jobId": global_id("ProvisioningReportJob", "0" * 32)},
        )
        malformed = await http.get(
            f"{api.base_url}/exports/provisioning-report.csv", params={"jobId": "%%%"}
        )
    assert (missing.status_code, code_of(missing)) == (404, "NOT_FOUND")
    assert (malformed.status_code, code_of(malformed)) == (400, "BAD_USER_INPUT")


async def test_the_report_csv_matches_the_report(api):
    devices = ordinary(api, 5)
    params = [("devices", f"{d.primary.kind}:{d.primary.identifier}") for d in devices]
    params += [
        ("occurredAfter", RANGE["occurredAfter"]),
        ("occurredBefore", RANGE["occurredBefore"]),
        ("groupBy", "STATUS"),
        ("groupBy", "DEVICE"),
        ("bucket", "MONTH"),
    ]
    async with httpx.AsyncClient(headers=api.headers) as http:
        response = await http.get(f"{api.base_url}/exports/provisioning-report.csv", params=params)
    rows = parse_csv(response.text)
    assert rows[0] == [
        "status",
        "device",
        "bucketStart",
        "count",
        "firstOccurredAt",
        "lastOccurredAt",
    ]
    per_device: dict[str, int] = defaultdict(int)
    for row in rows[1:]:
        per_device[row[1]] += int(row[3])
    assert dict(per_device) == {
        f"{d.primary.kind.upper()}:{d.primary.identifier}": len(api.simulator.fleet.history(d))
        for d in devices
        if api.simulator.fleet.history(d)
    }
    months = {row[2] for row in rows[1:]}
    assert all(m.endswith("-01T00:00:00.000Z") for m in months)


async def test_the_report_csv_of_a_finished_job(api):
    devices = ordinary(api, 4)
    variables = {"input": {"devices": [ident(d) for d in devices], **RANGE}}
    job_id = (await api.query(START, variables))["data"]["startProvisioningReport"]["job"]["id"]
    async with Client(transport=api.websocket()) as session:
        async for _ in session.subscribe(
            GraphQLRequest(PROGRESS, variable_values={"jobId": job_id})
        ):
            pass
    async with httpx.AsyncClient(headers=api.headers) as http:
        response = await http.get(
            f"{api.base_url}/exports/provisioning-report.csv", params={"jobId": job_id}
        )
    assert response.status_code == 200
    rows = parse_csv(response.text)
    total = sum(len(api.simulator.fleet.history(d)) for d in devices)
    assert sum(int(r[1]) for r in rows[1:]) == total

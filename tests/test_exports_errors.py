"""Errors a client can rely on: a report CSV never passes failures off as a whole report,
every HTTP error the service writes has the one GraphQL error shape, and every bad CSV
parameter is a 400 in our words."""

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from gql import Client, GraphQLRequest, gql
from support import RANGE, REPORT, START, Api, api_server, bearer, document, ident, ordinary

from graph.relay import global_id
from models.instants import parse_instant
from models.principal import SCOPES
from soap.simulator.state import FailureKind

PROGRESS = gql(document("ReportProgress"))
HISTORY_CSV = "/exports/provisioning-history.csv"
REPORT_CSV = "/exports/provisioning-report.csv"
UNKNOWN = {"kind": "IMEI", "identifier": "000000000000000"}
"""A well-formed identifier of no device the simulator knows."""
NOT_FOUND_FAULT = "REQUEST_FAILED.DeviceNotFound"


def label(identifier: dict[str, str]) -> str:
    """A device as the report CSV names it."""
    return f"{identifier['kind'].upper()}:{identifier['identifier']}"


def report_params(devices: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [("devices", label(d)) for d in devices] + list(RANGE.items())


def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    """The one error of a refused request, checked for the one shape every error has."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert list(body) == ["errors"], body
    (error,) = body["errors"]
    assert set(error) == {"message", "extensions"}, error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert error["extensions"]["code"] == code, error
    assert error["extensions"]["requestId"] == response.headers["x-request-id"], error
    return error


async def get(api: Api, path: str, params=None, headers: dict | None = None) -> httpx.Response:
    async with httpx.AsyncClient(headers=headers or api.headers, timeout=60) as http:
        return await http.get(api.base_url + path, params=params)


def down(api: Api, kind: str) -> None:
    """Every upstream call from now on fails ``kind``'s way."""
    api.simulator.state.knobs.failure_rate = 1.0
    api.simulator.state.knobs.failure_mix = kind


async def graphql_failures(api: Api, devices: list[dict[str, str]]) -> set[tuple[str, str]]:
    """(device, code) of each device the same report over GraphQL lists as failed."""
    body = await api.query(REPORT, {"input": {"devices": devices, **RANGE}})
    failures = body["data"]["provisioningReport"]["failures"]
    return {(label(f["device"]), f["code"]) for f in failures}


async def test_report_csv_with_upstream_down_is_502(tmp_path):
    for api in api_server(tmp_path, upstream_retry_attempts=1):
        devices = [ident(d) for d in ordinary(api, 3)]
        down(api, "http503")
        listed = await graphql_failures(api, devices)
        response = await get(api, REPORT_CSV, report_params(devices))
        error = error_of(response, 502, "UPSTREAM_UNAVAILABLE")
        failures = error["extensions"]["failures"]
        assert {(f["device"], f["code"]) for f in failures} == listed
        assert {f["device"] for f in failures} == {label(d) for d in devices}


async def test_report_csv_with_upstream_timing_out_is_504(tmp_path):
    # Two devices, one attempt each: fewer failures than open the circuit.
    for api in api_server(tmp_path, upstream_retry_attempts=1, uws_timeout_s=0.5):
        devices = [ident(d) for d in ordinary(api, 2)]
        api.simulator.state.knobs.hang_s = 30  # every call outlasts the timeout
        down(api, "hang")
        response = await get(api, REPORT_CSV, report_params(devices))
        error = error_of(response, 504, "UPSTREAM_TIMEOUT")
        assert {f["device"] for f in error["extensions"]["failures"]} == {label(d) for d in devices}


async def test_report_csv_of_unknown_devices_only_is_404(api):
    response = await get(api, REPORT_CSV, report_params([UNKNOWN]))
    error = error_of(response, 404, "NOT_FOUND")
    assert error["extensions"]["failures"][0]["code"] == NOT_FOUND_FAULT


def counted(rows: list[list[str]]) -> int:
    """Events counted by a report CSV grouped by event type (count in the second column)."""
    return sum(int(row[1]) for row in rows[1:] if not row[0].startswith("#"))


def in_range(api: Api, devices: list) -> int:
    lo, hi = (parse_instant(RANGE[k]) for k in ("occurredAfter", "occurredBefore"))
    return sum(lo <= e.occurred_at <= hi for d in devices for e in api.simulator.fleet.history(d))


async def test_report_csv_marks_failed_devices(api):
    known = ordinary(api, 2)
    devices = [*(ident(d) for d in known), UNKNOWN]
    listed = await graphql_failures(api, devices)

    whole = await get(api, REPORT_CSV, report_params(devices[:2]))
    partial = await get(api, REPORT_CSV, report_params(devices))

    assert whole.status_code == 200
    assert whole.headers["x-report-failures"] == "0"
    assert not any(row[0].startswith("#") for row in parse_csv(whole.text))
    assert partial.status_code == 200
    assert partial.headers["x-report-failures"] == "1"
    rows = parse_csv(partial.text)
    assert rows[0] == ["eventType", "count", "firstOccurredAt", "lastOccurredAt"]
    *_, (mark, device, code, message) = rows
    assert (mark, device, code) == ("#failure", label(UNKNOWN), NOT_FOUND_FAULT)
    assert {(device, code)} == listed
    assert message
    assert counted(rows) == counted(parse_csv(whole.text)) == in_range(api, known)


async def test_report_csv_marks_a_device_the_upstream_failed_on(tmp_path):
    for api in api_server(tmp_path, upstream_retry_attempts=1):
        devices = [ident(d) for d in ordinary(api, 2)]
        api.simulator.state.fail_next("http503", operation="GetDeviceProvisioningHistory")
        response = await get(api, REPORT_CSV, report_params(devices))
        assert response.status_code == 200
        assert response.headers["x-report-failures"] == "1"
        (failure,) = [row for row in parse_csv(response.text) if row[0] == "#failure"]
        assert failure[1] in {label(d) for d in devices}
        assert failure[2] == "UPSTREAM_UNAVAILABLE"


async def finished_job(api: Api, devices: list[dict[str, str]]) -> str:
    variables = {"input": {"devices": devices, **RANGE}}
    job_id = (await api.query(START, variables))["data"]["startProvisioningReport"]["job"]["id"]
    async with Client(transport=api.websocket()) as session:
        async for _ in session.subscribe(
            GraphQLRequest(PROGRESS, variable_values={"jobId": job_id})
        ):
            pass
    return job_id


async def test_report_csv_of_a_job_marks_failed_devices(api):
    partial = await finished_job(api, [ident(ordinary(api, 1)[0]), UNKNOWN])
    failed = await finished_job(api, [UNKNOWN])

    response = await get(api, REPORT_CSV, {"jobId": partial})
    assert response.status_code == 200
    assert response.headers["x-report-failures"] == "1"
    assert parse_csv(response.text)[-1][:3] == ["#failure", label(UNKNOWN), NOT_FOUND_FAULT]
    error_of(await get(api, REPORT_CSV, {"jobId": failed}), 404, "NOT_FOUND")


@dataclass(frozen=True)
class Refused:
    """A request the service refuses, and the status and code it must answer with."""

    status: int
    code: str
    method: str
    path: str
    options: dict = field(default_factory=dict)
    scopes: tuple[str, ...] | None = tuple(SCOPES)
    """Of the request's own caller; None: no credential at all."""
    fails: FailureKind | None = None
    """How the upstream's next history call fails."""
    tries: int = 1
    """Times it is sent; the last answer is checked."""


ESN = {"kind": "ESN", "identifier": "09123456123"}
NO_JOB = global_id("ProvisioningReportJob", "0" * 32)
REFUSED = {
    "csv 400": Refused(400, "BAD_USER_INPUT", "GET", HISTORY_CSV, {"params": {"kind": "NOPE"}}),
    "csv 403": Refused(403, "FORBIDDEN", "GET", HISTORY_CSV, {"params": ESN}, ("recipes:read",)),
    "csv 404 device": Refused(404, "NOT_FOUND", "GET", HISTORY_CSV, {"params": UNKNOWN}),
    "csv 404 job": Refused(404, "NOT_FOUND", "GET", REPORT_CSV, {"params": {"jobId": NO_JOB}}),
    "csv 502": Refused(
        502, "UPSTREAM_UNAVAILABLE", "GET", HISTORY_CSV, {"params": ESN}, fails="http503"
    ),
    "csv 504": Refused(504, "UPSTREAM_TIMEOUT", "GET", HISTORY_CSV, {"params": ESN}, fails="hang"),
    "report csv 502": Refused(
        502,
        "UPSTREAM_UNAVAILABLE",
        "GET",
        REPORT_CSV,
        {"params": report_params([ESN])},
        fails="http503",
    ),
    "401": Refused(
        401, "UNAUTHENTICATED", "POST", "/graphql", {"json": {"query": "{a}"}}, scopes=None
    ),
    "401 metrics": Refused(401, "UNAUTHENTICATED", "GET", "/metrics", scopes=None),
    "413": Refused(
        413,
        "PAYLOAD_TOO_LARGE",
        "POST",
        "/graphql",
        {"json": {"query": "{ __typename }" + " " * 1_100_000}},  # over the default MiB
    ),
    "429": Refused(
        429, "RATE_LIMITED", "POST", "/graphql", {"json": {"query": "{ __typename }"}}, tries=6
    ),
    "404 route": Refused(404, "NOT_FOUND", "GET", "/nowhere"),
    "405 route": Refused(405, "METHOD_NOT_ALLOWED", "POST", "/healthz", scopes=None),
    "400 body": Refused(
        400,
        "BAD_USER_INPUT",
        "POST",
        "/graphql",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
    ),
    "400 preflight": Refused(
        400,
        "BAD_USER_INPUT",
        "OPTIONS",
        "/graphql",
        {
            "headers": {
                "origin": "https://elsewhere.example",
                "access-control-request-method": "GET",
            }
        },
        scopes=None,
    ),
}


async def test_every_http_error_has_the_graphql_error_shape(tmp_path):
    settings = {
        "upstream_retry_attempts": 1,
        "uws_timeout_s": 3.0,
        "metrics_token": "scrape-me",
        "rate_limit": "5/hour",  # per caller, and every case has its own
        "allowed_origins": ["https://app.example"],
    }
    answers: dict[str, httpx.Response] = {}
    (tmp_path / "a").mkdir()
    for api in api_server(tmp_path / "a", **settings):
        api.simulator.state.knobs.hang_s = 30
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as http:
            for name, case in REFUSED.items():
                headers = dict(case.options.get("headers", {}))
                if case.scopes is not None:
                    headers["authorization"] = f"Bearer {bearer(subject=name, scopes=case.scopes)}"
                if case.fails is not None:
                    api.simulator.state.fail_next(
                        case.fails, operation="GetDeviceProvisioningHistory"
                    )
                for _ in range(case.tries):
                    answers[name] = await http.request(
                        case.method, case.path, **{**case.options, "headers": headers}
                    )
    (tmp_path / "b").mkdir()
    for api in api_server(tmp_path / "b", request_deadline_s=0.3):
        api.simulator.state.knobs.latency_s = 30  # every upstream call outlasts the deadline
        answers["504 deadline"] = await get(api, HISTORY_CSV, ESN)
    expected = {name: (case.status, case.code) for name, case in REFUSED.items()}
    expected["504 deadline"] = (504, "DEADLINE_EXCEEDED")

    wrong = []
    for name, (status, code) in expected.items():
        response = answers[name]
        try:
            error_of(response, status, code)
        except (AssertionError, ValueError, KeyError) as failure:
            wrong.append(f"{name}: {response.status_code} {response.text!r} ({failure})")
    assert wrong == []
    assert int(answers["429"].headers["retry-after"]) > 0  # the refusal keeps its headers
    assert "POST" not in answers["405 route"].headers["allow"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One service for requests that are refused before they change or read anything."""
    yield from api_server(tmp_path_factory.mktemp("parameters"))


VALID_REPORT = [("devices", "ESN:09123456123"), *RANGE.items()]
VALID_HISTORY = [("kind", "ESN"), ("identifier", "09123456123")]


def replaced(params: list[tuple[str, str]], name: str, *values: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k != name] + [(name, v) for v in values]


PARAMETER_ERRORS = {
    "report timeZone path": (REPORT_CSV, [*VALID_REPORT, ("timeZone", "/etc/passwd")], "timeZone"),
    "report timeZone directory": (REPORT_CSV, [*VALID_REPORT, ("timeZone", "Europe")], "timeZone"),
    "report timeZone long": (REPORT_CSV, [*VALID_REPORT, ("timeZone", "a" * 300)], "timeZone"),
    "report timeZone parent": (REPORT_CSV, [*VALID_REPORT, ("timeZone", "../UTC")], "timeZone"),
    "report timeZone NUL": (REPORT_CSV, [*VALID_REPORT, ("timeZone", "UTC\x00")], "timeZone"),
    "report timeZone empty": (REPORT_CSV, [*VALID_REPORT, ("timeZone", "")], "timeZone"),
    "report groupBy": (REPORT_CSV, [*VALID_REPORT, ("groupBy", "COLOUR")], "groupBy"),
    "report bucket": (REPORT_CSV, [*VALID_REPORT, ("bucket", "YEAR")], "bucket"),
    "report devices and a device filter": (REPORT_CSV, [*VALID_REPORT, ("kinds", "ESN")], "kinds"),
    "report device no colon": (REPORT_CSV, replaced(VALID_REPORT, "devices", "ESN"), "devices"),
    "report device kind": (REPORT_CSV, replaced(VALID_REPORT, "devices", "NOPE:1"), "devices"),
    "report device id": (REPORT_CSV, replaced(VALID_REPORT, "devices", "IMEI:12'3"), "devices"),
    "report after missing": (REPORT_CSV, replaced(VALID_REPORT, "occurredAfter"), "occurredAfter"),
    "report after": (REPORT_CSV, replaced(VALID_REPORT, "occurredAfter", "soon"), "occurredAfter"),
    "report before": (
        REPORT_CSV,
        replaced(VALID_REPORT, "occurredBefore", "2100-06-01"),
        "occurredBefore",
    ),
    "report range": (
        REPORT_CSV,
        replaced(VALID_REPORT, "occurredAfter", "2026-07-01"),
        "occurredAfter",
    ),
    "report jobId": (REPORT_CSV, [("jobId", "%%%")], "jobId"),
    "history kind": (HISTORY_CSV, replaced(VALID_HISTORY, "kind", "NOPE"), "kind"),
    "history identifier": (
        HISTORY_CSV,
        replaced(VALID_HISTORY, "identifier", "12'3"),
        "identifier",
    ),
    "history after": (HISTORY_CSV, [*VALID_HISTORY, ("occurredAfter", "soon")], "occurredAfter"),
    "history before": (
        HISTORY_CSV,
        [*VALID_HISTORY, ("occurredBefore", "1999-01-01")],
        "occurredBefore",
    ),
}
PYTHON_WORDS = ("ZoneInfo", "Errno", "TZPATH", "normalized", "null byte", "Error", "Traceback")


@pytest.mark.parametrize("case", PARAMETER_ERRORS)
async def test_csv_parameter_errors_in_our_words(shared, case):
    path, params, parameter = PARAMETER_ERRORS[case]
    calls = shared.calls()
    response = await get(shared, path, params)
    message = error_of(response, 400, "BAD_USER_INPUT")["message"]
    assert parameter in message
    assert not [word for word in PYTHON_WORDS if word in message], message
    assert shared.calls() == calls


@pytest.mark.parametrize("zone", ["/etc/passwd", "Europe", "a" * 300, "../UTC", "Mars/Olympus"])
async def test_graphql_report_time_zone_errors_in_our_words(shared, zone):
    variables = {"input": {"devices": [{"kind": "ESN", "identifier": "09123456123"}], **RANGE}}
    variables["input"]["timeZone"] = zone
    body = await shared.query(REPORT, variables, expect_errors=True)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "timeZone" in error["message"]
    assert not [word for word in PYTHON_WORDS if word in error["message"]], error["message"]
    started = await shared.query(START, variables)
    (refusal,) = started["data"]["startProvisioningReport"]["userErrors"]
    assert (refusal["field"], refusal["code"]) == (["input", "timeZone"], "INVALID_TIME_ZONE")
    assert "timeZone" in refusal["message"]

"""Logs, request ids, masked errors and metrics, seen from outside over real HTTP."""

import io
import json
import logging
import sqlite3
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import Api, api_server, create
from test_subscriptions import CREATED, receive, subscription

from graph.relay import global_id
from server.logs import configure_logging, scrub

JOB = global_id("ProvisioningReportJob", "0123456789abcdef0123456789abcdef")
LEAKS = ("Traceback", "SELECT", "[SQL", "report_jobs", "sqlite3", "<soap", "Bearer ey")


class Logs:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def of(self, request_id: str) -> list[dict]:
        return [line for line in self.lines() if line.get("request_id") == request_id]


@pytest.fixture
def logs() -> Iterator[Logs]:
    """The service's log lines as `provgraph serve` writes them (JSON), while a test runs."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        yield Logs(stream)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


async def break_the_database(api: Api, tmp_path) -> None:
    """Takes the report jobs' table away under the running service: its next read of a
    job fails with an error nobody meant to show."""
    await api.query("{ __typename }")  # answered once the service has set its database up
    with sqlite3.connect(tmp_path / "provgraph.db") as connection:
        connection.execute("DROP TABLE report_jobs")


async def test_an_unexpected_error_is_masked_and_logged_once_with_its_request_id(
    api, tmp_path, logs
):
    await break_the_database(api, tmp_path)
    query = """query JobAndDevice($id: ID!) {
      provisioningReportJob(id: $id) { state }
      bad: device(kind: IMEI, identifier: "12'3") { id } }"""
    async with httpx.AsyncClient(headers=api.headers) as http:
        response = await http.post(
            f"{api.base_url}/graphql", json={"query": query, "variables": {"id": JOB}}
        )
    request_id = response.headers["x-request-id"]
    errors = {tuple(e["path"]): e for e in response.json()["errors"]}
    masked = errors[("provisioningReportJob",)]
    assert masked["message"] == "Unexpected error."
    assert masked["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    typed = errors[("bad",)]  # input errors keep their message and code
    assert typed["message"] == "Not a valid IMEI identifier: 14 to 16 digits."
    assert typed["extensions"]["code"] == "BAD_USER_INPUT"
    assert not any(leak in response.text for leak in LEAKS)

    lines = logs.of(request_id)
    (failure,) = [line for line in lines if line["level"] == "ERROR"]
    assert failure["message"] == "unexpected error"
    assert failure["field"] == "provisioningReportJob"
    assert failure["error"]["type"] == "sqlalchemy.exc.OperationalError"
    assert failure["error"]["message"] == "(sqlite3.OperationalError) no such table: report_jobs"
    assert failure["error"]["where"].startswith("resolvers/jobs.py:")
    (served,) = [line for line in lines if line["logger"] == "provgraph.access"]
    assert served | {"duration_ms": None} == {
        "time": served["time"],
        "level": "INFO",
        "logger": "provgraph.access",
        "message": served["message"],
        "request_id": request_id,
        "method": "POST",
        "path": "/graphql",
        "status": 200,
        "duration_ms": None,
        "operation": "JobAndDevice",
    }
    assert not any(leak in json.dumps(logs.lines()) for leak in ("SELECT", "[SQL", "Traceback"))


async def test_a_failing_export_answers_a_masked_500(api, tmp_path, logs):
    await break_the_database(api, tmp_path)
    async with httpx.AsyncClient(headers=api.headers) as http:
        response = await http.get(
            f"{api.base_url}/exports/provisioning-report.csv", params={"jobId": JOB}
        )
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json() == {
        "errors": [
            {
                "message": "Unexpected error.",
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
            }
        ]
    }
    levels = [(line["logger"], line["level"]) for line in logs.of(request_id)]
    assert levels == [("server.middleware.request_context", "ERROR"), ("provgraph.access", "INFO")]


async def test_a_sane_request_id_is_kept_and_any_other_replaced(api, logs):
    async with httpx.AsyncClient(headers=api.headers) as http:
        kept = await http.get(f"{api.base_url}/healthz", headers={"x-request-id": "trace-42.a:b"})
        replaced = await http.get(
            f"{api.base_url}/healthz", headers={"x-request-id": "forged\tid=" + "x" * 200}
        )
    assert kept.headers["x-request-id"] == "trace-42.a:b"
    assert len(logs.of("trace-42.a:b")) == 1
    generated = replaced.headers["x-request-id"]
    assert generated.isalnum()
    assert logs.of(generated)[0]["path"] == "/healthz"


def test_text_logs_are_one_line_each_with_the_request_id():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info", "text", stream)
    try:
        try:
            raise ValueError("postgresql://user:secret@db/provgraph refused\n<soap:Envelope>")
        except ValueError as error:
            logging.getLogger("provgraph.test").error("it failed", exc_info=error)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    (line,) = stream.getvalue().splitlines()
    assert " ERROR provgraph.test [-] it failed type=ValueError" in line
    assert "postgresql://***@db/provgraph refused" in line
    assert "secret" not in line
    assert "soap" not in line


def test_scrub_cuts_what_must_never_be_logged():
    text = (
        "(sqlite3.OperationalError) no such table: t\n[SQL: SELECT secret FROM t]\n"
        "[parameters: ('x',)]"
    )
    assert scrub(text) == "(sqlite3.OperationalError) no such table: t"
    assert scrub("reply was <s:Envelope><token>abc</token>") == "reply was"
    assert scrub("redis://:hunter2@cache:6379/0 down") == "redis://***@cache:6379/0 down"
    assert scrub("sent Authorization: Bearer eyJhbGciOi.x.y") == "sent Authorization: Bearer ***"
    assert scrub("authToken pgr_AbC-12_x refused") == "authToken pgr_*** refused"


async def metric_samples(api: Api, headers: dict | None = None) -> dict:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{api.base_url}/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(response.text)
    }


def requests_counted(samples: dict, operation: str, outcome: str) -> float:
    key = (("operation", operation), ("outcome", outcome))
    return samples["provgraph_requests"].get(key, 0.0)


async def test_metrics_expose_the_named_families_and_count_operations(api):
    before = await metric_samples(api)
    for name in (
        "provgraph_requests",
        "provgraph_upstream_calls",
        "provgraph_upstream_call_seconds",
        "provgraph_upstream_retries",
        "provgraph_upstream_circuit_state",
        "provgraph_cache_lookups",
        "provgraph_open_subscriptions",
        "provgraph_rate_limited",
    ):
        assert name in before, name

    await api.query("query MetricsProbe { __typename }")
    await api.query("query MetricsProbe { __typename }")
    await api.query(
        'query MetricsBad { device(kind: IMEI, identifier: "1") { id } }', expect_errors=True
    )
    async with httpx.AsyncClient(headers=api.headers) as http:
        exported = await http.get(
            f"{api.base_url}/exports/provisioning-history.csv",
            params={"kind": "ESN", "identifier": "09123456123", "occurredBefore": "2016-06-01"},
        )
    assert exported.status_code == 200
    after = await metric_samples(api)

    def delta(operation: str, outcome: str) -> float:
        return requests_counted(after, operation, outcome) - requests_counted(
            before, operation, outcome
        )

    assert delta("MetricsProbe", "ok") == 2
    assert delta("MetricsBad", "BAD_USER_INPUT") == 1
    assert delta("provisioningHistoryCsv", "ok") == 1


async def test_open_subscriptions_are_counted(api):
    first = await create(api)
    await create(api, serialNumber="SN-2")
    before = (await metric_samples(api))["provgraph_open_subscriptions"][()]
    async with subscription(api, CREATED, {"after": first["event"]["id"]}) as stream:
        await receive(stream)  # the replayed event: the subscription is running
        during = (await metric_samples(api))["provgraph_open_subscriptions"][()]
    assert during == before + 1


async def test_a_request_past_its_deadline_is_counted_as_such(tmp_path):
    for api in api_server(tmp_path, request_deadline_s=0.3):
        before = await metric_samples(api)
        api.simulator.state.knobs.latency_s = 30
        body = await api.query(
            'query PastDeadline { device(kind: ESN, identifier: "09123456123") { id } }',
            expect_errors=True,
        )
        assert body["errors"][0]["extensions"]["code"] == "DEADLINE_EXCEEDED"
        after = await metric_samples(api)
        outcome = ("PastDeadline", "DEADLINE_EXCEEDED")
        assert requests_counted(after, *outcome) == requests_counted(before, *outcome) + 1


async def test_metrics_need_their_token_when_one_is_set(tmp_path):
    for api in api_server(tmp_path, metrics_token="scrape-me"):
        async with httpx.AsyncClient() as http:
            refused = await http.get(f"{api.base_url}/metrics")
            wrong = await http.get(
                f"{api.base_url}/metrics", headers={"authorization": "Bearer nope"}
            )
        assert refused.status_code == wrong.status_code == 401
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        samples = await metric_samples(api, {"authorization": "Bearer scrape-me"})
        assert "provgraph_requests" in samples

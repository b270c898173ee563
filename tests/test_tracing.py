"""OpenTelemetry tracing: one trace per GraphQL operation, holding the fields that read the
upstream, each cache lookup and each upstream call (with its exchanges) beneath; a server
span per HTTP request above it all, continuing the caller's trace; a trace of its own for
each report job; no hook in the schema and no work in the middleware while tracing is off;
the SDK set up from the settings."""

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from strawberry.extensions import SchemaExtension
from support import (
    RANGE,
    START,
    WAIT_S,
    Api,
    FastTier,
    InProcess,
    api_server,
    fast_tier,
    ident,
    in_process,
    ordinary,
)

from graph.reports.queries import job_id_of
from graph.schema import schema
from graph.tracing import OperationTracing, trace_operations
from models.instants import format_instant
from resolvers.history import RANGE_START
from server.middleware.tracing import Tracing
from server.services import tracer_provider
from server.settings import Settings

HISTORY = """query History($kind: DeviceIdentifierKind!, $identifier: String!) {
  device(kind: $kind, identifier: $identifier) {
    provisioningHistory(first: 5, occurredBefore: "2026-06-01T00:00:00Z") {
      edges { node { occurredAt } } } } }"""
SEED_ESN = {"kind": "ESN", "identifier": "09123456123"}
HISTORY_CALL = "upstream GetDeviceProvisioningHistory"
HISTORY_EXCHANGE = "IDeviceService/GetDeviceProvisioningHistory"

EXPORTER = InMemorySpanExporter()


class Ending(SpanProcessor):
    """Says when a span has ended (after the exporter has it): a span that ends after the
    response that led to it (a report job's, a WebSocket operation's) is waited for."""

    def __init__(self) -> None:
        self.changed = threading.Condition()

    def on_end(self, span: ReadableSpan) -> None:
        with self.changed:
            self.changed.notify_all()


ENDING = Ending()


async def ended(name: str) -> ReadableSpan:
    """The first span called ``name``, once one has ended."""

    def wait() -> list[ReadableSpan]:
        with ENDING.changed:
            return ENDING.changed.wait_for(
                lambda: named(EXPORTER.get_finished_spans(), name), WAIT_S
            )

    found = await asyncio.to_thread(wait)
    assert found, f"no span {name!r} ended"
    return found[0]


@pytest.fixture(scope="module")
def provider() -> Iterator[TracerProvider]:
    """The process's tracer provider from here on (OpenTelemetry keeps the first one set),
    into memory; shut down at the end, after which it keeps nothing."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    provider.add_span_processor(ENDING)  # after the exporter: what it announces is there
    trace.set_tracer_provider(provider)
    yield provider
    provider.shutdown()


@pytest.fixture(scope="module")
async def tier(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastTier]:
    async with fast_tier(tmp_path_factory.mktemp("tracing")) as shared:
        yield shared


@pytest.fixture
async def traced(
    provider: TracerProvider, tier: FastTier, tmp_path: Path
) -> AsyncIterator[InProcess]:
    """Fresh services (a cold cache) with tracing on, and no span recorded yet."""
    trace_operations(True)
    try:
        async with in_process(tier, tmp_path, upstream_retry_base_delay_s=0) as api:
            EXPORTER.clear()
            yield api
    finally:
        trace_operations(False)


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent(spans: tuple[ReadableSpan, ...], span: ReadableSpan) -> ReadableSpan:
    assert span.parent is not None, span.name
    (found,) = [s for s in spans if s.context.span_id == span.parent.span_id]
    return found


def beneath(spans: tuple[ReadableSpan, ...], name: str, field: str) -> list[ReadableSpan]:
    """The spans called ``name`` that the span of ``field`` holds."""
    return [span for span in named(spans, name) if field in lineage(spans, span)]


def lineage(spans: tuple[ReadableSpan, ...], span: ReadableSpan) -> list[str]:
    """The names of the span's ancestors in this service, nearest first."""
    names = []
    while span.parent is not None and not span.parent.is_remote:
        span = parent(spans, span)
        names.append(span.name)
    return names


WINDOW = {
    "provgraph.upstream.operation": "GetDeviceProvisioningHistory",
    "provgraph.device.kind": "esn",
    "provgraph.window.earliest": format_instant(RANGE_START),
    "provgraph.window.latest": "2026-06-01T00:00:00Z",
}


async def test_a_query_is_one_trace_with_its_soap_calls_beneath_the_operation(traced):
    await traced.query(HISTORY, SEED_ESN)
    spans = EXPORTER.get_finished_spans()

    (operation,) = named(spans, "query History")
    assert operation.parent is None
    assert operation.kind is SpanKind.SERVER
    assert operation.attributes["graphql.operation.type"] == "query"
    assert operation.attributes["graphql.operation.name"] == "History"
    assert "error.type" not in operation.attributes
    assert {span.context.trace_id for span in spans} == {operation.context.trace_id}

    assert traced.calls() == 2  # the device's lookup, then its page
    (call,) = beneath(spans, HISTORY_CALL, "Device.provisioningHistory")
    assert call.attributes == {
        "provgraph.upstream.attempt": 1,
        "provgraph.upstream.outcome": "ok",
        **WINDOW,
    }
    assert lineage(spans, call) == ["cache lookup", "Device.provisioningHistory", "query History"]
    lookup = parent(spans, call)
    assert lookup.attributes == {"provgraph.cache.result": "miss", **WINDOW}
    (exchange,) = [span for span in named(spans, HISTORY_EXCHANGE) if parent(spans, span) is call]
    assert exchange.kind is SpanKind.CLIENT
    assert exchange.attributes["rpc.method"] == "GetDeviceProvisioningHistory"
    assert exchange.attributes["http.response.status_code"] == 200

    # The device was looked up beneath the field that named it, logging in on the way.
    (lookup_call,) = beneath(spans, HISTORY_CALL, "Query.device")
    assert lineage(spans, lookup_call) == ["cache lookup", "Query.device", "query History"]
    (login,) = named(spans, "ISessionService/LogIn")
    assert parent(spans, login) is lookup_call


async def test_a_cached_read_shows_a_cache_hit_and_no_soap_call(traced):
    await traced.query(HISTORY, SEED_ESN)
    EXPORTER.clear()

    await traced.query(HISTORY, SEED_ESN)
    spans = EXPORTER.get_finished_spans()

    assert traced.calls() == 2
    assert not [span for span in spans if span.kind is SpanKind.CLIENT]
    assert not [span for span in spans if span.name.startswith("upstream ")]
    windows = [
        span
        for span in named(spans, "cache lookup")
        if "provgraph.window.latest" in span.attributes
    ]
    assert [window.attributes["provgraph.cache.result"] for window in windows] == ["hit", "hit"]
    (window,) = beneath(spans, "cache lookup", "Device.provisioningHistory")
    assert window.attributes == {"provgraph.cache.result": "hit", **WINDOW}
    assert lineage(spans, window) == ["Device.provisioningHistory", "query History"]


def by_start(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return sorted(spans, key=lambda span: span.start_time or 0)


async def test_each_attempt_of_a_retried_call_has_its_span_and_outcome(traced):
    traced.simulator.state.fail_next("http503", operation="GetDeviceProvisioningHistory")
    await traced.query(HISTORY, SEED_ESN)
    spans = EXPORTER.get_finished_spans()

    first, second = by_start(beneath(spans, HISTORY_CALL, "Query.device"))
    assert first.attributes["provgraph.upstream.attempt"] == 1
    assert first.attributes["provgraph.upstream.outcome"] == "UPSTREAM_UNAVAILABLE"
    assert first.status.status_code is StatusCode.ERROR
    assert second.attributes["provgraph.upstream.attempt"] == 2
    assert second.attributes["provgraph.upstream.outcome"] == "ok"
    assert parent(spans, first) is parent(spans, second)
    exchanges = [
        span for span in named(spans, HISTORY_EXCHANGE) if "Query.device" in lineage(spans, span)
    ]
    failed, answered = by_start(exchanges)
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.attributes["error.type"] == "UPSTREAM_UNAVAILABLE"
    assert parent(spans, failed) is first
    assert parent(spans, answered) is second


async def test_a_failed_operation_says_its_error_code(traced):
    traced.simulator.state.fail_next("fault", operation="GetDeviceProvisioningHistory")
    body = await traced.query(HISTORY, SEED_ESN, expect_errors=True)
    spans = EXPORTER.get_finished_spans()

    (operation,) = named(spans, "query History")
    assert operation.attributes["error.type"] == body["errors"][0]["extensions"]["code"]


def test_while_tracing_is_off_the_schema_runs_no_hook_of_it():
    assert not tracing_extensions()
    assert [type(e) for e in schema.get_extensions()].count(SchemaExtension) == 1  # a stand-in
    trace_operations(True)
    try:
        assert tracing_extensions()
    finally:
        trace_operations(False)


def tracing_extensions() -> list[SchemaExtension]:
    return [e for e in schema.get_extensions() if isinstance(e, OperationTracing)]


def test_tracing_is_off_unless_an_exporter_is_named():
    assert tracer_provider(Settings(_env_file=None)) is None


async def test_a_service_with_an_exporter_traces_operations_while_it_is_open(
    provider, tier, tmp_path
):
    async with in_process(tier, tmp_path, otel_traces_exporter="console"):
        assert tracing_extensions()
    assert not tracing_extensions()


def test_otlp_exports_where_the_standard_variables_say(monkeypatch):
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=collector.serve_forever)
    thread.start()
    try:
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}"
        )
        monkeypatch.setenv("OTEL_SERVICE_NAME", "graph-under-test")
        provider = tracer_provider(Settings(_env_file=None, otel_traces_exporter="otlp"))
        assert provider is not None
        provider.get_tracer(__name__).start_span("probe").end()
        provider.shutdown()  # exports what is queued
    finally:
        collector.shutdown()
        thread.join()
    ((path, body),) = received
    assert path == "/v1/traces"
    assert b"probe" in body
    assert b"graph-under-test" in body


# The HTTP edge: the service on a loopback port, its embedded simulator left untraced.

CALLER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN = 0xB7AD6B7169203331
CALLER = {
    "traceparent": f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01",
    "tracestate": "caller=opaque",
}


@pytest.fixture
def served(provider: TracerProvider, tmp_path: Path) -> Iterator[Api]:
    """The whole service with tracing on, a cold cache, and no span recorded yet."""
    trace_operations(True)
    try:
        for api in api_server(tmp_path, upstream_retry_base_delay_s=0):
            EXPORTER.clear()
            yield api
    finally:
        trace_operations(False)


def servers(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is SpanKind.SERVER]


def exchanges(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    """The SOAP exchanges with the upstream."""
    return [span for span in spans if span.kind is SpanKind.CLIENT]


async def post_history(api: Api, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            f"{api.base_url}/graphql",
            json={"query": HISTORY, "variables": SEED_ESN},
            headers={**api.headers, **headers},
        )
    assert "errors" not in response.json()
    return response


async def test_a_request_is_a_server_span_above_its_operation_and_its_soap_calls(served):
    response = await post_history(served, {})
    spans = EXPORTER.get_finished_spans()

    (server,) = servers(spans)
    assert server.name == "POST /graphql"
    assert server.parent is None
    assert server.attributes == {
        "http.request.method": "POST",
        "http.route": "/graphql",
        "http.response.status_code": 200,
        "provgraph.request_id": response.headers["x-request-id"],
    }
    (operation,) = named(spans, "query History")
    assert operation.kind is SpanKind.INTERNAL
    assert parent(spans, operation) is server
    calls = exchanges(spans)
    assert len(named(calls, HISTORY_EXCHANGE)) == 2  # the device's lookup, then its page
    for call in calls:
        assert lineage(spans, call)[-2:] == ["query History", "POST /graphql"]
    assert {span.context.trace_id for span in spans} == {server.context.trace_id}


async def test_a_request_carrying_a_trace_continues_it(served):
    await post_history(served, CALLER)
    spans = EXPORTER.get_finished_spans()

    (server,) = servers(spans)
    assert server.context.trace_id == CALLER_TRACE
    assert server.parent is not None
    assert server.parent.span_id == CALLER_SPAN
    assert server.parent.is_remote
    assert server.context.trace_state.get("caller") == "opaque"
    assert {span.context.trace_id for span in spans} == {CALLER_TRACE}
    assert [lineage(spans, call)[-1] for call in exchanges(spans)] == ["POST /graphql"] * 3


async def test_a_websocket_operation_continues_the_trace_of_its_upgrade_request(served):
    transport = WebsocketsTransport(
        url=served.ws_url,
        subprotocols=["graphql-transport-ws"],
        init_payload=served.headers,
        headers=CALLER,
    )
    async with Client(transport=transport) as session:
        await session.execute(GraphQLRequest(HISTORY, variable_values=SEED_ESN))
    operation = await ended("query History")
    spans = EXPORTER.get_finished_spans()

    assert operation.kind is SpanKind.SERVER  # no span of the socket's above it
    assert operation.parent is not None
    assert operation.parent.span_id == CALLER_SPAN
    assert operation.context.trace_id == CALLER_TRACE
    assert servers(spans) == [operation]
    calls = exchanges(spans)
    assert calls
    assert all(lineage(spans, call)[-1] == "query History" for call in calls)


SEED_MEID = {"kind": "meid", "identifier": "54689785258599"}


def history_export(api: Api) -> dict[str, str | list[str]]:
    # 840 events: more than one window, so calls are made while the file streams.
    return {**SEED_MEID, "occurredAfter": "2016-01-01", "occurredBefore": "2018-12-31"}


def report_export(api: Api) -> dict[str, str | list[str]]:
    devices = [f"{d.primary.kind}:{d.primary.identifier}" for d in ordinary(api, 3)]
    return {"devices": devices, **RANGE}


@pytest.mark.parametrize(
    ("path", "parameters"),
    [
        ("/exports/provisioning-history.csv", history_export),
        ("/exports/provisioning-report.csv", report_export),
    ],
)
async def test_an_exports_soap_calls_are_beneath_its_span_which_ends_with_the_file(
    served, path, parameters
):
    async with httpx.AsyncClient(timeout=60, headers=served.headers) as http:
        response = await http.get(f"{served.base_url}{path}", params=parameters(served))
    assert response.status_code == 200
    spans = EXPORTER.get_finished_spans()

    (server,) = servers(spans)
    assert server.name == f"GET {path}"
    # Named and described by its route alone: nothing of the query string.
    assert server.attributes == {
        "http.request.method": "GET",
        "http.route": path,
        "http.response.status_code": 200,
        "provgraph.request_id": response.headers["x-request-id"],
    }
    calls = named(exchanges(spans), HISTORY_EXCHANGE)
    assert len(calls) >= 2
    assert all(lineage(spans, call)[-1] == server.name for call in calls)
    assert server.end_time >= max(call.end_time or 0 for call in calls)
    assert {span.context.trace_id for span in spans} == {server.context.trace_id}


async def test_a_report_job_is_a_trace_of_its_own_linked_to_the_request_that_started_it(
    served,
):
    variables = {"input": {"devices": [ident(d) for d in ordinary(served, 3)], **RANGE}}
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            f"{served.base_url}/graphql",
            json={"query": START, "variables": variables},
            headers={**served.headers, **CALLER},
        )
    job_id = response.json()["data"]["startProvisioningReport"]["job"]["id"]
    job = await ended("report job")
    spans = EXPORTER.get_finished_spans()

    (mutation,) = named(spans, "mutation StartReport")
    assert mutation.context.trace_id == CALLER_TRACE
    assert job.parent is None
    assert job.context.trace_id != CALLER_TRACE
    assert job.attributes == {"provgraph.report_job.id": job_id_of(job_id)}
    assert [(link.context.trace_id, link.context.span_id) for link in job.links] == [
        (CALLER_TRACE, mutation.context.span_id)
    ]
    calls = named(exchanges(spans), HISTORY_EXCHANGE)
    assert calls
    for call in calls:
        assert call.context.trace_id == job.context.trace_id
        assert lineage(spans, call)[-1] == "report job"


async def test_while_tracing_is_off_a_served_request_has_no_span(served):
    trace_operations(False)
    await post_history(served, CALLER)
    spans = EXPORTER.get_finished_spans()

    # This module's provider still records the cache's and the upstream calls' spans
    # (a service that does not trace has none, so nothing records them), as roots.
    assert not servers(spans)
    assert not named(spans, "query History")
    assert CALLER_TRACE not in {span.context.trace_id for span in spans}


class Unreadable(list):
    """Headers that fail the test when anything reads them."""

    def __iter__(self):
        raise AssertionError("the headers were read")


async def test_while_tracing_is_off_the_middleware_hands_the_request_on_untouched(provider):
    passed = []

    async def app(scope, receive, send) -> None:
        passed.append((scope, receive, send))

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        pass

    EXPORTER.clear()
    for kind in ("http", "websocket"):
        scope = {"type": kind, "method": "GET", "path": "/graphql", "headers": Unreadable()}
        await Tracing(app)(scope, receive, send)
        ((seen_scope, seen_receive, seen_send),) = passed
        assert (seen_scope, seen_receive, seen_send) == (scope, receive, send)
        assert seen_receive is receive  # not wrapped
        assert seen_send is send
        passed.clear()
    assert not EXPORTER.get_finished_spans()

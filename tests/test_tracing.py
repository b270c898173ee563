"""OpenTelemetry tracing: one trace per GraphQL operation, holding the fields that read the
upstream, each cache lookup and each upstream call (with its exchanges) beneath; no hook
in the schema while tracing is off; the SDK set up from the settings."""

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from strawberry.extensions import SchemaExtension
from support import FastTier, InProcess, fast_tier, in_process

from graph.schema import schema
from graph.tracing import OperationTracing, trace_operations
from models.instants import format_instant
from resolvers.history import RANGE_START
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


@pytest.fixture(scope="module")
def provider() -> Iterator[TracerProvider]:
    """The process's tracer provider from here on (OpenTelemetry keeps the first one set),
    into memory; shut down at the end, after which it keeps nothing."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
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
    """The names of the span's ancestors, nearest first."""
    names = []
    while span.parent is not None:
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

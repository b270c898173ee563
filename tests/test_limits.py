"""Every limit on what a request may ask, each refused with its typed error before any
upstream call: query depth, tokens, aliases, cost, page sizes, ranges, report devices,
identifiers, body size, rate, deadline; mutations over GET; CORS and WebSocket origins."""

import uuid
from collections.abc import Iterator

import httpx
import pytest
from support import Api, api_server, bearer
from test_observability import metric_samples
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

ALLOWED_ORIGIN = "https://app.example"
SEED_ESN = {"kind": "ESN", "identifier": "09123456123"}
HISTORY = """query ($kind: DeviceIdentifierKind!, $identifier: String!, $first: Int, $last: Int,
  $occurredAfter: DateTime, $occurredBefore: DateTime) {
  device(kind: $kind, identifier: $identifier) {
    provisioningHistory(first: $first, last: $last, occurredAfter: $occurredAfter,
      occurredBefore: $occurredBefore) { edges { cursor } } } }"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A service with small limits, each test starting with zero upstream calls."""
    yield from api_server(
        tmp_path_factory.mktemp("limits"),
        max_query_depth=4,
        max_query_tokens=150,
        max_query_aliases=3,
        report_max_devices=2,
        max_body_bytes=2048,
        allowed_origins=[ALLOWED_ORIGIN],
    )


@pytest.fixture
def small(limited: Api) -> Api:
    limited.simulator.state.reset_calls()
    return limited


def no_upstream_calls(api: Api) -> bool:
    return api.calls("GetDeviceList") == 0 and api.calls() == 0


def refusal(body: dict) -> dict:
    """The one error of a request refused as a whole."""
    assert body.get("data") is None, body
    (error,) = body["errors"]
    return error


async def test_an_operation_nested_too_deep_is_refused(small):
    fine = '{ device(kind: ESN, identifier: "09123456123") { provisioningHistory(first: 1) { edges { node { occurredAt } } } } }'  # noqa: E501
    await small.query(fine)
    small.simulator.state.reset_calls()
    deep = fine.replace("occurredAt", "extendedAttributes { key }")
    error = refusal(await small.query(deep, expect_errors=True))
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "limit": "depth", "maximum": 4}
    assert no_upstream_calls(small)


async def test_a_document_with_too_many_tokens_is_refused(small):
    error = refusal(await small.query("{ " + "a " * 200 + "}", expect_errors=True))
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "limit": "tokens"}


async def test_too_many_aliases_are_refused(small):
    three = "{ " + " ".join(f"a{i}: __typename" for i in range(3)) + " }"
    assert (await small.query(three))["data"] == {"a0": "Query", "a1": "Query", "a2": "Query"}
    four = "{ " + " ".join(f"a{i}: __typename" for i in range(4)) + " }"
    error = refusal(await small.query(four, expect_errors=True))
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "limit": "aliases", "maximum": 3}


async def test_fragments_spread_within_fragments_are_measured_once(api):
    # Each fragment spreads the one before it twice: walked spread by spread, depth,
    # aliases and cost would visit 2**59 fields, for a document of some 600 tokens.
    fragments = ["fragment F0 on Query { __typename }"] + [
        f"fragment F{n} on Query {{ ...F{n - 1} ...F{n - 1} }}" for n in range(1, 60)
    ]
    body = await api.query("{ ...F59 }\n" + "\n".join(fragments))
    assert body["data"] == {"__typename": "Query"}


COSTLY = """query ($devices: Int, $events: Int) {
  devices(first: $devices) { edges { node {
    provisioningHistory(first: $events, occurredAfter: "2017-01-01", occurredBefore: "2017-01-02") {
      edges { cursor } } } } } }"""


async def test_the_cost_bound_counts_nested_pages_and_report_devices(tmp_path):
    for api in api_server(tmp_path, max_query_cost=100):
        error = refusal(await api.query(COSTLY, {"devices": 10, "events": 10}, expect_errors=True))
        assert error["extensions"] == {
            "code": "QUERY_TOO_COMPLEX",
            "limit": "cost",
            "cost": 110,  # 10 devices, and 10 events for each
            "maximum": 100,
        }
        assert no_upstream_calls(api)
        defaulted = COSTLY.replace("$events: Int", "$events: Int = 10")
        error = refusal(await api.query(defaulted, {"devices": 10}, expect_errors=True))
        assert error["extensions"]["cost"] == 110
        body = await api.query(COSTLY, {"devices": 9, "events": 10})  # 9 + 90
        assert len(body["data"]["devices"]["edges"]) == 9

        api.simulator.state.reset_calls()
        devices = [SEED_ESN] * 101
        report = """query ($input: ProvisioningReportInput!) {
          provisioningReport(input: $input) { totalEvents } }"""
        variables = {
            "input": {
                "devices": devices,
                "occurredAfter": "2017-01-01",
                "occurredBefore": "2017-02-01",
            }
        }
        error = refusal(await api.query(report, variables, expect_errors=True))
        assert error["extensions"]["cost"] == 101
        assert no_upstream_calls(api)


async def test_a_page_asked_by_last_alone_is_priced_by_last(tmp_path):
    either = COSTLY.replace("$events: Int", "$events: Int, $first: Int").replace(
        "first: $events", "first: $first, last: $events"
    )
    for api in api_server(tmp_path, max_query_cost=100):
        error = refusal(await api.query(either, {"devices": 10, "events": 10}, expect_errors=True))
        assert error["extensions"]["cost"] == 110
        assert no_upstream_calls(api)


async def test_the_default_cost_bound_refuses_pages_of_pages(api):
    error = refusal(await api.query(COSTLY, {"devices": 500, "events": 500}, expect_errors=True))
    assert error["extensions"]["cost"] == 500 + 500 * 500
    assert error["extensions"]["maximum"] == 50_000
    assert no_upstream_calls(api)


@pytest.mark.parametrize(
    ("variables", "argument"),
    [
        ({"first": 501}, "first"),
        ({"last": 501}, "last"),
        ({"occurredAfter": "2020-01-02", "occurredBefore": "2020-01-01"}, "occurredAfter"),
        ({"occurredAfter": "1999-12-31T23:59:59Z"}, "occurredAfter"),
        ({"occurredBefore": "2100-01-01T00:00:00Z"}, "occurredBefore"),
    ],
)
async def test_page_sizes_and_ranges_are_bounded(small, variables, argument):
    body = await small.query(HISTORY, {**SEED_ESN, **variables}, expect_errors=True)
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": argument}
    assert small.calls() == 0


REPORT_RANGE = {"occurredAfter": "2017-01-01", "occurredBefore": "2017-02-01"}
THREE_DEVICES = [SEED_ESN, {"kind": "MEID", "identifier": "54689785258599"}, SEED_ESN]


async def test_a_report_names_at_most_the_configured_devices(small):
    report = """query ($input: ProvisioningReportInput!) {
      provisioningReport(input: $input) { totalEvents } }"""
    body = await small.query(
        report, {"input": {"devices": THREE_DEVICES, **REPORT_RANGE}}, expect_errors=True
    )
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "At most 2 devices" in error["message"]

    start = """mutation ($input: ProvisioningReportInput!) {
      startProvisioningReport(input: $input) { job { id } userErrors { field code } } }"""
    body = await small.query(start, {"input": {"devices": THREE_DEVICES, **REPORT_RANGE}})
    payload = body["data"]["startProvisioningReport"]
    assert payload == {
        "job": None,
        "userErrors": [{"field": ["input", "devices"], "code": "TOO_MANY"}],
    }

    params = [("devices", "ESN:09123456123")] * 3 + [
        ("occurredAfter", "2017-01-01"),
        ("occurredBefore", "2017-02-01"),
    ]
    async with httpx.AsyncClient(headers=small.headers) as http:
        response = await http.get(
            f"{small.base_url}/exports/provisioning-report.csv", params=params
        )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert no_upstream_calls(small)


@pytest.mark.parametrize(
    ("kind", "identifier"),
    [
        ("ESN", "09123456123"),
        ("ESN", "8A3F09C1"),
        ("MEID", "54689785258599"),
        ("MEID", "a10000009296f2"),
        ("MEID", "270113177609296626"),
        ("IMEI", "35123456789012"),
        ("IMEI", "351234567890123"),
        ("IMEI", "3512345678901234"),
        ("ICCID", "8914800000123456789"),
        ("ICCID", "89148000001234567890"),
        ("EID", "89049032123456789012345678901234"),
        ("MDN", "5348152777"),
        ("MSISDN", "15348152777"),
        ("MIN", "5348152777"),
    ],
)
async def test_identifiers_in_the_upstreams_formats_are_asked_about(small, kind, identifier):
    body = await small.query(
        "query ($kind: DeviceIdentifierKind!, $identifier: String!) {"
        " device(kind: $kind, identifier: $identifier) { id } }",
        {"kind": kind, "identifier": identifier},
    )
    assert "device" in body["data"]


@pytest.mark.parametrize(
    ("kind", "identifier"),
    [
        ("IMEI", "12'3"),
        ("IMEI", "35123456789<12"),
        ("IMEI", "3512345678\\9012"),
        ("ESN", "0912345612'"),
        ("MDN", "<5348152777>"),
        ("IMEI", "3512345678901"),  # 13 digits
        ("IMEI", "35123456789012345"),  # 17
        ("IMEI", "35123456789012A"),  # hex where digits belong
        ("ESN", "8A3F09C"),
        ("MEID", "54689785258599G"),
        ("ICCID", "891480000012345678"),
        ("EID", "8904903212345678901234567890123"),
        ("MIN", "53481527770"),
        ("MSISDN", "1" * 16),
        ("ESN", ""),
    ],
)
async def test_malformed_identifiers_never_reach_the_upstream(small, kind, identifier):
    body = await small.query(
        HISTORY, {"kind": kind, "identifier": identifier, "first": 1}, expect_errors=True
    )
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "identifier"}
    assert f"Not a valid {kind} identifier" in error["message"]
    assert no_upstream_calls(small)


async def test_a_body_over_the_limit_is_refused_with_413(small):
    document = "{ __typename }" + " " * 4000
    async with httpx.AsyncClient(headers=small.headers) as http:
        declared = await http.post(f"{small.base_url}/graphql", json={"query": document})

        async def chunks():
            for _ in range(3):
                yield b" " * 1024

        streamed = await http.post(
            f"{small.base_url}/graphql",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
    for response in (declared, streamed):
        assert response.status_code == 413
        error = refusal(response.json())
        assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        assert error["extensions"]["requestId"] == response.headers["x-request-id"]


async def test_requests_beyond_the_rate_limit_get_429(tmp_path):
    for api in api_server(tmp_path, rate_limit="3/hour"):
        before = (await metric_samples(api))["provgraph_rate_limited"][()]
        for _ in range(3):
            await api.query("{ __typename }")
        async with httpx.AsyncClient(headers=api.headers) as http:
            refused = await http.post(f"{api.base_url}/graphql", json={"query": "{ __typename }"})
            health = await http.get(f"{api.base_url}/healthz")
        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= 3600
        assert refusal(refused.json())["extensions"]["code"] == "RATE_LIMITED"
        assert health.status_code == 200
        assert (await metric_samples(api))["provgraph_rate_limited"][()] == before + 1
        # The limit is per credential: another caller still gets through.
        api.token = bearer(subject="someone-else")
        await api.query("{ __typename }")


async def test_replicas_share_the_rate_limit_through_redis(tmp_path, redis_url):
    caller = bearer(subject=f"rate-limit-{uuid.uuid4().hex}")
    settings = {"rate_limit": "2/hour", "rate_limit_storage_url": redis_url}
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    for first in api_server(tmp_path / "first", **settings):
        for second in api_server(tmp_path / "second", **settings):
            first.token = second.token = caller
            await first.query("{ __typename }")
            await second.query("{ __typename }")
            body = await first.query("{ __typename }", expect_errors=True)
            assert refusal(body)["extensions"]["code"] == "RATE_LIMITED"


async def test_a_request_past_its_deadline_gets_504(tmp_path):
    for api in api_server(tmp_path, request_deadline_s=0.3):
        api.simulator.state.knobs.latency_s = 30  # every upstream call outlasts the deadline
        async with httpx.AsyncClient(headers=api.headers, timeout=20) as http:
            response = await http.post(
                f"{api.base_url}/graphql",
                json={
                    "query": 'query Slow { device(kind: ESN, identifier: "09123456123") { id } }'
                },
            )
        assert response.status_code == 504
        error = refusal(response.json())
        assert error["extensions"] == {
            "code": "DEADLINE_EXCEEDED",
            "requestId": response.headers["x-request-id"],
        }


async def test_mutations_never_run_over_get(small):
    mutation = """mutation { createProvisioningRecipe(input: {
      owner: { organizationUid: "f32a128c0000000000000000b175739b" }
      organizationUid: "624c9c670000000000000000ad7cd727", brand: "b" }) { recipe { uid } } }"""
    async with httpx.AsyncClient(headers=small.headers) as http:
        response = await http.get(f"{small.base_url}/graphql", params={"query": mutation})
    assert response.status_code == 400
    assert "mutations are not allowed" in response.text
    body = await small.query("{ provisioningRecipes { totalCount } }")
    assert body["data"]["provisioningRecipes"]["totalCount"] == 0


def preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }


async def test_cors_allows_only_the_configured_origins(small, api):
    async with httpx.AsyncClient() as http:
        allowed = await http.options(f"{small.base_url}/graphql", headers=preflight(ALLOWED_ORIGIN))
        other = await http.options(
            f"{small.base_url}/graphql", headers=preflight("https://elsewhere.example")
        )
        closed = await http.options(f"{api.base_url}/graphql", headers=preflight(ALLOWED_ORIGIN))
        actual = await http.post(
            f"{small.base_url}/graphql",
            json={"query": "{ __typename }"},
            headers={**small.headers, "origin": ALLOWED_ORIGIN},
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in closed.headers  # none by default
    assert actual.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "x-request-id" in actual.headers["access-control-expose-headers"]


async def test_cors_allows_graphql_over_sse_single_connection_mode(small):
    # Its reservation (PUT), its stop (DELETE) and its token header, from a page elsewhere.
    async with httpx.AsyncClient() as http:
        for method in ("PUT", "DELETE"):
            asked = {
                **preflight(ALLOWED_ORIGIN),
                "access-control-request-method": method,
                "access-control-request-headers": "authorization, x-graphql-event-stream-token",
            }
            allowed = await http.options(f"{small.base_url}/graphql", headers=asked)
            assert allowed.status_code == 200, allowed.text
            assert method in allowed.headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [("https://elsewhere.example", False), (ALLOWED_ORIGIN, True), (None, True)],
)
async def test_websocket_upgrades_check_the_origin(small, origin, accepted):
    url = small.base_url.replace("http://", "ws://") + "/graphql"
    handshake = connect(url, origin=origin, subprotocols=["graphql-transport-ws"])
    if accepted:
        async with handshake as websocket:
            assert websocket.subprotocol == "graphql-transport-ws"
    else:
        with pytest.raises(InvalidStatus) as refused:
            async with handshake:
                pass
        assert refused.value.response.status_code == 403

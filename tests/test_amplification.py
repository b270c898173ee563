"""One request cannot make the upstream work without bound: reads that may take a whole
history range are priced before anything runs, and every request has a budget of
upstream calls (MAX_UPSTREAM_CALLS_PER_REQUEST) that answers a typed error instead of
making the call that would pass it."""

import asyncio
import json
from pathlib import Path

from gql import Client, GraphQLRequest, gql
from support import Api, api_server, document, ident
from websockets.asyncio.client import connect

HISTORY_OP = "GetDeviceProvisioningHistory"
BUDGET_EXCEEDED = "UPSTREAM_BUDGET_EXCEEDED"
FULL_RANGE_READ = 5_000
WAIT_S = 60  # an upper bound, never a synchronisation


def total_counts(aliases: int) -> str:
    """The issue's reproduction: aliases of a totalCount, each over a range of its own."""
    fields = " ".join(
        f"c{day}: provisioningHistory(first: 0, occurredBefore: "
        f'"2024-12-{day:02d}T00:00:00Z") {{ totalCount }}'
        for day in range(1, aliases + 1)
    )
    return (
        "query ($kind: DeviceIdentifierKind!, $identifier: String!) "
        f"{{ device(kind: $kind, identifier: $identifier) {{ {fields} }} }}"
    )


def calls(api: Api) -> int:
    """Every upstream call the simulator answered."""
    return api.calls() + api.calls("GetDeviceList")


def refusal(body: dict) -> dict:
    assert body.get("data") is None, body
    (error,) = body["errors"]
    return error


async def test_total_count_aliases_cannot_amplify_upstream_calls(api):
    device = api.simulator.fleet.by_name("tens-of-thousands")
    assert len(api.simulator.fleet.history(device)) == 30_000

    body = await api.query(total_counts(20), ident(device), expect_errors=True)

    error = refusal(body)
    assert error["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "cost",
        "cost": 20 * FULL_RANGE_READ,
        "maximum": 50_000,
    }
    assert calls(api) == 0


async def test_a_request_never_makes_more_upstream_calls_than_its_budget(tmp_path):
    # The same request with the cost bound lifted: the budget alone holds it.
    for api in api_server(tmp_path, max_query_cost=10**9, max_upstream_calls_per_request=100):
        device = api.simulator.fleet.by_name("tens-of-thousands")

        body = await api.query(total_counts(20), ident(device), expect_errors=True)

        # 20 full reads want 1,220 calls: the budget is spent, and not one call more.
        assert body["extensions"]["cost"]["upstreamCalls"] == 100
        assert calls(api) <= 100
        assert body["errors"]
        for error in body["errors"]:
            assert error["extensions"] == {"code": BUDGET_EXCEEDED, "budget": 100}
            assert error["path"][0] == "device"
            assert "budget of 100 upstream calls" in error["message"]


async def test_the_budget_error_is_typed_and_counts_retries(tmp_path):
    settings = {
        "max_upstream_calls_per_request": 2,
        "upstream_retry_attempts": 3,
        "upstream_retry_base_delay_s": 0.001,
        "upstream_retry_max_delay_s": 0.002,
    }
    for api in api_server(tmp_path, **settings):
        # Two attempts fail and would be retried; the third would pass the budget.
        api.simulator.state.fail_next("http503", times=2, operation=HISTORY_OP)

        body = await api.query(
            document("HistoryCount"),
            {"kind": "ESN", "identifier": "09123456123"},
            expect_errors=True,
        )

        (error,) = body["errors"]
        assert error["extensions"] == {"code": BUDGET_EXCEEDED, "budget": 2}
        assert "MAX_UPSTREAM_CALLS_PER_REQUEST" in error["message"]
        assert error["path"]  # on the field that needed the call
        assert calls(api) == 2
        assert body["extensions"]["cost"]["upstreamCalls"] == 2

        # The budget is the request's: the next request has its own.
        body = await api.query(
            document("HistoryCount"), {"kind": "ESN", "identifier": "09123456123"}
        )
        assert body["data"]["device"]["provisioningHistory"]["totalCount"] == 40


async def test_cached_windows_do_not_spend_the_budget(tmp_path):
    for api in api_server(tmp_path, max_upstream_calls_per_request=30):
        device = api.simulator.fleet.by_name("twelve-thousand")
        variables = {**ident(device), "occurredBefore": "2026-06-01T00:00:00Z"}
        twice = """query ($kind: DeviceIdentifierKind!, $identifier: String!,
          $occurredBefore: DateTime) { device(kind: $kind, identifier: $identifier) {
            a: provisioningHistory(first: 0, occurredBefore: $occurredBefore) { totalCount }
            b: provisioningHistory(first: 0, occurredBefore: $occurredBefore) { totalCount }
          } }"""
        cold = await api.query(document("HistoryCount"), variables)
        assert cold["data"]["device"]["provisioningHistory"]["totalCount"] == 12_000
        spent = calls(api)
        assert spent <= 30

        warm = await api.query(twice, variables)

        assert warm["data"]["device"] == {"a": {"totalCount": 12_000}, "b": {"totalCount": 12_000}}
        assert calls(api) == spent
        assert warm["extensions"]["cost"]["upstreamCalls"] == 0
        assert warm["extensions"]["cost"]["cacheHits"] > 30  # more windows than the budget


READS = [
    # (selection, page size, full-range reads)
    # A count reads the whole range, whatever page comes with it.
    ("provisioningHistory(first: 0) { totalCount }", 0, 1),
    ("provisioningHistory(first: 10) { ...Count }", 10, 1),
    # A filtered page reads on until it has its matches, backwards or forwards.
    ('provisioningHistory(last: 1, filter: { eventBy: ["nobody"] }) { edges { cursor } }', 1, 1),
    ("provisioningHistory(first: 5, filter: { statuses: [] }) { totalCount }", 5, 2),
    # Backwards, even an empty page looks for one match, to tell hasPreviousPage.
    ('provisioningHistory(last: 0, filter: { eventBy: ["nobody"] }) { edges { cursor } }', 0, 1),
    # Forwards, an empty page reads one window, filtered or not; an empty filter is none.
    ('provisioningHistory(first: 0, filter: { statuses: ["Failure"] }) { edges { cursor } }', 0, 0),
    ("provisioningHistory(first: 20, filter: {}) { edges { cursor } }", 20, 0),
    # A backward search takes a bounded number of windows, whatever the range.
    ("provisioningHistory(last: 20) { edges { cursor } }", 20, 0),
]


def under_ten_devices(selection: str) -> str:
    query = f"query {{ devices(first: 10) {{ edges {{ node {{ {selection} }} }} }} }}"
    if "...Count" in selection:
        query += " fragment Count on ProvisioningEventConnection { totalCount }"
    return query


async def test_full_range_reads_are_priced_before_running(api, tmp_path):
    (tmp_path / "strict").mkdir()
    for strict in api_server(tmp_path / "strict", max_query_cost=1):
        for selection, page, full_reads in READS:
            body = await strict.query(under_ten_devices(selection), expect_errors=True)
            cost = 10 + 10 * (page + full_reads * FULL_RANGE_READ)
            assert refusal(body)["extensions"]["cost"] == cost, selection
        assert calls(strict) == 0
    # At the default bound of 50,000, ten devices with a full-range read each are too
    # many by the devices alone; the same pages without one run.
    for selection, _, full_reads in READS:
        body = await api.query(under_ten_devices(selection), expect_errors=bool(full_reads))
        if full_reads:
            assert refusal(body)["extensions"]["code"] == "QUERY_TOO_COMPLEX", selection
        else:
            assert len(body["data"]["devices"]["edges"]) == 10


async def test_a_synchronous_report_stays_within_the_budget_and_a_job_does_not_need_to(tmp_path):
    for api in api_server(tmp_path, max_upstream_calls_per_request=10):
        devices = [d for d in api.simulator.fleet.devices if d.profile.name == "ordinary"][:30]
        report = {
            "devices": [ident(d) for d in devices],
            "occurredAfter": "2000-01-01T00:00:00Z",
            "occurredBefore": "2030-01-01T00:00:00Z",
        }

        body = await api.query(document("FleetReport"), {"input": report}, expect_errors=True)

        (error,) = body["errors"]
        assert error["path"] == ["provisioningReport"]
        assert error["extensions"] == {"code": BUDGET_EXCEEDED, "budget": 10}
        assert body["extensions"]["cost"]["upstreamCalls"] == 10
        assert calls(api) <= 10

        # A job is not a request: the same devices, read in the background, all of them.
        started = await api.query(document("StartReport"), {"input": report})
        job = started["data"]["startProvisioningReport"]["job"]["id"]
        async with asyncio.timeout(WAIT_S), Client(transport=api.websocket()) as session:
            updates = [
                u["provisioningReportProgress"]
                async for u in session.subscribe(
                    GraphQLRequest(gql(document("ReportProgress")), variable_values={"jobId": job})
                )
            ]
        assert updates[-1]["state"] == "SUCCEEDED"
        assert updates[-1]["result"]["devicesScanned"] == 30
        assert updates[-1]["progress"]["upstreamCalls"] > 10


async def test_operations_over_one_websocket_each_have_their_own_budget(tmp_path: Path):
    for api in api_server(tmp_path, max_upstream_calls_per_request=30):
        device = api.simulator.fleet.by_name("twelve-thousand")
        query = document("HistoryCount")
        async with connect(api.ws_url, subprotocols=["graphql-transport-ws"]) as socket:
            await socket.send(json.dumps({"type": "connection_init", "payload": api.headers}))
            assert json.loads(await socket.recv())["type"] == "connection_ack"
            payloads = []
            # Two reads of about 25 calls each: 50 together, over the budget of each.
            for number, end in enumerate(("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z")):
                variables = {**ident(device), "occurredBefore": end}
                await socket.send(
                    json.dumps(
                        {
                            "id": str(number),
                            "type": "subscribe",
                            "payload": {"query": query, "variables": variables},
                        }
                    )
                )
                async with asyncio.timeout(WAIT_S):
                    message = json.loads(await socket.recv())
                    assert json.loads(await socket.recv())["type"] == "complete"
                payloads.append(message["payload"])
        for payload in payloads:
            assert "errors" not in payload, payload["errors"]
            assert payload["data"]["device"]["provisioningHistory"]["totalCount"] == 12_000
            assert 0 < payload["extensions"]["cost"]["upstreamCalls"] <= 30
        spent = [p["extensions"]["cost"]["upstreamCalls"] for p in payloads]
        assert sum(spent) == calls(api)  # each operation says what it alone spent

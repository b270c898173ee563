"""The history API as frontends use it: Relay paging, filters, errors, call counts."""

import asyncio

import pytest
from support import document, ident, lossless_floor

from models.instants import format_api_instant, parse_instant

HISTORY = document("DeviceHistory")
LATEST = document("LatestEvents")
COUNT = document("HistoryCount")


def node_of(event) -> dict:
    return {
        "occurredAt": format_api_instant(event.occurred_at),
        "status": event.status,
        "eventBy": event.event_by,
        "eventType": event.event_type,
        "servicePlan": event.service_plan,
        "mdn": event.mdn,
        "msisdn": event.msisdn,
        "extendedAttributes": [{"key": a.key, "value": a.value} for a in event.extended_attributes],
    }


def history_of(body: dict) -> dict:
    return body["data"]["device"]["provisioningHistory"]


FIXED_END = {"occurredBefore": "2026-06-01T00:00:00Z"}
"""An explicit range end: the default (now) moves on while a long test runs."""
PROBE = 1
"""The history call that finds a device (an empty range) before its history is read."""


async def read_all(api, device, first: int, **variables) -> tuple[list[dict], int]:
    """Every event of the device, page by page forwards; and the pages it took."""
    variables = {**FIXED_END, **variables}
    nodes, after, pages = [], None, 0
    while True:
        body = await api.query(
            HISTORY, {**ident(device), "first": first, "after": after, **variables}
        )
        connection = history_of(body)
        nodes += [edge["node"] for edge in connection["edges"]]
        pages += 1
        assert connection["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not connection["pageInfo"]["hasNextPage"]:
            return nodes, pages
        after = connection["pageInfo"]["endCursor"]


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("twelve-thousand", 500),
        ("twelve-thousand", 137),
        ("boundary-millisecond", 50),
        ("burst", 7),
        ("sub-millisecond", 100),
        ("exactly-500", 500),
        ("empty", 50),
    ],
)
async def test_reading_everything_costs_the_lossless_floor_cold_and_nothing_warm(api, name, first):
    device = api.simulator.fleet.by_name(name)
    truth = api.simulator.fleet.history(device)

    nodes, _ = await read_all(api, device, first)

    assert nodes == [node_of(e) for e in truth]
    cold = api.calls() - PROBE  # the pager's calls
    assert cold <= lossless_floor([e.occurred_at for e in truth])
    if name == "twelve-thousand":
        assert cold == 25
    assert api.calls("GetDeviceList") == 0

    again, _ = await read_all(api, device, first)
    assert again == nodes
    assert api.calls() == PROBE + cold
    assert api.calls("GetDeviceList") == 0


async def test_latest_20_of_a_year_costs_at_most_16_calls_cold(api):
    device = api.simulator.fleet.by_name("twelve-thousand")
    truth = api.simulator.fleet.history(device)

    body = await api.query(LATEST, {**ident(device), "last": 20})

    connection = history_of(body)
    assert [e["node"]["occurredAt"] for e in connection["edges"]] == [
        format_api_instant(e.occurred_at) for e in truth[-20:]
    ]
    assert connection["pageInfo"]["hasPreviousPage"] is True
    assert connection["pageInfo"]["hasNextPage"] is False
    assert api.calls() - PROBE <= 16
    assert body["extensions"]["cost"]["upstreamCalls"] == api.calls()  # the probe included


async def test_paging_backwards_walks_the_whole_history(api):
    device = api.simulator.fleet.by_name("boundary-millisecond")
    truth = api.simulator.fleet.history(device)
    seen: list[str] = []
    before = None
    while True:
        connection = history_of(
            await api.query(LATEST, {**ident(device), "last": 37, "before": before})
        )
        seen = [e["node"]["occurredAt"] for e in connection["edges"]] + seen
        assert connection["pageInfo"]["hasNextPage"] is (before is not None)
        if not connection["pageInfo"]["hasPreviousPage"]:
            break
        before = connection["pageInfo"]["startCursor"]
    assert seen == [format_api_instant(e.occurred_at) for e in truth]


async def test_backwards_through_an_overfull_instant_reports_the_gap(api):
    device = api.simulator.fleet.by_name("over-500-instant")
    truth = [format_api_instant(e.occurred_at) for e in api.simulator.fleet.history(device)]
    crowded = max(set(truth), key=truth.count)
    reachable = [t for t in truth if t != crowded]
    reachable[truth.index(crowded) : truth.index(crowded)] = [crowded] * 500

    seen, before, warnings = [], None, []
    while True:
        body = await api.query(LATEST, {**ident(device), "last": 300, "before": before})
        connection = history_of(body)
        warnings += body["extensions"].get("warnings", [])
        seen = [e["node"]["occurredAt"] for e in connection["edges"]] + seen
        if not connection["pageInfo"]["hasPreviousPage"]:
            break
        before = connection["pageInfo"]["startCursor"]

    assert seen == reachable
    assert [(w["code"], w["occurredAt"], w["delivered"]) for w in warnings] == [
        ("UPSTREAM_GAP", crowded, 500)
    ]


async def test_cursors_from_either_direction_meet(api):
    device = api.simulator.fleet.by_name("burst")
    truth = [format_api_instant(e.occurred_at) for e in api.simulator.fleet.history(device)]
    forward = history_of(await api.query(HISTORY, {**ident(device), "first": 520} | {"first": 500}))
    middle = forward["edges"][300]["cursor"]

    before = history_of(await api.query(LATEST, {**ident(device), "last": 10, "before": middle}))
    after = history_of(await api.query(HISTORY, {**ident(device), "first": 10, "after": middle}))

    assert [e["node"]["occurredAt"] for e in before["edges"]] == truth[290:300]
    assert [e["node"]["occurredAt"] for e in after["edges"]] == truth[301:311]
    # Cursors handed out by a backward page resume forwards, and the other way round.
    back_end = before["pageInfo"]["endCursor"]
    resumed = history_of(await api.query(HISTORY, {**ident(device), "first": 2, "after": back_end}))
    assert [e["node"]["occurredAt"] for e in resumed["edges"]] == truth[300:302]


async def test_after_and_before_together_bound_the_page(api):
    device = api.simulator.fleet.by_name("boundary-millisecond")
    truth = [format_api_instant(e.occurred_at) for e in api.simulator.fleet.history(device)]
    page = history_of(await api.query(HISTORY, {**ident(device), "first": 500}))
    a, b = page["edges"][490]["cursor"], page["edges"][497]["cursor"]

    forward = history_of(
        await api.query(HISTORY, {**ident(device), "first": 50, "after": a, "before": b})
    )
    backward = history_of(
        await api.query(LATEST, {**ident(device), "last": 50, "after": a, "before": b})
    )
    both = [e["node"]["occurredAt"] for e in forward["edges"]]
    assert both == truth[491:497]
    assert [e["node"]["occurredAt"] for e in backward["edges"]] == both
    assert forward["pageInfo"]["hasNextPage"] is True
    assert backward["pageInfo"]["hasPreviousPage"] is False


async def test_a_filtered_page_is_still_full(api):
    device = api.simulator.fleet.by_name("twelve-thousand")
    truth = api.simulator.fleet.history(device)
    wanted = [e for e in truth if e.event_type == "Activation" and e.status == "Failure"]
    variables = {**ident(device), "filter": {"eventTypes": ["activation"], "statuses": ["FAILURE"]}}

    first = history_of(await api.query(HISTORY, {**variables, "first": 50}))
    last = history_of(await api.query(LATEST, {**variables, "last": 20}))
    count = await api.query(COUNT, variables)

    assert [e["node"] for e in first["edges"]] == [node_of(e) for e in wanted[:50]]
    assert [e["node"]["occurredAt"] for e in last["edges"]] == [
        format_api_instant(e.occurred_at) for e in wanted[-20:]
    ]
    assert history_of(count)["totalCount"] == len(wanted)


async def test_paging_a_filter_through_gives_every_match(api):
    device = api.simulator.fleet.by_name("sub-millisecond")
    truth = api.simulator.fleet.history(device)
    nodes, _ = await read_all(api, device, 40, filter={"eventBy": ["Wei Chen"]})
    assert nodes == [node_of(e) for e in truth if e.event_by == "Wei Chen"]


async def test_a_range_is_inclusive_at_both_ends(api):
    device = api.simulator.fleet.by_name("seed-meid")
    body = await api.query(
        HISTORY,
        {
            "kind": "MEID",
            "identifier": "54689785258599",
            "first": 10,
            "occurredAfter": "2017-01-02T12:00:48.210Z",
            "occurredBefore": "2017-01-02T13:02:06.22+01:00",
        },
    )
    nodes = [e["node"] for e in history_of(body)["edges"]]
    assert [(n["occurredAt"], n["eventType"]) for n in nodes] == [
        ("2017-01-02T12:00:48.210Z", "Suspension Confirmed"),
        ("2017-01-02T12:02:06.220Z", "Resume Confirmed"),
    ]
    assert device.primary.identifier == "54689785258599"


async def test_total_count_costs_nothing_unless_selected(api):
    device = api.simulator.fleet.by_name("twelve-thousand")
    await api.query(HISTORY, {**ident(device), "first": 5})
    assert api.calls() == PROBE + 1
    body = await api.query(COUNT, ident(device))
    assert history_of(body)["totalCount"] == 12_000
    assert api.calls() == PROBE + 25


async def test_identical_concurrent_cold_queries_cost_one_querys_calls(api):
    device = api.simulator.fleet.by_name("twelve-thousand")
    variables = {**ident(device), "first": 50, "occurredBefore": "2026-01-01T00:00:00Z"}
    bodies = await asyncio.gather(*(api.query(HISTORY, variables) for _ in range(100)))
    assert len({str(history_of(b)["edges"]) for b in bodies}) == 1
    assert api.calls() == PROBE + 1
    assert api.calls("GetDeviceList") == 0


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"first": 501}, "first must be between 0 and 500"),
        ({"first": -1}, "first must be between 0 and 500"),
        ({"after": "not-a-cursor"}, "not valid"),
        ({"after": "eyJmb28iOiAiYmFyIn0"}, "not valid"),
        ({"occurredAfter": "2020-01-02", "occurredBefore": "2020-01-01"}, "occurredAfter"),
    ],
)
async def test_bad_arguments_are_bad_user_input(api, variables, message):
    device = api.simulator.fleet.by_name("seed-esn")
    body = await api.query(HISTORY, {**ident(device), **variables}, expect_errors=True)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert message in error["message"]
    assert api.calls() == PROBE  # the device is looked up; its history is never read


async def test_first_and_last_together_are_refused(api):
    body = await api.query(
        '{ device(kind: ESN, identifier: "09123456123") '
        "{ provisioningHistory(first: 1, last: 1) { edges { cursor } } } }",
        expect_errors=True,
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_tampered_or_foreign_cursor_is_refused(api):
    fleet = api.simulator.fleet
    mine, other = fleet.by_name("burst"), fleet.by_name("sub-millisecond")
    cursor = history_of(await api.query(HISTORY, {**ident(mine), "first": 3}))["pageInfo"][
        "endCursor"
    ]
    tampered = cursor[:12] + ("A" if cursor[12] != "A" else "B") + cursor[13:]
    cases = [
        (ident(mine), tampered),
        (ident(other), cursor),
        ({**ident(mine), "filter": {"statuses": ["Success"]}}, cursor),
        ({**ident(mine), "occurredAfter": "2017-02-01"}, cursor),
    ]
    for variables, after in cases:
        body = await api.query(
            HISTORY, {**variables, "first": 3, "after": after}, expect_errors=True
        )
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", variables


async def test_unknown_device_is_null_not_an_error(api):
    body = await api.query(HISTORY, {"kind": "IMEI", "identifier": "000000000000000"})
    assert body["data"]["device"] is None
    assert api.calls("GetDeviceList") == 0
    assert api.calls() == PROBE  # the probe that finds the device unknown


async def test_an_identifier_the_upstream_would_refuse_is_bad_user_input(api):
    body = await api.query(HISTORY, {"kind": "IMEI", "identifier": "12'3"}, expect_errors=True)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert api.calls("GetDeviceList") == api.calls() == 0


async def test_a_device_named_many_times_is_looked_up_once(api):
    body = await api.query(
        """
        query ($id: ID!) {
          a: device(kind: MEID, identifier: "54689785258599") { id }
          b: device(kind: MEID, identifier: "54689785258599") { identifiers { kind } }
          c: device(kind: MDN, identifier: "5348152777") { id }
          n: node(id: $id) { id }
          x: device(kind: IMEI, identifier: "111111111111111") { id }
          y: device(kind: IMEI, identifier: "111111111111111") { id }
        }
        """,
        {"id": "RGV2aWNlOm1laWQ6NTQ2ODk3ODUyNTg1OTk"},
    )
    data = body["data"]
    assert data["a"]["id"] == data["n"]["id"] == "RGV2aWNlOm1laWQ6NTQ2ODk3ODUyNTg1OTk"
    assert data["x"] is data["y"] is None
    assert api.calls("GetDeviceList") == 1  # for b's identifiers
    assert api.calls() == 3 * PROBE  # one per identifier: MEID, MDN, the unknown IMEI


async def test_an_upstream_failure_fails_only_its_field(api):
    seed = api.simulator.fleet.by_name("seed-esn")
    # Both devices' lookups are now cached.
    await api.query(HISTORY, {**ident(seed), "first": 1})
    await api.query('{ device(kind: MEID, identifier: "54689785258599") { id } }')
    # As many as the attempts a call gets (UPSTREAM_RETRY_ATTEMPTS): each is retried.
    api.simulator.state.fail_next("http503", times=3, operation="GetDeviceProvisioningHistory")
    body = await api.query(
        """
        {
          broken: device(kind: ESN, identifier: "09123456123") {
            provisioningHistory(first: 1, occurredAfter: "2016-06-01") { edges { cursor } }
          }
          fine: device(kind: MEID, identifier: "54689785258599") {
            identifier { identifier }
          }
        }
        """,
        expect_errors=True,
    )
    (error,) = body["errors"]
    assert error["path"] == ["broken", "provisioningHistory"]
    assert error["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert error["extensions"]["httpStatus"] == 503
    assert body["data"]["fine"] == {"identifier": {"identifier": "54689785258599"}}


async def test_an_upstream_fault_keeps_its_code(api):
    await api.query('{ device(kind: ESN, identifier: "09123456123") { id } }')
    api.simulator.state.knobs.fault_code = "UnifiedWebService.REQUEST_FAILED.AccountNotFound"
    api.simulator.state.fail_next("fault", operation="GetDeviceProvisioningHistory")
    body = await api.query(
        HISTORY, {"kind": "ESN", "identifier": "09123456123"}, expect_errors=True
    )
    extensions = body["errors"][0]["extensions"]
    assert extensions == {
        "code": "UPSTREAM_FAULT",
        "upstreamCode": "REQUEST_FAILED.AccountNotFound",
    }
    assert "The request could not be processed." in body["errors"][0]["message"]


async def test_events_the_upstream_cannot_deliver_are_a_warning(api):
    device = api.simulator.fleet.by_name("over-500-instant")
    body = await api.query(HISTORY, {**ident(device), "first": 500, "after": None})
    after = history_of(body)["pageInfo"]["endCursor"]
    body = await api.query(HISTORY, {**ident(device), "first": 500, "after": after})
    (warning,) = body["extensions"]["warnings"]
    assert warning["code"] == "UPSTREAM_GAP"
    assert warning["device"] == ident(device)
    assert warning["delivered"] == 500
    assert "unreachable" in warning["message"]


async def test_default_range_reaches_the_latest_events(api):
    device = api.simulator.fleet.by_name("seed-esn")
    truth = api.simulator.fleet.history(device)
    body = await api.query(LATEST, {**ident(device), "last": 3})
    assert [e["node"]["occurredAt"] for e in history_of(body)["edges"]] == [
        format_api_instant(e.occurred_at) for e in truth[-3:]
    ]
    first = history_of(await api.query(HISTORY, {**ident(device), "first": 1}))
    assert first["edges"][0]["node"] == node_of(truth[0])
    assert parse_instant("2000-01-01") < truth[0].occurred_at


async def test_a_cursor_keeps_its_range_when_the_default_moves(api):
    device = api.simulator.fleet.by_name("seed-esn")
    page = history_of(await api.query(HISTORY, {**ident(device), "first": 10}))
    # The next page is asked with the defaults again: it must read the same range.
    following = history_of(
        await api.query(
            HISTORY, {**ident(device), "first": 10, "after": page["pageInfo"]["endCursor"]}
        )
    )
    assert following["edges"]

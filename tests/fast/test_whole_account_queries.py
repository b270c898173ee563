"""Whole-account reports: every device of the account, from its device list, as far as a
device filter keeps them; checked against the simulator's fleet and histories, read here
on their own. A report computed in the request refuses an account larger than
REPORT_MAX_DEVICES before reading any history; a job takes it."""

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest
from support import RANGE, REPORT, START, WAIT_S, InProcess, bearer, document, in_process

from models.events import ProvisioningEvent
from models.instants import parse_instant
from models.principal import HISTORY_READ, REPORTS_READ, SCOPES
from server.testing import authorization
from soap.simulator.fleet import SUB_ACCOUNT, SimDevice

PROGRESS = document("ReportProgress")
LISTED = "GetDeviceList"
Named = Callable[[SimDevice], tuple[str, str] | None]
"""The (KIND, identifier) a filter reads a fleet device by, or None where it leaves it out."""


def every(device: SimDevice) -> tuple[str, str] | None:
    return device.primary.kind.upper(), device.primary.identifier


def of_kinds(*kinds: str) -> Named:
    def named(device: SimDevice) -> tuple[str, str] | None:
        found = next((i for i in device.identifiers if i.kind in kinds), None)
        return (found.kind.upper(), found.identifier) if found else None

    return named


def where(keep: Callable[[SimDevice], bool], then: Named = every) -> Named:
    return lambda device: then(device) if keep(device) else None


def readable(api: InProcess, device: SimDevice) -> list[ProvisioningEvent]:
    """The device's events in RANGE that the upstream can deliver: at most 500 of one
    instant (docs/ARCHITECTURE.md), the first in its order."""
    lo, hi = parse_instant(RANGE["occurredAfter"]), parse_instant(RANGE["occurredBefore"])
    at: Counter[int] = Counter()
    events = []
    for event in api.simulator.fleet.history(device):
        at[event.occurred_at] += 1
        if lo <= event.occurred_at <= hi and at[event.occurred_at] <= 500:
            events.append(event)
    return events


def truth(api: InProcess, named: Named) -> Counter[tuple[str, str]]:
    """Events in RANGE of each device the filter keeps, by the identifier it is read by."""
    counts: Counter[tuple[str, str]] = Counter()
    for device in api.simulator.fleet.devices:
        name = named(device)
        if name is not None:
            counts[name] += len(readable(api, device))
    return counts


def kept(api: InProcess, named: Named) -> int:
    return sum(named(d) is not None for d in api.simulator.fleet.devices)


def per_device(report: dict) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for row in report["rows"]:
        device = row["key"]["device"]
        counts[device["kind"], device["identifier"]] += row["count"]
    return counts


async def test_a_whole_account_report_matches_the_ground_truth(api):
    body = await api.query(REPORT, {"input": {**RANGE, "groupBy": ["STATUS", "DEVICE"]}})
    report = body["data"]["provisioningReport"]

    expected: Counter[tuple[str, str, str]] = Counter()
    for device in api.simulator.fleet.devices:
        for e in readable(api, device):
            expected[e.status, device.primary.kind.upper(), device.primary.identifier] += 1
    got = {
        (r["key"]["status"], r["key"]["device"]["kind"], r["key"]["device"]["identifier"]): r[
            "count"
        ]
        for r in report["rows"]
    }
    assert got == dict(expected)
    assert report["devicesScanned"] == len(api.simulator.fleet.devices)
    assert report["totalEvents"] == sum(expected.values())
    assert report["failures"] == []
    crowded = api.simulator.fleet.by_name("over-500-instant").primary.identifier
    gaps = [w["device"]["identifier"] for w in body["extensions"]["warnings"]]
    assert gaps == [crowded]
    assert api.calls(LISTED) == 1  # the whole fleet is one page of the device list


@pytest.mark.parametrize(
    ("device_filter", "named"),
    [
        ({"kinds": ["ESN"]}, of_kinds("esn")),
        # ICCID devices carry an IMEI too: they are read, and shown, by it.
        ({"kinds": ["IMEI"]}, of_kinds("imei")),
        ({"kinds": ["EID", "MEID"]}, of_kinds("eid", "meid")),
        ({"accountName": SUB_ACCOUNT}, where(lambda d: d.account == SUB_ACCOUNT)),
        (
            {"activatedAfter": "2020-01-01T00:00:00Z"},
            where(lambda d: d.profile.start >= parse_instant("2020-01-01T00:00:00Z")),
        ),
        # Both bounds are inclusive: the devices activated at 2016-01-01 are in.
        (
            {"activatedBefore": "2016-01-01T00:00:00Z"},
            where(lambda d: d.profile.start <= parse_instant("2016-01-01T00:00:00Z")),
        ),
        (
            {
                "kinds": ["MSISDN"],
                "accountName": SUB_ACCOUNT,
                "activatedAfter": "2016-01-01T00:00:00Z",
                "activatedBefore": "2017-01-01T00:00:00Z",
            },
            where(
                lambda d: (
                    d.account == SUB_ACCOUNT
                    and parse_instant("2016-01-01T00:00:00Z")
                    <= d.profile.start
                    <= parse_instant("2017-01-01T00:00:00Z")
                ),
                of_kinds("msisdn"),
            ),
        ),
    ],
    ids=["esn", "imei", "eid-meid", "account", "after", "before", "all-four"],
)
async def test_the_device_filter_keeps_what_each_criterion_says(api, device_filter, named):
    variables = {"input": {**RANGE, "groupBy": ["DEVICE"], "deviceFilter": device_filter}}
    report = (await api.query(REPORT, variables))["data"]["provisioningReport"]
    expected = truth(api, named)
    assert 0 < kept(api, named) < len(api.simulator.fleet.devices)
    assert report["devicesScanned"] == kept(api, named)
    assert per_device(report) == +expected  # devices without events in range have no row
    assert report["totalEvents"] == sum(expected.values())


async def test_a_whole_account_larger_than_the_cap_says_to_start_a_job(tier, tmp_path):
    async with in_process(tier, tmp_path, report_max_devices=50) as api:
        body = await api.query(REPORT, {"input": RANGE}, expect_errors=True)
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "REPORT_TOO_LARGE"
        assert error["extensions"]["limit"] == 50
        assert "startProvisioningReport" in error["message"]
        assert body["data"] is None
        assert api.calls() == 0  # no history was read
        assert api.calls(LISTED) == 1

        # The cap counts the devices the filter keeps, not the account's.
        recent = {"activatedAfter": "2020-01-01T00:00:00Z"}
        named = where(lambda d: d.profile.start >= parse_instant(recent["activatedAfter"]))
        assert kept(api, named) <= 50
        report = await api.query(REPORT, {"input": {**RANGE, "deviceFilter": recent}})
        assert report["data"]["provisioningReport"]["devicesScanned"] == kept(api, named)


async def test_a_job_reports_over_the_whole_account_past_the_cap(tier, tmp_path):
    async with in_process(tier, tmp_path, report_max_devices=50) as api:
        sub_account = {"accountName": SUB_ACCOUNT}
        named = where(lambda d: d.account == SUB_ACCOUNT)
        assert kept(api, named) > 50
        variables = {"input": {**RANGE, "deviceFilter": sub_account}}
        started = (await api.query(START, variables))["data"]["startProvisioningReport"]
        assert started["userErrors"] == []
        assert started["job"]["progress"]["devicesTotal"] == 0  # not listed yet

        async with asyncio.timeout(WAIT_S):
            updates = [
                u["data"]["provisioningReportProgress"]
                async for u in api.subscribe(PROGRESS, {"jobId": started["job"]["id"]})
            ]
        final = updates[-1]
        assert final["state"] == "SUCCEEDED", final
        assert final["progress"]["devicesTotal"] == kept(api, named)
        assert final["progress"]["devicesDone"] == kept(api, named)
        assert final["result"] == {
            "totalEvents": sum(truth(api, named).values()),
            "devicesScanned": kept(api, named),
        }
        assert api.calls(LISTED) == 1


FILTER_ERRORS = {
    "no kinds": ({"deviceFilter": {"kinds": []}}, ["deviceFilter", "kinds"], "REQUIRED"),
    "blank account": (
        {"deviceFilter": {"accountName": "  "}},
        ["deviceFilter", "accountName"],
        "REQUIRED",
    ),
    "long account": (
        {"deviceFilter": {"accountName": "0" * 129}},
        ["deviceFilter", "accountName"],
        "TOO_LONG",
    ),
    "NUL in account": (
        {"deviceFilter": {"accountName": "0342077109\x00"}},
        ["deviceFilter", "accountName"],
        "INVALID_CHARACTERS",
    ),
    "activation range": (
        {
            "deviceFilter": {
                "activatedAfter": "2020-01-01T00:00:00Z",
                "activatedBefore": "2019-01-01T00:00:00Z",
            }
        },
        ["deviceFilter", "activatedAfter"],
        "INVALID_RANGE",
    ),
    "devices and a filter": (
        {"devices": [{"kind": "ESN", "identifier": "09123456123"}], "deviceFilter": {}},
        ["deviceFilter"],
        "INVALID",
    ),
}


@pytest.mark.parametrize("case", FILTER_ERRORS)
async def test_bad_device_filter_input_is_refused(api, case):
    changes, field, code = FILTER_ERRORS[case]
    variables = {"input": {**RANGE, **changes}}
    body = await api.query(REPORT, variables, expect_errors=True)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert ".".join(field) in error["message"]
    started = (await api.query(START, variables))["data"]["startProvisioningReport"]
    assert started["job"] is None
    assert [(e["field"], e["code"]) for e in started["userErrors"]] == [(["input", *field], code)]
    assert (api.calls(), api.calls(LISTED)) == (0, 0)


async def test_a_refused_device_list_fails_the_report_before_any_history(api):
    api.simulator.state.knobs.device_list_fault = "access"
    body = await api.query(REPORT, {"input": RANGE}, expect_errors=True)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "UPSTREAM_FAULT"
    assert api.calls() == 0


async def test_whole_account_reports_need_history_read_besides_reports_read(api):
    # Devices belong to the upstream account, not to an organization: a caller of no
    # organization may report over them. But such a report lists the account's devices,
    # which only history:read shows (as Query.devices): both scopes are needed, and a
    # report over devices the caller names needs reports:read alone.
    lacking = authorization(bearer(scopes=[s for s in SCOPES if s != REPORTS_READ]))
    refused = await api.query(REPORT, {"input": RANGE}, lacking, expect_errors=True)
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    assert (api.calls(), api.calls(LISTED)) == (0, 0)

    recent = {**RANGE, "deviceFilter": {"activatedAfter": "2025-01-01T00:00:00Z"}}
    reports_only = authorization(bearer(organizations=[], scopes=[REPORTS_READ]))
    refused = await api.query(REPORT, {"input": recent}, reports_only, expect_errors=True)
    (error,) = refused["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert "history:read" in error["message"]
    assert (api.calls(), api.calls(LISTED)) == (0, 0)

    nobody = authorization(bearer(organizations=[], scopes=[REPORTS_READ, HISTORY_READ]))
    body = await api.query(REPORT, {"input": recent}, nobody)
    assert body["data"]["provisioningReport"]["devicesScanned"] == 1

"""Fleet reports checked against the simulator's ground truth, computed here on its own;
report jobs: progress, cancelling, the cap per credential."""

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from math import ceil
from zoneinfo import ZoneInfo

import pytest
from support import (
    RANGE,
    REPORT,
    START,
    WAIT_S,
    InProcess,
    bearer,
    document,
    ident,
    in_process,
    ordinary,
)

from models.devices import DeviceIdentifier
from models.events import ProvisioningEvent
from models.instants import format_api_instant, from_datetime, parse_instant
from server.testing import authorization

PROGRESS = document("ReportProgress")


def windows(events: int) -> int:
    """Upstream calls to read a history with no two events at one instant."""
    return 1 if events <= 500 else 1 + ceil((events - 500) / 499)


async def test_report_counts_match_the_ground_truth(api):
    devices = [*ordinary(api, 25), api.simulator.fleet.by_name("seed-meid")]
    body = await api.query(
        REPORT,
        {
            "input": {
                "devices": [ident(d) for d in devices],
                **RANGE,
                "groupBy": ["EVENT_TYPE", "STATUS", "DEVICE"],
                "filter": {"statuses": ["Success", "Failure"]},
            }
        },
    )
    report = body["data"]["provisioningReport"]

    truth: dict[tuple, list[int]] = {}
    lo, hi = parse_instant(RANGE["occurredAfter"]), parse_instant(RANGE["occurredBefore"])
    for device in devices:
        for e in api.simulator.fleet.history(device):
            if lo <= e.occurred_at <= hi:
                key = (e.event_type, e.status, device.primary.identifier)
                row = truth.setdefault(key, [0, e.occurred_at, e.occurred_at])
                row[0] += 1
                row[1], row[2] = min(row[1], e.occurred_at), max(row[2], e.occurred_at)
    got = {
        (r["key"]["eventType"], r["key"]["status"], r["key"]["device"]["identifier"]): [
            r["count"],
            r["firstOccurredAt"],
            r["lastOccurredAt"],
        ]
        for r in report["rows"]
    }
    assert got == {
        k: [c, format_api_instant(f), format_api_instant(la)] for k, (c, f, la) in truth.items()
    }
    assert report["totalEvents"] == sum(c for c, _, _ in truth.values())
    assert report["devicesScanned"] == len(devices)
    assert report["failures"] == []


async def test_a_report_costs_each_devices_pages_cold_and_nothing_warm(api):
    devices = ordinary(api, 30)
    sizes = [len(api.simulator.fleet.history(d)) for d in devices]
    variables = {
        "input": {
            "devices": [ident(d) for d in devices],
            **RANGE,
            "occurredBefore": "2030-01-01T00:00:00Z",
        }
    }
    cold = await api.query(REPORT, variables)
    assert api.calls() == sum(windows(n) for n in sizes)
    assert cold["extensions"]["cost"]["upstreamCalls"] == api.calls()
    warm = await api.query(REPORT, variables)
    assert api.calls() == sum(windows(n) for n in sizes)
    assert warm["extensions"]["cost"] == {"upstreamCalls": 0, "cacheHits": sum(map(windows, sizes))}
    assert warm["data"] == cold["data"]


async def test_a_report_reuses_what_a_history_read_cached(api):
    device = api.simulator.fleet.by_name("twelve-thousand")
    end = "2026-06-01T00:00:00Z"
    await api.query(
        document("DeviceHistory"),
        {
            **ident(device),
            "first": 500,
            "occurredAfter": RANGE["occurredAfter"],
            "occurredBefore": end,
        },
    )
    before = api.calls()
    await api.query(REPORT, {"input": {"devices": [ident(device)], **RANGE, "occurredBefore": end}})
    assert api.calls() - before == 24  # the first window came from the cache


async def test_failing_devices_are_listed_and_the_rest_completes(api):
    good = ordinary(api, 3)
    body = await api.query(
        REPORT,
        {
            "input": {
                "devices": [ident(d) for d in good]
                + [{"kind": "IMEI", "identifier": "000000000000000"}],
                **RANGE,
            }
        },
    )
    report = body["data"]["provisioningReport"]
    assert report["devicesScanned"] == 3
    assert report["failures"] == [
        {
            "device": {"kind": "IMEI", "identifier": "000000000000000"},
            "code": "REQUEST_FAILED.DeviceNotFound",
            "message": "The device was not found.",
        }
    ]
    assert report["totalEvents"] == sum(len(api.simulator.fleet.history(d)) for d in good)


async def test_upstream_calls_in_flight_stay_within_the_bound(api):
    api.gate.shut()  # calls pile up at the simulator as far as the bound lets them
    devices = ordinary(api, 40)
    report = asyncio.create_task(
        api.query(REPORT, {"input": {"devices": [ident(d) for d in devices], **RANGE}})
    )
    await api.gate.holding(8)  # UPSTREAM_CONCURRENCY's default
    api.gate.open()
    await report
    assert api.gate.peak == 8
    assert api.simulator.state.peak_in_flight <= 8


NEW_YORK = ZoneInfo("America/New_York")


def scripted(api, name: str, instants: list[str]) -> dict:
    events = [
        ProvisioningEvent(parse_instant(t), "Success", "ops", "Activation", None, None, None, ())
        for t in instants
    ]
    device = api.simulator.fleet.script(DeviceIdentifier("imei", name), events)
    return {"kind": "IMEI", "identifier": device.primary.identifier}


@pytest.mark.parametrize(
    ("bucket", "instants", "starts"),
    [
        # Fall back: 01:30 EDT and 01:30 EST are two different local hours.
        (
            "HOUR",
            ["2017-11-05T05:30:00Z", "2017-11-05T06:30:00Z"],
            ["2017-11-05T05:00:00.000Z", "2017-11-05T06:00:00.000Z"],
        ),
        # Spring forward: the day that lost an hour starts at EST midnight, the next at EDT.
        (
            "DAY",
            [
                "2017-03-12T04:59:59Z",
                "2017-03-12T05:00:00Z",
                "2017-03-13T03:59:59Z",
                "2017-03-13T04:00:00Z",
            ],
            [
                "2017-03-11T05:00:00.000Z",
                "2017-03-12T05:00:00.000Z",
                "2017-03-12T05:00:00.000Z",
                "2017-03-13T04:00:00.000Z",
            ],
        ),
        (
            "WEEK",
            ["2017-11-06T04:59:00Z", "2017-11-06T05:00:00Z"],
            ["2017-10-30T04:00:00.000Z", "2017-11-06T05:00:00.000Z"],
        ),
        (
            "MONTH",
            ["2017-11-01T03:59:59Z", "2017-11-01T04:00:00Z"],
            ["2017-10-01T04:00:00.000Z", "2017-11-01T04:00:00.000Z"],
        ),
    ],
)
async def test_buckets_are_cut_in_local_time_across_dst(api, bucket, instants, starts):
    device = scripted(api, f"77{abs(hash((bucket, *instants))) % 10**13:013d}", instants)
    body = await api.query(
        REPORT,
        {
            "input": {
                "devices": [device],
                **RANGE,
                "groupBy": ["EVENT_TYPE"],
                "bucket": bucket,
                "timeZone": "America/New_York",
            }
        },
    )
    rows = body["data"]["provisioningReport"]["rows"]
    expected = Counter(starts)
    assert {r["key"]["bucketStart"]: r["count"] for r in rows} == dict(expected)
    for start in expected:  # each bucket starts at a local midnight or hour, as labelled
        local = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(NEW_YORK)
        assert (local.minute, local.second) == (0, 0)


async def test_utc_buckets_are_the_default(api):
    device = scripted(api, "771234567890123", ["2017-03-12T04:59:59Z", "2017-03-12T05:00:00Z"])
    body = await api.query(REPORT, {"input": {"devices": [device], **RANGE, "bucket": "DAY"}})
    assert [r["key"]["bucketStart"] for r in body["data"]["provisioningReport"]["rows"]] == [
        "2017-03-12T00:00:00.000Z"
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"devices": []}, "Name at least one device"),
        ({"timeZone": "Mars/Olympus"}, "IANA"),
        ({"occurredAfter": "2020-01-01", "occurredBefore": "2019-01-01"}, "occurredAfter"),
        ({"groupBy": []}, "at least one dimension"),
    ],
)
async def test_bad_report_input_is_refused(api, changes, message):
    variables = {
        "input": {"devices": [{"kind": "ESN", "identifier": "09123456123"}], **RANGE, **changes}
    }
    body = await api.query(REPORT, variables, expect_errors=True)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert message in body["errors"][0]["message"]
    started = await api.query(START, variables)
    assert started["data"]["startProvisioningReport"]["job"] is None
    assert message in started["data"]["startProvisioningReport"]["userErrors"][0]["message"]
    assert api.calls() == 0


async def test_a_job_reports_progress_until_it_ends(api):
    devices = ordinary(api, 12)
    variables = {"input": {"devices": [ident(d) for d in devices], **RANGE}}
    started = (await api.query(START, variables))["data"]["startProvisioningReport"]
    job_id = started["job"]["id"]
    assert started["job"]["progress"]["devicesTotal"] == 12

    async with asyncio.timeout(WAIT_S):
        updates = [
            u["data"]["provisioningReportProgress"]
            async for u in api.subscribe(PROGRESS, {"jobId": job_id})
        ]
    final = updates[-1]
    assert final["state"] == "SUCCEEDED"
    assert final["progress"]["devicesDone"] == 12
    done = [u["progress"]["devicesDone"] for u in updates]
    assert done == sorted(done)
    direct = (await api.query(REPORT, variables))["data"]["provisioningReport"]
    assert final["result"] == {
        "totalEvents": direct["totalEvents"],
        "devicesScanned": direct["devicesScanned"],
    }
    again = await api.query(
        "query ($id: ID!) { provisioningReportJob(id: $id) { state finishedAt "
        "result { rows { count } } } }",
        {"id": job_id},
    )
    job = again["data"]["provisioningReportJob"]
    assert job["state"] == "SUCCEEDED"
    assert job["finishedAt"] is not None
    assert sum(r["count"] for r in job["result"]["rows"]) == direct["totalEvents"]


async def test_a_job_can_be_cancelled(api):
    api.gate.shut()  # the job runs until it is cancelled
    devices = ordinary(api, 60)
    started = await api.query(START, {"input": {"devices": [ident(d) for d in devices], **RANGE}})
    job_id = started["data"]["startProvisioningReport"]["job"]["id"]
    await api.gate.holding(1)  # caught running
    body = await api.query(
        "mutation ($id: ID!) { cancelProvisioningReport(id: $id) { state progress "
        "{ devicesDone devicesTotal } } }",
        {"id": job_id},
    )
    cancelled = body["data"]["cancelProvisioningReport"]
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["progress"]["devicesDone"] < 60
    calls = api.gate.arrived
    api.gate.open()  # the calls it had made are answered, to nobody
    again = await api.query(
        "query ($id: ID!) { provisioningReportJob(id: $id) { state } }", {"id": job_id}
    )
    assert again["data"]["provisioningReportJob"]["state"] == "CANCELLED"
    assert api.gate.arrived == calls  # nothing runs on


async def test_an_unknown_job_is_null_and_a_malformed_id_an_error(api):
    from graph.relay import global_id

    query = "query ($id: ID!) { provisioningReportJob(id: $id) { state } }"
    missing = await api.query(query, {"id": global_id("ProvisioningReportJob", "0" * 32)})
    assert missing["data"]["provisioningReportJob"] is None
    malformed = await api.query(query, {"id": "bm90LWEtam9i"}, expect_errors=True)
    assert malformed["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_report_jobs_capped_per_credential(tier, tmp_path):
    async with in_process(tier, tmp_path, max_report_jobs_per_credential=2) as api:
        api.gate.shut()  # every job runs until it is cancelled
        variables = {"input": {"devices": [ident(d) for d in ordinary(api, 60)], **RANGE}}
        mine, theirs = api.headers, authorization(bearer(subject="someone-else"))

        running = [(await job(api, variables, mine), mine) for _ in range(2)]
        refused = await start_report(api, variables, mine)
        assert refused["job"] is None
        (error,) = refused["userErrors"]
        assert error["code"] == "TOO_MANY_JOBS"
        running.append((await job(api, variables, theirs), theirs))  # another credential
        cancel = "mutation ($id: ID!) { cancelProvisioningReport(id: $id) { state } }"
        job_id, _ = running.pop(0)
        assert (await api.query(cancel, {"id": job_id}))["data"]["cancelProvisioningReport"]
        running.append((await job(api, variables, mine), mine))  # one ended: one may start
        for job_id, headers in running:
            await api.query(cancel, {"id": job_id}, headers)


async def start_report(api: InProcess, variables: dict, headers: dict[str, str]) -> dict:
    return (await api.query(START, variables, headers))["data"]["startProvisioningReport"]


async def job(api: InProcess, variables: dict, headers: dict[str, str]) -> str:
    started = await start_report(api, variables, headers)
    assert started["userErrors"] == []
    return started["job"]["id"]


def test_local_midnight_is_what_a_day_bucket_starts_at():
    from resolvers.reports import bucket_start

    moment = from_datetime(datetime(2017, 3, 12, 12, tzinfo=UTC))
    start = datetime(2017, 3, 12, tzinfo=NEW_YORK)
    assert bucket_start(moment, "DAY", NEW_YORK) == from_datetime(start)
    assert start.utcoffset() == timedelta(hours=-5)

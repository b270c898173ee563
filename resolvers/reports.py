"""Fleet reports: many devices' histories, grouped and counted as they stream by.

Each device is read through the same pager and window cache as the history API, so a
report after a history read (or a second report) costs no upstream call for what is
cached. Memory grows with the number of rows, never with the number of events. A device
that cannot be read is listed in ``failures``; the rest of the report completes.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from models.devices import DeviceIdentifier
from models.events import ProvisioningEvent
from models.instants import TICKS_PER_SECOND, from_datetime
from resolvers.history import HistoryPager, Matcher, matcher
from resolvers.upstream import Cost, Upstream
from soap.errors import UpstreamError, UpstreamFault

DIMENSIONS = ("EVENT_TYPE", "STATUS", "EVENT_BY", "SERVICE_PLAN", "DEVICE")
BUCKETS = ("HOUR", "DAY", "WEEK", "MONTH")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RowKey = tuple[Any, ...]
"""The group_by values in order, then the bucket start (ticks) if bucketed."""


@dataclass(frozen=True)
class ReportSpec:
    devices: Sequence[DeviceIdentifier]
    earliest: int
    latest: int
    group_by: Sequence[str]
    bucket: str | None
    zone: ZoneInfo
    matches: Matcher


@dataclass
class Row:
    count: int
    first: int
    last: int


@dataclass(frozen=True)
class Failure:
    device: DeviceIdentifier
    code: str
    message: str


@dataclass
class Progress:
    devices_done: int = 0
    devices_total: int = 0
    cost: Cost = field(default_factory=Cost)


@dataclass
class Report:
    rows: dict[RowKey, Row]
    total_events: int
    devices_scanned: int
    failures: list[Failure]


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def time_zone(name: str) -> ZoneInfo | None:
    """The IANA time zone of that name, or None for any other string. Only names of the
    zone database are looked up: ZoneInfo reads other keys as paths, and fails on them
    in ways (absolute, a directory, too long) that are not ours to report."""
    return ZoneInfo(name) if name in _zone_names() else None


def bucket_start(ticks: int, bucket: str, zone: ZoneInfo) -> int:
    """The start of the local calendar bucket holding ``ticks``, as a UTC instant.

    Hours are cut in local time but keep their UTC offset, so the repeated hour of a
    fall-back night makes two buckets; days, weeks (from Monday) and months start at local
    midnight, whatever the offset was then.
    """
    moment = (_EPOCH + timedelta(microseconds=ticks // 10)).astimezone(zone)
    if bucket == "HOUR":
        start = moment.replace(minute=0, second=0, microsecond=0)
        return from_datetime(start)
    day = moment.date()
    if bucket == "WEEK":
        day -= timedelta(days=day.weekday())
    elif bucket == "MONTH":
        day = day.replace(day=1)
    return from_datetime(datetime(day.year, day.month, day.day, tzinfo=zone))


_FIELDS = {
    "EVENT_TYPE": "event_type",
    "STATUS": "status",
    "EVENT_BY": "event_by",
    "SERVICE_PLAN": "service_plan",
}


def _key_of(spec: ReportSpec, device: DeviceIdentifier) -> Callable[[ProvisioningEvent], RowKey]:
    """A function from an event to its row key. It runs once per event of the report, so
    it avoids per-event Python work: fields come through one attrgetter, and a bucket
    is looked up only when an event leaves the previous event's bucket."""
    fields = [_FIELDS[d] for d in spec.group_by if d != "DEVICE"]
    get = attrgetter(*fields) if fields else (lambda event: ())
    single = len(fields) == 1
    with_device = "DEVICE" in spec.group_by
    place = spec.group_by.index("DEVICE") if with_device else 0

    def dimensions(event: ProvisioningEvent) -> RowKey:
        values = get(event)
        values = (values,) if single else values
        if not with_device:
            return values
        return (*values[:place], device, *values[place:])  # where group_by put it

    if spec.bucket is None:
        return dimensions
    bucket, zone = spec.bucket, spec.zone
    current = [0, -1]  # the bucket [start, end) the previous event fell in

    def keyed(event: ProvisioningEvent) -> RowKey:
        ticks = event.occurred_at
        if not current[0] <= ticks < current[1]:
            current[0] = bucket_start(ticks, bucket, zone)
            current[1] = next_bucket_start(current[0], bucket, zone)
        return (*dimensions(event), current[0])

    return keyed


# A step from a bucket's start that lands inside the next bucket whatever DST does there
# (days last 23 to 25 hours, months 28 to 31 days).
_INTO_NEXT = {
    "DAY": timedelta(hours=26),
    "WEEK": timedelta(days=7, hours=2),
    "MONTH": timedelta(days=32),
}


def next_bucket_start(start: int, bucket: str, zone: ZoneInfo) -> int:
    """Where the bucket after the one starting at ``start`` begins."""
    if bucket == "HOUR":
        return start + 3600 * TICKS_PER_SECOND
    step = _INTO_NEXT[bucket] // timedelta(microseconds=1) * 10
    return bucket_start(start + step, bucket, zone)


async def run_report(
    upstream: Upstream,
    spec: ReportSpec,
    progress: Progress,
    concurrency: int,
    on_device: Callable[[], Awaitable[None]] | None = None,
) -> Report:
    """The report, reading devices side by side (each device's windows one after
    another), counting into ``progress`` as devices finish."""
    rows: dict[RowKey, Row] = {}
    failures: list[Failure] = []
    totals = {"events": 0, "scanned": 0}
    progress.devices_total = len(spec.devices)
    fetch = upstream.history(progress.cost)
    queue: asyncio.Queue[DeviceIdentifier] = asyncio.Queue()
    for device in dict.fromkeys(spec.devices):
        queue.put_nowait(device)

    async def read(device: DeviceIdentifier) -> None:
        # A device counts whole or not at all: its rows merge in once it is read.
        key_of = _key_of(spec, device)
        mine: dict[RowKey, Row] = {}
        events = 0
        pager = HistoryPager(fetch, device, spec.earliest, spec.latest)
        matches = spec.matches
        async for batch in pager.events():
            for event in batch:
                if not matches(event):
                    continue
                key = key_of(event)
                row = mine.get(key)
                if row is None:
                    mine[key] = Row(1, event.occurred_at, event.occurred_at)
                else:
                    row.count += 1
                    row.last = event.occurred_at  # a device's events come oldest first
                events += 1
        for key, row in mine.items():
            merged = rows.get(key)
            if merged is None:
                rows[key] = row
            else:
                merged.count += row.count
                merged.first = min(merged.first, row.first)
                merged.last = max(merged.last, row.last)
        totals["events"] += events
        progress.cost.gaps.extend((device, gap) for gap in pager.gaps)

    async def worker() -> None:
        while not queue.empty():
            device = queue.get_nowait()
            try:
                await read(device)
                totals["scanned"] += 1
            except UpstreamFault as fault:
                failures.append(Failure(device, fault.code, fault.fault_message))
            except UpstreamError as error:
                failures.append(Failure(device, error.category, error.message))
            progress.devices_done += 1
            if on_device is not None:
                await on_device()

    # Twice as many readers as calls allowed in flight: while some read replies, the
    # others keep the upstream busy (the client holds the cap to ``concurrency``).
    workers = [asyncio.create_task(worker()) for _ in range(2 * max(1, concurrency))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        # A report that failed (its request's upstream budget spent, its job cancelled)
        # must not go on calling the upstream behind its caller's back.
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return Report(rows, totals["events"], totals["scanned"], failures)


def device_json(device: DeviceIdentifier) -> dict[str, str]:
    return {"kind": device.kind, "identifier": device.identifier}


def report_json(report: Report, spec: ReportSpec) -> dict[str, Any]:
    """The report as plain JSON: what a job stores and every view is built from."""
    names = {
        "EVENT_TYPE": "eventType",
        "STATUS": "status",
        "EVENT_BY": "eventBy",
        "SERVICE_PLAN": "servicePlan",
        "DEVICE": "device",
    }
    rows = []
    for key, row in report.rows.items():
        values: dict[str, Any] = {}
        for dimension, value in zip(spec.group_by, key, strict=False):
            values[names[dimension]] = device_json(value) if dimension == "DEVICE" else value
        if spec.bucket is not None:
            values["bucketStart"] = key[-1]
        rows.append(
            {
                "key": values,
                "count": row.count,
                "firstOccurredAt": row.first,
                "lastOccurredAt": row.last,
            }
        )
    rows.sort(key=lambda r: json.dumps(r["key"], sort_keys=True, default=str))
    return {
        "rows": rows,
        "totalEvents": report.total_events,
        "devicesScanned": report.devices_scanned,
        "failures": [
            {"device": device_json(f.device), "code": f.code, "message": f.message}
            for f in report.failures
        ],
    }


def spec_json(spec_request: dict[str, Any]) -> ReportSpec:
    """A stored report request back as a spec (see ``request_json``)."""
    filter = spec_request.get("filter") or [None, None, None]
    matches, _ = matcher(*filter)
    return ReportSpec(
        devices=[
            DeviceIdentifier(kind, identifier) for kind, identifier in spec_request["devices"]
        ],
        earliest=spec_request["earliest"],
        latest=spec_request["latest"],
        group_by=spec_request["groupBy"],
        bucket=spec_request["bucket"],
        zone=ZoneInfo(spec_request["timeZone"]),
        matches=matches,
    )


def request_json(
    devices: Sequence[DeviceIdentifier],
    earliest: int,
    latest: int,
    group_by: Sequence[str],
    bucket: str | None,
    time_zone: str,
    filter: list[list[str] | None] | None,
) -> dict[str, Any]:
    return {
        "devices": [[d.kind, d.identifier] for d in devices],
        "earliest": earliest,
        "latest": latest,
        "groupBy": list(group_by),
        "bucket": bucket,
        "timeZone": time_zone,
        "filter": filter,
    }

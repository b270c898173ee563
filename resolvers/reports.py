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

from models.devices import (
    IDENTIFIER_FORMATS,
    IDENTIFIER_KINDS,
    DeviceIdentifier,
    InvalidIdentifier,
    read_identifier,
)
from models.errors import UserErrorCode
from models.events import ProvisioningEvent
from models.instants import TICKS_PER_SECOND, from_datetime
from models.reports import ReportDimension, TimeBucket
from resolvers.history import HistoryPager, Matcher, matcher, range_problem
from resolvers.recipes import UserError
from resolvers.upstream import Cost, Upstream
from soap.errors import UpstreamError, UpstreamFault

DEFAULT_GROUP_BY = (ReportDimension.EVENT_TYPE,)
KEY_NAMES = {
    ReportDimension.EVENT_TYPE: "eventType",
    ReportDimension.STATUS: "status",
    ReportDimension.EVENT_BY: "eventBy",
    ReportDimension.SERVICE_PLAN: "servicePlan",
    ReportDimension.DEVICE: "device",
}
"""The name a dimension has in a row's key (and a CSV report's column)."""
TIME_ZONE_EXPECTED = "timeZone must name an IANA time zone, such as Europe/Berlin or UTC."
KIND_NAMES = ", ".join(kind.upper() for kind in IDENTIFIER_KINDS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RowKey = tuple[Any, ...]
"""The group_by values in order, then the bucket start (ticks) if bucketed."""


@dataclass(frozen=True)
class ReportSpec:
    devices: Sequence[DeviceIdentifier]
    earliest: int
    latest: int
    group_by: Sequence[ReportDimension]
    bucket: TimeBucket | None
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


def bucket_start(ticks: int, bucket: TimeBucket, zone: ZoneInfo) -> int:
    """The start of the local calendar bucket holding ``ticks``, as a UTC instant.

    Hours are cut in local time but keep their UTC offset, so the repeated hour of a
    fall-back night makes two buckets; days, weeks (from Monday) and months start at local
    midnight, whatever the offset was then.
    """
    moment = (_EPOCH + timedelta(microseconds=ticks // 10)).astimezone(zone)
    if bucket == TimeBucket.HOUR:
        start = moment.replace(minute=0, second=0, microsecond=0)
        return from_datetime(start)
    day = moment.date()
    if bucket == TimeBucket.WEEK:
        day -= timedelta(days=day.weekday())
    elif bucket == TimeBucket.MONTH:
        day = day.replace(day=1)
    return from_datetime(datetime(day.year, day.month, day.day, tzinfo=zone))


_FIELDS = {
    ReportDimension.EVENT_TYPE: "event_type",
    ReportDimension.STATUS: "status",
    ReportDimension.EVENT_BY: "event_by",
    ReportDimension.SERVICE_PLAN: "service_plan",
}


def _key_of(spec: ReportSpec, device: DeviceIdentifier) -> Callable[[ProvisioningEvent], RowKey]:
    """A function from an event to its row key. It runs once per event of the report, so
    it avoids per-event Python work: fields come through one attrgetter, and a bucket
    is looked up only when an event leaves the previous event's bucket."""
    fields = [_FIELDS[d] for d in spec.group_by if d != ReportDimension.DEVICE]
    get = attrgetter(*fields) if fields else (lambda event: ())
    single = len(fields) == 1
    with_device = ReportDimension.DEVICE in spec.group_by
    place = spec.group_by.index(ReportDimension.DEVICE) if with_device else 0

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
    TimeBucket.DAY: timedelta(hours=26),
    TimeBucket.WEEK: timedelta(days=7, hours=2),
    TimeBucket.MONTH: timedelta(days=32),
}


def next_bucket_start(start: int, bucket: TimeBucket, zone: ZoneInfo) -> int:
    """Where the bucket after the one starting at ``start`` begins."""
    if bucket == TimeBucket.HOUR:
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
    rows = []
    for key, row in report.rows.items():
        values: dict[str, Any] = {}
        for dimension, value in zip(spec.group_by, key, strict=False):
            is_device = dimension == ReportDimension.DEVICE
            values[KEY_NAMES[dimension]] = device_json(value) if is_device else value
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


@dataclass(frozen=True)
class ReportRequest:
    """A report as asked for, checked: what a job stores (as JSON) and a report runs."""

    devices: tuple[DeviceIdentifier, ...]
    earliest: int
    latest: int
    group_by: tuple[ReportDimension, ...]
    bucket: TimeBucket | None
    time_zone: str
    filter: list[list[str] | None] | None
    """Event types, statuses and users kept, in the canonical form of ``matcher``."""

    def spec(self) -> ReportSpec:
        return ReportSpec(
            devices=self.devices,
            earliest=self.earliest,
            latest=self.latest,
            group_by=self.group_by,
            bucket=self.bucket,
            zone=ZoneInfo(self.time_zone),
            matches=matcher(*(self.filter or [None, None, None]))[0],
        )

    def json(self) -> dict[str, Any]:
        return {
            "devices": [[d.kind, d.identifier] for d in self.devices],
            "earliest": self.earliest,
            "latest": self.latest,
            "groupBy": [d.value for d in self.group_by],
            "bucket": self.bucket.value if self.bucket else None,
            "timeZone": self.time_zone,
            "filter": self.filter,
        }

    @classmethod
    def of_json(cls, document: dict[str, Any]) -> "ReportRequest":
        """A stored request (see ``json``) back."""
        return cls(
            devices=tuple(
                DeviceIdentifier(kind, identifier) for kind, identifier in document["devices"]
            ),
            earliest=document["earliest"],
            latest=document["latest"],
            group_by=tuple(ReportDimension(d) for d in document["groupBy"]),
            bucket=TimeBucket(document["bucket"]) if document["bucket"] else None,
            time_zone=document["timeZone"],
            filter=document.get("filter"),
        )


def _range_errors(occurred_after: int | None, occurred_before: int | None) -> list[UserError]:
    if occurred_after is None or occurred_before is None:
        missing = [("occurredAfter", occurred_after), ("occurredBefore", occurred_before)]
        return [
            UserError([name], UserErrorCode.REQUIRED, f"{name} is required.")
            for name, value in missing
            if value is None
        ]
    if problem := range_problem(occurred_after, occurred_before):
        name, message = problem
        return [UserError([name], UserErrorCode.INVALID_RANGE, message)]
    return []


def read_device(kind: str, identifier: str) -> DeviceIdentifier | UserError:
    """The device named, or what is wrong with it; the kind in any case. The message
    leaves the identifier out: it may be long, or made to look like something else."""
    # Only ASCII: str.lower() turns some other letters into ASCII ones (a Kelvin sign into k).
    known = kind.lower() if kind.isascii() else ""
    if known not in IDENTIFIER_FORMATS:
        return UserError(["kind"], UserErrorCode.INVALID_KIND, f"kind must be one of {KIND_NAMES}.")
    try:
        return read_identifier(known, identifier)
    except InvalidIdentifier as invalid:
        return UserError(["identifier"], UserErrorCode.INVALID_IDENTIFIER, str(invalid))


def check_request(
    *,
    devices: Sequence[tuple[str, str]],
    occurred_after: int | None,
    occurred_before: int | None,
    group_by: Sequence[ReportDimension],
    bucket: TimeBucket | None,
    zone: str | None,
    event_types: Sequence[str] | None,
    statuses: Sequence[str] | None,
    event_by: Sequence[str] | None,
    max_devices: int,
) -> ReportRequest | list[UserError]:
    """The report asked for, or everything wrong with the asking, each error's field a
    path below the request (``["devices", "2", "identifier"]``). Devices are (kind,
    identifier) pairs; no zone is UTC."""
    errors: list[UserError] = []
    if not devices:
        errors.append(UserError(["devices"], UserErrorCode.REQUIRED, "Name at least one device."))
    if len(devices) > max_devices:
        message = f"At most {max_devices} devices a report."
        errors.append(UserError(["devices"], UserErrorCode.TOO_MANY, message))
    checked = []
    for index, (kind, identifier) in enumerate(devices):
        device = read_device(kind, identifier)
        if isinstance(device, UserError):
            errors.append(
                UserError(["devices", str(index), *device.field], device.code, device.message)
            )
        else:
            checked.append(device)
    errors += _range_errors(occurred_after, occurred_before)
    if not group_by:
        errors.append(
            UserError(["groupBy"], UserErrorCode.REQUIRED, "Group by at least one dimension.")
        )
    zone = "UTC" if zone is None else zone
    if time_zone(zone) is None:
        errors.append(UserError(["timeZone"], UserErrorCode.INVALID_TIME_ZONE, TIME_ZONE_EXPECTED))
    if errors or occurred_after is None or occurred_before is None:  # missing is an error
        return errors
    return ReportRequest(
        devices=tuple(checked),
        earliest=occurred_after,
        latest=occurred_before,
        group_by=tuple(dict.fromkeys(group_by)),
        bucket=bucket,
        time_zone=zone,
        filter=matcher(event_types, statuses, event_by)[1],
    )

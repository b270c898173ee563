"""Fleet reports: many devices' histories, grouped and counted as they stream by.

Each device is read through the same pager and window cache as the history API, so a
report after a history read (or a second report) costs no upstream call for what is
cached. Memory grows with the number of rows, never with the number of events. A device
that cannot be read is listed in ``failures``; the rest of the report completes.

A report names its devices, or asks for every device of the account that a device filter
keeps. Running one is two steps: ``report_devices`` resolves the device set (the request's
own list, or the account's device list read through GetDeviceList and filtered), then
``run_report`` reports over it.
"""

import asyncio
import contextlib
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
    DeviceRecord,
    InvalidIdentifier,
    read_identifier,
)
from models.errors import UserErrorCode
from models.events import ProvisioningEvent
from models.instants import TICKS_PER_SECOND, from_datetime
from models.principal import HISTORY_READ, Principal
from models.reports import ReportDimension, TimeBucket
from models.text import UNSTORABLE_RULE, storable
from resolvers.budget import following_up
from resolvers.devices import account_devices
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
DEVICE_FILTER = "deviceFilter"
"""Where a report's device filter sits in its request, and what its errors' fields start
with."""
ACCOUNT_NAME_MAX = 128
"""A job stores its request: an account name no upstream has is not stored at any length."""
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
    on_last_started: Callable[[], None] | None = None,
) -> Report:
    """The report, reading devices side by side (each device's windows one after
    another), counting into ``progress`` as devices finish. ``on_last_started`` is told
    once every device is being read: from then on fewer and fewer readers are busy."""
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
        first = True
        with contextlib.ExitStack() as later:
            async for batch in pager.events():
                if first:  # the device's next windows continue a read under way
                    later.enter_context(following_up())
                    first = False
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
            if queue.empty() and on_last_started is not None:
                on_last_started()
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


def report_json(report: Report, spec: ReportSpec, ordered: bool = True) -> dict[str, Any]:
    """The report as plain JSON: what a job stores and every view is built from. Its
    rows in their order unless not ``ordered`` (a part that ``merge_reports`` orders)."""
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
    if ordered:
        rows.sort(key=_row_order)
    # In the report's device order, not the order reads happened to end in: a report cut
    # into chunks merges into the same failures as one read whole.
    place = {device: index for index, device in enumerate(dict.fromkeys(spec.devices))}
    return {
        "rows": rows,
        "totalEvents": report.total_events,
        "devicesScanned": report.devices_scanned,
        "failures": [
            {"device": device_json(f.device), "code": f.code, "message": f.message}
            for f in sorted(report.failures, key=lambda f: place[f.device])
        ],
    }


def _row_order(row: dict[str, Any]) -> str:
    return json.dumps(row["key"], sort_keys=True, default=str)


def _row_identity(key: dict[str, Any]) -> tuple[Any, ...]:
    # What tells rows apart, cheaper than their order's text: a chunked job merges
    # every chunk's rows, thousands each.
    return tuple(
        (name, (value["kind"], value["identifier"]) if isinstance(value, dict) else value)
        for name, value in sorted(key.items())  # JSONB keeps no key order
    )


def merge_reports(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from reports (``report_json``'s form, rows in any order) over disjoint
    device sets, given in device order: exactly the report over all their devices at
    once, since a row merges as counts add and first and last occurrences take their min
    and max."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for part in parts:
        for row in part["rows"]:
            identity = _row_identity(row["key"])
            merged = rows.get(identity)
            if merged is None:
                rows[identity] = dict(row)
                continue
            merged["count"] += row["count"]
            merged["firstOccurredAt"] = min(merged["firstOccurredAt"], row["firstOccurredAt"])
            merged["lastOccurredAt"] = max(merged["lastOccurredAt"], row["lastOccurredAt"])
    return {
        "rows": sorted(rows.values(), key=_row_order),
        "totalEvents": sum(part["totalEvents"] for part in parts),
        "devicesScanned": sum(part["devicesScanned"] for part in parts),
        "failures": [failure for part in parts for failure in part["failures"]],
    }


class AccountNotVisible(Exception):
    """A report over the whole account names every device of it (in rows by device, in
    its failures): what only history:read shows, as ``Query.devices`` does."""

    def __init__(self) -> None:
        super().__init__(
            f"A report over every device of the account needs the {HISTORY_READ} scope: "
            "it lists the account's devices. Name the devices instead."
        )


def check_account_scope(request: "ReportRequest", principal: Principal) -> None:
    """``AccountNotVisible`` for a whole-account report of a caller who may not list the
    account's devices: checked where a report is asked for (a query, a job, a CSV)."""
    if request.devices is None and HISTORY_READ not in principal.scopes:
        raise AccountNotVisible


class ReportTooLarge(Exception):
    """More devices than a report computed in a request may read: a job can."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"More than {limit} devices of the account match (REPORT_MAX_DEVICES): a "
            "report computed in a request reads at most that many. Start a report job "
            "(startProvisioningReport) with the same input, or narrow the device filter."
        )
        self.limit = limit


@dataclass(frozen=True)
class DeviceFilter:
    """Which devices of the account a whole-account report reads, by what the device
    list knows of them; every criterion given must hold, none given keeps every device."""

    kinds: tuple[str, ...] | None = None
    """Kept: devices with an identifier of one of these kinds (lower case), each read and
    shown by its first such identifier."""
    account_name: str | None = None
    activated_after: int | None = None
    """Kept: devices last activated at or after this instant; none with no activation."""
    activated_before: int | None = None
    """Kept: devices last activated at or before this instant; none with no activation."""

    def name(self, record: DeviceRecord) -> DeviceIdentifier | None:
        """The identifier the report reads the device by, or None when the filter leaves
        it out. Only identifiers of kinds the API knows name a device: the upstream may
        list others, which no report row could show."""
        if self.account_name is not None and record.account_name != self.account_name:
            return None
        if self.activated_after is not None or self.activated_before is not None:
            activated = record.last_activation_ticks
            if activated is None:
                return None
            if self.activated_after is not None and activated < self.activated_after:
                return None
            if self.activated_before is not None and activated > self.activated_before:
                return None
        kinds = IDENTIFIER_KINDS if self.kinds is None else self.kinds
        return next((i for i in record.identifiers if i.kind in kinds), None)

    def json(self) -> dict[str, Any]:
        return {
            "kinds": list(self.kinds) if self.kinds is not None else None,
            "accountName": self.account_name,
            "activatedAfter": self.activated_after,
            "activatedBefore": self.activated_before,
        }

    @classmethod
    def of_json(cls, document: dict[str, Any]) -> "DeviceFilter":
        kinds = document["kinds"]
        return cls(
            kinds=tuple(kinds) if kinds is not None else None,
            account_name=document["accountName"],
            activated_after=document["activatedAfter"],
            activated_before=document["activatedBefore"],
        )


@dataclass(frozen=True)
class ReportRequest:
    """A report as asked for, checked: what a job stores (as JSON) and a report runs."""

    devices: tuple[DeviceIdentifier, ...] | None
    """None: every device of the account that ``device_filter`` keeps."""
    device_filter: DeviceFilter | None
    """Set exactly when ``devices`` is None."""
    earliest: int
    latest: int
    group_by: tuple[ReportDimension, ...]
    bucket: TimeBucket | None
    time_zone: str
    filter: list[list[str] | None] | None
    """Event types, statuses and users kept, in the canonical form of ``matcher``."""

    def spec(self, devices: Sequence[DeviceIdentifier]) -> ReportSpec:
        """The report over ``devices``, the set ``report_devices`` resolved."""
        return ReportSpec(
            devices=devices,
            earliest=self.earliest,
            latest=self.latest,
            group_by=self.group_by,
            bucket=self.bucket,
            zone=ZoneInfo(self.time_zone),
            matches=matcher(*(self.filter or [None, None, None]))[0],
        )

    def json(self) -> dict[str, Any]:
        return {
            "devices": (
                [[d.kind, d.identifier] for d in self.devices] if self.devices is not None else None
            ),
            "deviceFilter": self.device_filter.json() if self.device_filter is not None else None,
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
        devices = document["devices"]
        chosen = document.get("deviceFilter")  # absent from jobs stored before it
        return cls(
            devices=(
                tuple(DeviceIdentifier(kind, identifier) for kind, identifier in devices)
                if devices is not None
                else None
            ),
            device_filter=DeviceFilter.of_json(chosen) if chosen is not None else None,
            earliest=document["earliest"],
            latest=document["latest"],
            group_by=tuple(ReportDimension(d) for d in document["groupBy"]),
            bucket=TimeBucket(document["bucket"]) if document["bucket"] else None,
            time_zone=document["timeZone"],
            filter=document.get("filter"),
        )


async def report_devices(
    upstream: Upstream, cost: Cost, request: ReportRequest, at_most: int | None = None
) -> tuple[DeviceIdentifier, ...]:
    """The devices the report reads: those it names, else every device of the account
    that its filter keeps, from the device list (a call per 2,000 devices, or the cache).
    Past ``at_most`` devices kept, ``ReportTooLarge``, before any further page of the
    list and any history is read."""
    if request.devices is not None:
        return request.devices
    assert request.device_filter is not None
    name = request.device_filter.name
    found: list[DeviceIdentifier] = []
    async for record in account_devices(upstream, cost):
        device = name(record)
        if device is None:
            continue
        found.append(device)
        if at_most is not None and len(found) > at_most:
            raise ReportTooLarge(at_most)
    return tuple(found)


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


def _checked_filter(asked: DeviceFilter) -> DeviceFilter | list[UserError]:
    """The filter with its kinds and account name in the form records have, or what is
    wrong with it; each error's field below ``deviceFilter``."""
    errors: list[UserError] = []
    kinds = None
    if asked.kinds is not None:
        kinds = tuple(dict.fromkeys(k.lower() if k.isascii() else "" for k in asked.kinds))
        if not kinds:
            message = "Name at least one kind, or leave kinds out."
            errors.append(UserError(["kinds"], UserErrorCode.REQUIRED, message))
        elif any(kind not in IDENTIFIER_FORMATS for kind in kinds):
            message = f"kinds must be among {KIND_NAMES}."
            errors.append(UserError(["kinds"], UserErrorCode.INVALID_KIND, message))
    account = asked.account_name
    if account is not None:
        account = account.strip()
        if not account:
            message = "accountName must not be blank; leave it out for every account."
            errors.append(UserError(["accountName"], UserErrorCode.REQUIRED, message))
        elif len(account) > ACCOUNT_NAME_MAX:
            message = f"accountName has at most {ACCOUNT_NAME_MAX} characters."
            errors.append(UserError(["accountName"], UserErrorCode.TOO_LONG, message))
        elif not storable(account):
            message = f"accountName {UNSTORABLE_RULE}"
            errors.append(UserError(["accountName"], UserErrorCode.INVALID_CHARACTERS, message))
    after, before = asked.activated_after, asked.activated_before
    if after is not None and before is not None and after > before:
        message = "activatedAfter must not be later than activatedBefore."
        errors.append(UserError(["activatedAfter"], UserErrorCode.INVALID_RANGE, message))
    if errors:
        return [UserError([DEVICE_FILTER, *e.field], e.code, e.message) for e in errors]
    return DeviceFilter(kinds, account, after, before)


def _checked_devices(
    devices: Sequence[tuple[str, str]], max_devices: int
) -> tuple[list[DeviceIdentifier], list[UserError]]:
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
    return checked, errors


def check_request(
    *,
    devices: Sequence[tuple[str, str]] | None,
    device_filter: DeviceFilter | None = None,
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
    identifier) pairs, or None for every device of the account that ``device_filter``
    keeps (a filter goes with no list: it chooses among the account's devices); no
    zone is UTC. ``max_devices`` bounds a list; the account's size is known only once
    its device list is read (``report_devices``)."""
    errors: list[UserError] = []
    checked: list[DeviceIdentifier] = []
    if devices is not None:
        checked, errors = _checked_devices(devices, max_devices)
        if device_filter is not None:
            message = (
                "A device filter chooses among every device of the account: leave out "
                "devices, or the filter."
            )
            errors.append(UserError([DEVICE_FILTER], UserErrorCode.INVALID, message))
    else:
        kept = _checked_filter(device_filter if device_filter is not None else DeviceFilter())
        if isinstance(kept, list):
            errors += kept
        else:
            device_filter = kept
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
        devices=tuple(checked) if devices is not None else None,
        device_filter=device_filter if devices is None else None,
        earliest=occurred_after,
        latest=occurred_before,
        group_by=tuple(dict.fromkeys(group_by)),
        bucket=bucket,
        time_zone=zone,
        filter=matcher(event_types, statuses, event_by)[1],
    )

"""The report, its input and rows, and the report job."""

from typing import Any

import strawberry

from graph.devices.identifiers import (
    DeviceIdentifier,
    DeviceIdentifierInput,
    DeviceIdentifierKind,
)
from graph.history.types import ProvisioningEventFilter
from graph.permissions import needs
from graph.recipes.types import UserError
from graph.relay import Node, global_id
from graph.scalars import DateTime
from models.devices import DeviceIdentifier as IdentifierRecord
from models.instants import from_datetime
from models.principal import REPORTS_READ
from models.reports import ReportDimension, ReportJob, ReportJobError, ReportJobState, TimeBucket
from resolvers.reports import DEFAULT_GROUP_BY, DeviceFilter, ReportRequest, check_request

# The models' vocabularies are the schema's enums, under their own names.
strawberry.enum(ReportDimension)
strawberry.enum(TimeBucket)
strawberry.enum(ReportJobState)
strawberry.enum(
    ReportJobError,
    description="Why a report job FAILED: REPORT_FAILED, a chunk failed each of its "
    "attempts; WORKER_STOPPED, the process running it stopped (without a job queue); "
    "CHUNK_LOST, a chunk's worker stopped on its last attempt.",
)


@strawberry.input(
    description="Which devices of the account a whole-account report reads, by what the "
    "device list (GetDeviceList) knows of them. Every criterion given must hold; none "
    "keeps every device."
)
class ProvisioningReportDeviceFilter:
    kinds: list[DeviceIdentifierKind] | None = strawberry.field(
        default=None,
        description="Devices with an identifier of one of these kinds, each read and shown "
        "by its first such identifier (in the device list's order).",
    )
    account_name: str | None = strawberry.field(
        default=None, description="Devices of this account (the device list's AccountName)."
    )
    activated_after: DateTime | None = strawberry.field(
        default=None,
        description="Devices last activated at or after this instant; a device with no "
        "activation date is left out once either bound is given.",
    )
    activated_before: DateTime | None = strawberry.field(
        default=None, description="Devices last activated at or before this instant."
    )


@strawberry.input
class ProvisioningReportInput:
    devices: list[DeviceIdentifierInput] | None = strawberry.field(
        default=None,
        description="The devices to read; absent: every device of the account "
        "(GetDeviceList), as far as deviceFilter keeps them.",
    )
    device_filter: ProvisioningReportDeviceFilter | None = strawberry.field(
        default=None,
        description="With devices absent, which devices of the account to read. A report "
        "computed in a request reads at most REPORT_MAX_DEVICES of them, else it fails "
        "with REPORT_TOO_LARGE: start a job for more.",
    )
    occurred_after: DateTime
    occurred_before: DateTime
    group_by: list[ReportDimension] = strawberry.field(
        default_factory=lambda: list(DEFAULT_GROUP_BY)
    )
    bucket: TimeBucket | None = None
    time_zone: str | None = strawberry.field(
        default=None, description="IANA zone that buckets are cut in; UTC by default."
    )
    filter: ProvisioningEventFilter | None = None


@strawberry.type
class ReportKey:
    event_type: str | None = None
    status: str | None = None
    event_by: str | None = None
    service_plan: str | None = None
    device: DeviceIdentifier | None = None
    bucket_start: DateTime | None = None


@strawberry.type
class ReportRow:
    key: ReportKey
    count: int
    first_occurred_at: DateTime
    last_occurred_at: DateTime


@strawberry.type
class ReportFailure:
    device: DeviceIdentifier
    code: str
    message: str


@strawberry.type
class ProvisioningReport:
    rows: list[ReportRow]
    total_events: int
    devices_scanned: int
    failures: list[ReportFailure] = strawberry.field(
        description="Devices whose history could not be read, with the reason; the rows "
        "cover the rest."
    )


@strawberry.type
class ReportProgress:
    devices_done: int
    devices_total: int = strawberry.field(
        description="The devices the job reads; 0 until a whole-account job has read the "
        "device list."
    )
    upstream_calls: int
    cache_hits: int
    chunks_total: int = strawberry.field(
        description="The chunks of devices the job is cut into, any of which a replica "
        "may run; 0 until the device set is known."
    )
    chunks_done: int
    chunks_retried: int = strawberry.field(
        description="Chunk attempts that failed and were tried again."
    )
    chunks_reclaimed: int = strawberry.field(
        description="Chunks taken over by another worker after theirs stopped mid-way."
    )


@strawberry.type
class ProvisioningReportJob(Node):
    id: strawberry.ID
    state: ReportJobState
    progress: ReportProgress
    result: ProvisioningReport | None = strawberry.field(
        extensions=needs(REPORTS_READ),
        description="The report, once the job has succeeded. Needs reports:read: the "
        "scope that starts or cancels a job does not read what it found.",
    )
    error: str | None
    error_code: ReportJobError | None = strawberry.field(
        description="Why the job FAILED, as a code; error says it in words."
    )
    created_at: DateTime
    finished_at: DateTime | None

    @classmethod
    def of(cls, job: ReportJob) -> "ProvisioningReportJob":
        return cls(
            id=global_id("ProvisioningReportJob", job.id),
            state=ReportJobState(job.state),
            progress=ReportProgress(
                devices_done=job.devices_done,
                devices_total=job.devices_total,
                upstream_calls=job.upstream_calls,
                cache_hits=job.cache_hits,
                chunks_total=job.chunks_total,
                chunks_done=job.chunks_done,
                chunks_retried=job.chunks_retried,
                chunks_reclaimed=job.chunks_reclaimed,
            ),
            result=report_of(job.result) if job.result is not None else None,
            error=job.error,
            error_code=ReportJobError(job.error_code) if job.error_code else None,
            created_at=DateTime(from_datetime(job.created_at)),
            finished_at=DateTime(from_datetime(job.finished_at)) if job.finished_at else None,
        )


@strawberry.type
class StartProvisioningReportPayload:
    job: ProvisioningReportJob | None
    user_errors: list[UserError]


def _identifier(value: dict[str, str]) -> DeviceIdentifier:
    return DeviceIdentifier.of(IdentifierRecord(value["kind"], value["identifier"]))


def report_of(document: dict[str, Any]) -> ProvisioningReport:
    rows = []
    for row in document["rows"]:
        key = row["key"]
        rows.append(
            ReportRow(
                key=ReportKey(
                    event_type=key.get("eventType"),
                    status=key.get("status"),
                    event_by=key.get("eventBy"),
                    service_plan=key.get("servicePlan"),
                    device=_identifier(key["device"]) if key.get("device") else None,
                    bucket_start=key.get("bucketStart"),
                ),
                count=row["count"],
                first_occurred_at=row["firstOccurredAt"],
                last_occurred_at=row["lastOccurredAt"],
            )
        )
    return ProvisioningReport(
        rows=rows,
        total_events=document["totalEvents"],
        devices_scanned=document["devicesScanned"],
        failures=[
            ReportFailure(device=_identifier(f["device"]), code=f["code"], message=f["message"])
            for f in document["failures"]
        ],
    )


def report_request(
    report: ProvisioningReportInput, max_devices: int
) -> ReportRequest | list[UserError]:
    """The report the input asks for, or what is wrong with it."""
    filter, chosen, devices = report.filter, report.device_filter, report.devices
    checked = check_request(
        devices=(
            [(device.kind.value, device.identifier) for device in devices]
            if devices is not None
            else None
        ),
        device_filter=(
            DeviceFilter(
                kinds=tuple(k.value for k in chosen.kinds) if chosen.kinds is not None else None,
                account_name=chosen.account_name,
                activated_after=chosen.activated_after,
                activated_before=chosen.activated_before,
            )
            if chosen is not None
            else None
        ),
        occurred_after=report.occurred_after,
        occurred_before=report.occurred_before,
        group_by=report.group_by,
        bucket=report.bucket,
        zone=report.time_zone or None,  # an empty timeZone has always meant UTC here
        event_types=filter.event_types if filter else None,
        statuses=filter.statuses if filter else None,
        event_by=filter.event_by if filter else None,
        max_devices=max_devices,
    )
    if isinstance(checked, ReportRequest):
        return checked
    return [UserError(field=["input", *e.field], code=e.code, message=e.message) for e in checked]

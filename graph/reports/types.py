"""The report, its input and rows, and the report job."""

from enum import Enum
from typing import Any

import strawberry
from graphql import GraphQLError

from graph.devices.identifiers import DeviceIdentifier, DeviceIdentifierInput, identifier_record
from graph.history.connection import range_error
from graph.history.types import ProvisioningEventFilter
from graph.permissions import REPORTS_READ, needs
from graph.recipes.types import UserError
from graph.relay import Node, global_id
from graph.scalars import DateTime
from models.devices import DeviceIdentifier as IdentifierRecord
from models.instants import from_datetime
from models.reports import ReportJob
from resolvers.history import matcher
from resolvers.reports import request_json, time_zone

TIME_ZONE_EXPECTED = "timeZone must name an IANA time zone, such as Europe/Berlin or UTC."


@strawberry.enum
class ReportDimension(Enum):
    EVENT_TYPE = "EVENT_TYPE"
    STATUS = "STATUS"
    EVENT_BY = "EVENT_BY"
    SERVICE_PLAN = "SERVICE_PLAN"
    DEVICE = "DEVICE"


@strawberry.enum
class TimeBucket(Enum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


@strawberry.input
class ProvisioningReportInput:
    devices: list[DeviceIdentifierInput]
    occurred_after: DateTime
    occurred_before: DateTime
    group_by: list[ReportDimension] = strawberry.field(
        default_factory=lambda: [ReportDimension.EVENT_TYPE]
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


@strawberry.enum
class ReportJobState(Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@strawberry.type
class ReportProgress:
    devices_done: int
    devices_total: int
    upstream_calls: int
    cache_hits: int


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
            ),
            result=report_of(job.result) if job.result is not None else None,
            error=job.error,
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
) -> tuple[dict[str, Any] | None, list[UserError]]:
    """The input as a stored report request, or what is wrong with it."""
    errors: list[UserError] = []
    devices = []
    if not report.devices:
        errors.append(
            UserError(
                field=["input", "devices"], code="REQUIRED", message="Name at least one device."
            )
        )
    if len(report.devices) > max_devices:
        errors.append(
            UserError(
                field=["input", "devices"],
                code="TOO_MANY",
                message=f"At most {max_devices} devices a report.",
            )
        )
    for index, device in enumerate(report.devices):
        try:
            devices.append(identifier_record(device.kind, device.identifier))
        except GraphQLError as error:
            errors.append(
                UserError(
                    field=["input", "devices", str(index), "identifier"],
                    code="INVALID_IDENTIFIER",
                    message=error.message,
                )
            )
    if problem := range_error(report.occurred_after, report.occurred_before):
        argument, message = problem
        errors.append(UserError(field=["input", argument], code="INVALID_RANGE", message=message))
    if not report.group_by:
        errors.append(
            UserError(
                field=["input", "groupBy"],
                code="REQUIRED",
                message="Group by at least one dimension.",
            )
        )
    zone = report.time_zone or "UTC"
    if time_zone(zone) is None:
        errors.append(
            UserError(
                field=["input", "timeZone"],
                code="INVALID_TIME_ZONE",
                message=TIME_ZONE_EXPECTED,
            )
        )
    if errors:
        return None, errors
    filter = report.filter
    _, canonical = matcher(
        filter.event_types if filter else None,
        filter.statuses if filter else None,
        filter.event_by if filter else None,
    )
    request = request_json(
        devices,
        report.occurred_after,
        report.occurred_before,
        list(dict.fromkeys(d.value for d in report.group_by)),
        report.bucket.value if report.bucket else None,
        zone,
        canonical,
    )
    return request, []

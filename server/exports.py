"""CSV exports for spreadsheets, streamed as the upstream pages arrive.

    GET /exports/provisioning-history.csv?kind=MEID&identifier=...&occurredAfter=...
    GET /exports/provisioning-report.csv?jobId=<the job's id>   (or the report's parameters)

Parameters are named like the GraphQL arguments; list parameters repeat (eventTypes=a&
eventTypes=b). Files are RFC 4180 (CRLF, quotes doubled) with a header row. Errors have
the service's one error shape (JSON): input errors answer 400 BAD_USER_INPUT, an unknown
device 404, upstream trouble before the first byte 502 or 504. Upstream trouble after the
first byte aborts the transfer without its final chunk, so no client takes a cut-off file
for a whole one.

A report is an aggregate, computed whole before its first byte. When no device of it could
be read, it is an error like the history's (404, 502 or 504, the devices listed in
``extensions.failures``). When some could not, the answer is 200 with the header
``X-Report-Failures: <devices failed>`` (0 for a complete report) and, after the rows, one
row per failed device: ``#failure,<KIND>:<identifier>,<code>,<message>``.
"""

import csv
import io
from collections.abc import AsyncIterator, Iterable
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from graph.devices.identifiers import DeviceIdentifierKind, identifier_record
from graph.errors import BAD_USER_INPUT
from graph.history.connection import range_error
from graph.permissions import FORBIDDEN
from graph.reports.queries import job_id_of
from graph.reports.types import TIME_ZONE_EXPECTED
from graph.requests import current_request
from models.devices import DeviceIdentifier as IdentifierRecord
from models.events import ProvisioningEvent
from models.instants import InvalidInstant, format_api_instant, parse_instant
from models.principal import HISTORY_READ, REPORTS_READ
from resolvers.history import HistoryPager, matcher
from resolvers.reports import (
    BUCKETS,
    DIMENSIONS,
    Progress,
    ReportSpec,
    report_json,
    request_json,
    run_report,
    spec_json,
    time_zone,
)
from resolvers.upstream import Cost
from server.auth import principal_of
from server.responses import error_response
from server.services import services_of
from soap.contract import DEVICE_NOT_FOUND
from soap.errors import UpstreamError, UpstreamFault, UpstreamTimeout

NOT_FOUND = "NOT_FOUND"
FAILURES_HEADER = "X-Report-Failures"
FAILURE_MARK = "#failure"
HISTORY_COLUMNS = [
    "occurredAt",
    "eventType",
    "status",
    "eventBy",
    "servicePlan",
    "mdn",
    "msisdn",
    "extendedAttributes",
]
_DIMENSION_COLUMNS = {
    "EVENT_TYPE": "eventType",
    "STATUS": "status",
    "EVENT_BY": "eventBy",
    "SERVICE_PLAN": "servicePlan",
    "DEVICE": "device",
}


class BadParameter(Exception):
    """A query parameter that cannot be used; the message names it, in our words."""


def _csv(rows: Iterable[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def _serving(export: str) -> None:
    """Names the export in the request's access line and metrics."""
    if (info := current_request()) is not None:
        info.export = export


def _forbidden(request: Request, scope: str) -> Response | None:
    """403 unless the caller's credential carries ``scope``; checked before any work."""
    if scope in principal_of(request).scopes:
        return None
    return error_response(403, f"This needs the {scope} scope.", FORBIDDEN)


def _upstream_error(error: UpstreamError) -> Response:
    if isinstance(error, UpstreamFault) and error.code == DEVICE_NOT_FOUND:
        return error_response(404, "The upstream does not know this device.", NOT_FOUND)
    status = 504 if isinstance(error, UpstreamTimeout) else 502
    return error_response(status, str(error), error.category)


def _instant(request: Request, name: str, default: int | None = None) -> int:
    value = request.query_params.get(name)
    if value is None:
        if default is None:
            raise BadParameter(f"{name} is required.")
        return default
    try:
        return parse_instant(value)
    except InvalidInstant:
        raise BadParameter(f"{name} is not an ISO-8601 date-time.") from None


_KINDS = {kind.name: kind for kind in DeviceIdentifierKind}
_KIND_NAMES = ", ".join(_KINDS)


def _device(
    kind: str, identifier: str, kind_param: str = "kind", identifier_param: str = "identifier"
) -> IdentifierRecord:
    """The device named; errors name the parameters it came from as the callers say."""
    # Only ASCII: str.upper() turns some other letters into ASCII ones (a dotless i into I).
    found = _KINDS.get(kind.upper()) if kind.isascii() else None
    if found is None:
        raise BadParameter(f"{kind_param} must be one of {_KIND_NAMES}.")
    try:
        return identifier_record(found, identifier)
    except GraphQLError as error:  # the identifier's expected format, in our words
        raise BadParameter(f"{identifier_param}: {error.message}") from None


def _filter(request: Request) -> list[list[str] | None] | None:
    values = [
        request.query_params.getlist(name) or None for name in ("eventTypes", "statuses", "eventBy")
    ]
    return matcher(*values)[1]


def _event_row(event: ProvisioningEvent) -> list[Any]:
    attributes = ";".join(f"{a.key}={a.value or ''}" for a in event.extended_attributes)
    return [
        format_api_instant(event.occurred_at),
        event.event_type,
        event.status,
        event.event_by or "",
        event.service_plan or "",
        event.mdn or "",
        event.msisdn or "",
        attributes,
    ]


async def history_csv(request: Request) -> Response:
    _serving("provisioningHistoryCsv")
    if refusal := _forbidden(request, HISTORY_READ):
        return refusal
    services = services_of(request)
    try:
        device = _device(
            request.query_params.get("kind", ""), request.query_params.get("identifier", "")
        )
        earliest = _instant(request, "occurredAfter", parse_instant("2000-01-01"))
        latest = _instant(request, "occurredBefore", services.upstream.now())
        if problem := range_error(earliest, latest):
            raise BadParameter(problem[1])
        matches, _ = matcher(*(_filter(request) or [None, None, None]))
    except BadParameter as error:
        return error_response(400, str(error), BAD_USER_INPUT)
    pager = HistoryPager(services.upstream.history(Cost(), keep=False), device, earliest, latest)
    windows = aiter(pager.windows())
    try:
        first = await anext(windows)  # trouble here still gets a proper status
    except UpstreamError as error:
        return _upstream_error(error)

    async def body() -> AsyncIterator[str]:
        yield _csv([HISTORY_COLUMNS])
        items, _ = first
        yield _csv(_event_row(i.event) for i in items if matches(i.event))
        async for items, _ in windows:
            yield _csv(_event_row(i.event) for i in items if matches(i.event))

    name = f"provisioning-history-{device.kind}-{device.identifier}.csv"
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _report_spec(request: Request, max_devices: int) -> ReportSpec:
    """The report the query parameters ask for; BadParameter for the first one unusable."""
    params = request.query_params
    named = params.getlist("devices")
    if not named:
        raise BadParameter("devices is required: kind:identifier, repeated for each device.")
    if len(named) > max_devices:
        raise BadParameter(f"devices: at most {max_devices} devices a report.")
    devices = []
    for position, value in enumerate(named, start=1):
        kind, colon, identifier = value.partition(":")
        if not colon:
            raise BadParameter(f"devices #{position} is not kind:identifier.")
        devices.append(
            _device(kind, identifier, f"The kind in devices #{position}", f"devices #{position}")
        )
    group_by = list(dict.fromkeys(params.getlist("groupBy") or ["EVENT_TYPE"]))
    if any(g not in DIMENSIONS for g in group_by):
        raise BadParameter(f"groupBy must be among {', '.join(DIMENSIONS)}.")
    bucket = params.get("bucket")
    if bucket is not None and bucket not in BUCKETS:
        raise BadParameter(f"bucket must be one of {', '.join(BUCKETS)}.")
    zone = params.get("timeZone", "UTC")
    if time_zone(zone) is None:
        raise BadParameter(TIME_ZONE_EXPECTED)
    earliest = _instant(request, "occurredAfter")
    latest = _instant(request, "occurredBefore")
    if problem := range_error(earliest, latest):
        raise BadParameter(problem[1])
    return spec_json(
        request_json(devices, earliest, latest, group_by, bucket, zone, _filter(request))
    )


def _device_label(device: dict[str, str]) -> str:
    return f"{device['kind'].upper()}:{device['identifier']}"


def _failed_report(failures: list[dict[str, Any]]) -> Response:
    """The error for a report none of whose devices could be read: 404 when the upstream
    knows none of them, 504 when every read timed out, else 502."""
    codes = {f["code"] for f in failures}
    listed = [
        {"device": _device_label(f["device"]), "code": f["code"], "message": f["message"]}
        for f in failures
    ]
    if codes == {DEVICE_NOT_FOUND}:
        message = "The upstream knows none of the report's devices."
        return error_response(404, message, NOT_FOUND, failures=listed)
    message = f"No device of the report could be read ({len(failures)} failed)."
    if codes == {UpstreamTimeout.category}:
        return error_response(504, message, UpstreamTimeout.category, failures=listed)
    # A failure's code is an upstream error category, or the upstream's own fault code.
    categories = {c if c.startswith("UPSTREAM_") else UpstreamFault.category for c in codes}
    code = categories.pop() if len(categories) == 1 else UpstreamError.category
    return error_response(502, message, code, failures=listed)


async def report_csv(request: Request) -> Response:
    _serving("provisioningReportCsv")
    if refusal := _forbidden(request, REPORTS_READ):
        return refusal
    services = services_of(request)
    job_id = request.query_params.get("jobId")
    if job_id is not None:
        try:
            raw_id = job_id_of(job_id)
        except GraphQLError:  # not a global id at all
            return error_response(400, "jobId is not a report job's id.", BAD_USER_INPUT)
        caller = principal_of(request)
        job = await services.jobs.get(raw_id, caller.subject) if raw_id else None
        if job is None:
            return error_response(404, "No such report job.", NOT_FOUND)
        if job.result is None:
            return error_response(409, f"The job is {job.state}, not finished.", "NOT_READY")
        document, group_by, bucket = job.result, job.request["groupBy"], job.request["bucket"]
    else:
        try:
            spec = _report_spec(request, services.settings.report_max_devices)
        except BadParameter as error:
            return error_response(400, str(error), BAD_USER_INPUT)
        report = await run_report(
            services.upstream, spec, Progress(), services.settings.upstream_concurrency
        )
        document, group_by, bucket = report_json(report, spec), spec.group_by, spec.bucket
    failures = document["failures"]
    if failures and not document["devicesScanned"]:
        return _failed_report(failures)
    columns = [_DIMENSION_COLUMNS[g] for g in group_by]
    header = (
        columns
        + (["bucketStart"] if bucket else [])
        + ["count", "firstOccurredAt", "lastOccurredAt"]
    )

    def line(row: dict[str, Any]) -> list[Any]:
        key = row["key"]
        values = [
            _device_label(key["device"]) if c == "device" else key.get(c) or "" for c in columns
        ]
        if bucket:
            values.append(format_api_instant(key["bucketStart"]))
        return [
            *values,
            row["count"],
            format_api_instant(row["firstOccurredAt"]),
            format_api_instant(row["lastOccurredAt"]),
        ]

    async def body() -> AsyncIterator[str]:
        yield _csv([header])
        yield _csv(line(row) for row in document["rows"])
        # Last, and marked, so that a reader that skips '#' rows reads the rows alone.
        yield _csv(
            [FAILURE_MARK, _device_label(f["device"]), f["code"], f["message"]] for f in failures
        )

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="provisioning-report.csv"',
            FAILURES_HEADER: str(len(failures)),
        },
    )

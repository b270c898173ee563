"""CSV exports for spreadsheets, streamed as the upstream pages arrive.

    GET /exports/provisioning-history.csv?kind=MEID&identifier=...&occurredAfter=...
    GET /exports/provisioning-report.csv?jobId=<the job's id>   (or the report's parameters)

Parameters are named like the GraphQL arguments; list parameters repeat (eventTypes=a&
eventTypes=b). Files are RFC 4180 (CRLF, quotes doubled) with a header row. Input errors
answer 400, an unknown device 404, upstream trouble before the first byte 502 or 504, all
as JSON. Upstream trouble after the first byte aborts the transfer without its final
chunk, so no client takes a cut-off file for a whole one.
"""

import csv
import io
from collections.abc import AsyncIterator, Iterable
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from graph.auth import principal_of
from graph.context import Services
from graph.devices import DeviceIdentifierKind, identifier_record
from graph.history import range_error
from graph.logs import current_request
from graph.permissions import FORBIDDEN
from graph.reports import job_id_of
from models.devices import DeviceIdentifier as IdentifierRecord
from models.events import ProvisioningEvent
from models.instants import InvalidInstant, format_api_instant, parse_instant
from resolvers.history import HistoryPager, matcher
from resolvers.reports import Progress, report_json, request_json, run_report, spec_json
from resolvers.upstream import Cost
from soap.contract import DEVICE_NOT_FOUND
from soap.errors import UpstreamError, UpstreamFault, UpstreamTimeout

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


class BadParameter(ValueError):
    pass


def _csv(rows: Iterable[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def _serving(export: str) -> None:
    """Names the export in the request's access line and metrics."""
    if (info := current_request()) is not None:
        info.export = export


def _error(status: int, message: str, code: str) -> JSONResponse:
    if (info := current_request()) is not None:
        info.outcome = code
    return JSONResponse({"error": message, "code": code}, status_code=status)


def _forbidden(request: Request, scope: str) -> JSONResponse | None:
    """403 unless the caller's credential carries ``scope``; checked before any work."""
    if scope in principal_of(request).scopes:
        return None
    return _error(403, f"This needs the {scope} scope.", FORBIDDEN)


def _upstream_error(error: UpstreamError) -> JSONResponse:
    if isinstance(error, UpstreamFault) and error.code == DEVICE_NOT_FOUND:
        return _error(404, "The upstream does not know this device.", "NOT_FOUND")
    status = 504 if isinstance(error, UpstreamTimeout) else 502
    return _error(status, str(error), error.category)


def _instant(request: Request, name: str, default: int | None = None) -> int:
    value = request.query_params.get(name)
    if value is None:
        if default is None:
            raise BadParameter(f"{name} is required")
        return default
    try:
        return parse_instant(value)
    except InvalidInstant:
        raise BadParameter(f"{name} is not an ISO-8601 date-time") from None


def _device(kind: str, identifier: str) -> IdentifierRecord:
    try:
        return identifier_record(DeviceIdentifierKind[kind.upper()], identifier)
    except KeyError:
        kinds = ", ".join(k.name for k in DeviceIdentifierKind)
        raise BadParameter(f"kind must be one of {kinds}") from None
    except GraphQLError as error:
        raise BadParameter(error.message) from None


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
    if refusal := _forbidden(request, "history:read"):
        return refusal
    services: Services = request.app.state.services
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
        return _error(400, str(error), "BAD_USER_INPUT")
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


async def report_csv(request: Request) -> Response:
    _serving("provisioningReportCsv")
    if refusal := _forbidden(request, "reports:read"):
        return refusal
    services: Services = request.app.state.services
    job_id = request.query_params.get("jobId")
    if job_id is not None:
        try:
            raw_id = job_id_of(job_id)
        except GraphQLError as error:
            return _error(400, error.message, "BAD_USER_INPUT")
        caller = principal_of(request)
        job = await services.jobs.get(raw_id, caller.subject) if raw_id else None
        if job is None:
            return _error(404, "No such report job.", "NOT_FOUND")
        if job.result is None:
            return _error(409, f"The job is {job.state}, not finished.", "NOT_READY")
        document, group_by, bucket = job.result, job.request["groupBy"], job.request["bucket"]
    else:
        try:
            named = request.query_params.getlist("devices")
            if len(named) > services.settings.report_max_devices:
                raise BadParameter(
                    f"At most {services.settings.report_max_devices} devices a report."
                )
            devices = []
            for value in named:
                kind, _, identifier = value.partition(":")
                devices.append(_device(kind, identifier))
            if not devices:
                raise BadParameter("devices is required, as kind:identifier, repeated")
            group_by = request.query_params.getlist("groupBy") or ["EVENT_TYPE"]
            if any(g not in _DIMENSION_COLUMNS for g in group_by):
                raise BadParameter(f"groupBy must be among {', '.join(_DIMENSION_COLUMNS)}")
            bucket = request.query_params.get("bucket")
            if bucket not in (None, "HOUR", "DAY", "WEEK", "MONTH"):
                raise BadParameter("bucket must be HOUR, DAY, WEEK or MONTH")
            earliest = _instant(request, "occurredAfter")
            latest = _instant(request, "occurredBefore")
            if problem := range_error(earliest, latest):
                raise BadParameter(problem[1])
            spec_request = request_json(
                devices,
                earliest,
                latest,
                group_by,
                bucket,
                request.query_params.get("timeZone", "UTC"),
                _filter(request),
            )
            spec = spec_json(spec_request)
        except (BadParameter, ValueError, KeyError) as error:
            return _error(400, str(error), "BAD_USER_INPUT")
        report = await run_report(
            services.upstream, spec, Progress(), services.settings.upstream_concurrency
        )
        document = report_json(report, spec)
    columns = [_DIMENSION_COLUMNS[g] for g in group_by]
    header = (
        columns
        + (["bucketStart"] if bucket else [])
        + ["count", "firstOccurredAt", "lastOccurredAt"]
    )

    def line(row: dict[str, Any]) -> list[Any]:
        key = row["key"]
        values = [
            f"{key['device']['kind'].upper()}:{key['device']['identifier']}"
            if c == "device"
            else key.get(c) or ""
            for c in columns
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

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="provisioning-report.csv"'},
    )

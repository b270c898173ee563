"""CSV exports for spreadsheets, streamed as the upstream pages arrive.

    GET /exports/provisioning-history.csv?kind=MEID&identifier=...&occurredAfter=...
    GET /exports/provisioning-report.csv?jobId=<the job's id>   (or the report's parameters)

Parameters are named like the GraphQL arguments; list parameters repeat (eventTypes=a&
eventTypes=b). A report without ``devices`` covers every device of the account that
``kinds``, ``accountName``, ``activatedAfter`` and ``activatedBefore`` keep (the GraphQL
``deviceFilter``), up to REPORT_MAX_DEVICES: a larger one answers 422 REPORT_TOO_LARGE
before reading any history; a report job can take it.

Files are RFC 4180 (CRLF, quotes doubled) with a header row. Errors have the service's one
error shape (JSON): input errors answer 400 BAD_USER_INPUT, an unknown device 404,
upstream trouble before the first byte 502 or 504. Upstream trouble after the
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
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from graph.reports.queries import job_id_of
from graph.requests import current_request
from models.devices import DeviceIdentifier
from models.errors import ErrorCode, UserErrorCode
from models.events import ProvisioningEvent
from models.instants import InvalidInstant, format_api_instant, parse_instant
from models.principal import HISTORY_READ, REPORTS_READ
from models.reports import ReportDimension, TimeBucket
from resolvers.history import HistoryPager, matcher, range_problem
from resolvers.recipes import UserError
from resolvers.reports import (
    DEFAULT_GROUP_BY,
    DEVICE_FILTER,
    KEY_NAMES,
    KIND_NAMES,
    AccountNotVisible,
    DeviceFilter,
    Progress,
    ReportRequest,
    ReportTooLarge,
    check_account_scope,
    check_request,
    read_device,
    report_devices,
    report_json,
    run_report,
)
from resolvers.upstream import Cost
from server.auth import principal_of
from server.responses import error_response
from server.services import services_of
from soap.contract import DEVICE_NOT_FOUND
from soap.errors import UpstreamError, UpstreamFault, UpstreamTimeout

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
_FILTER_PARAMETERS = ("kinds", "accountName", "activatedAfter", "activatedBefore")
"""The GraphQL deviceFilter's fields, as parameters of their own."""
_REPORT_PARAMETERS = (
    "devices",
    "groupBy",
    "bucket",
    "timeZone",
    "occurredAfter",
    "occurredBefore",
    DEVICE_FILTER,
    *_FILTER_PARAMETERS,
)
"""In the order the route checks them: of several parameters that are wrong, the answer
is about the first."""


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
    return error_response(403, f"This needs the {scope} scope.", ErrorCode.FORBIDDEN)


def _upstream_error(error: UpstreamError) -> Response:
    if isinstance(error, UpstreamFault) and error.code == DEVICE_NOT_FOUND:
        return error_response(404, "The upstream does not know this device.", ErrorCode.NOT_FOUND)
    status = 504 if isinstance(error, UpstreamTimeout) else 502
    return error_response(status, str(error), error.category)


def _parsed_instant(value: str, name: str) -> int:
    try:
        return parse_instant(value)
    except InvalidInstant:
        raise BadParameter(f"{name} is not an ISO-8601 date-time.") from None


def _instant(params: QueryParams, name: str, default: int) -> int:
    value = params.get(name)
    return default if value is None else _parsed_instant(value, name)


def _device(kind: str, identifier: str) -> DeviceIdentifier:
    device = read_device(kind, identifier)
    if isinstance(device, UserError):
        kind_wrong = device.field == ["kind"]
        raise BadParameter(device.message if kind_wrong else f"identifier: {device.message}")
    return device


def _filter(params: QueryParams) -> list[list[str] | None]:
    """The event types, statuses and users asked for, each None when not asked."""
    return [params.getlist(name) or None for name in ("eventTypes", "statuses", "eventBy")]


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
    params = request.query_params
    try:
        device = _device(params.get("kind", ""), params.get("identifier", ""))
        earliest = _instant(params, "occurredAfter", parse_instant("2000-01-01"))
        latest = _instant(params, "occurredBefore", services.upstream.now())
        if problem := range_problem(earliest, latest):
            raise BadParameter(problem[1])
    except BadParameter as error:
        return error_response(400, str(error), ErrorCode.BAD_USER_INPUT)
    matches, _ = matcher(*_filter(params))
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


def _group_by(values: list[str], problems: list[UserError]) -> list[ReportDimension]:
    try:
        return [ReportDimension(value) for value in values or DEFAULT_GROUP_BY]
    except ValueError:
        message = f"groupBy must be among {', '.join(ReportDimension)}."
        problems.append(UserError(["groupBy"], UserErrorCode.BAD_USER_INPUT, message))
        return list(DEFAULT_GROUP_BY)


def _bucket(value: str | None, problems: list[UserError]) -> TimeBucket | None:
    try:
        return None if value is None else TimeBucket(value)
    except ValueError:
        message = f"bucket must be one of {', '.join(TimeBucket)}."
        problems.append(UserError(["bucket"], UserErrorCode.BAD_USER_INPUT, message))
        return None


def _report_instant(params: QueryParams, name: str, problems: list[UserError]) -> int | None:
    """The instant, or None when it is missing (the request model requires it) or wrong."""
    value = params.get(name)
    try:
        return None if value is None else _parsed_instant(value, name)
    except BadParameter as error:
        problems.append(UserError([name], UserErrorCode.BAD_USER_INPUT, str(error)))
        return None


def _parameter(error: UserError) -> str:
    """The parameter an error is about: the request model puts the filter's below
    ``deviceFilter``, where the route has them as parameters of their own."""
    field = error.field
    return field[1] if field[0] == DEVICE_FILTER and len(field) > 1 else field[0]


def _checked_order(error: UserError) -> tuple[int, int]:
    parameter = _parameter(error)
    device = int(error.field[1]) if parameter == "devices" and len(error.field) > 1 else -1
    return _REPORT_PARAMETERS.index(parameter), device


def _in_our_words(error: UserError, named: list[str], max_devices: int) -> str:
    """What the route says about an error: the request model's about a device in its own
    words (devices named by position, as written), any other as it is."""
    match error.field:
        case [name] if name == DEVICE_FILTER:
            return (
                f"{', '.join(_FILTER_PARAMETERS)} choose among every device of the account: "
                "leave out devices, or them."
            )
        case ["devices"]:
            return f"devices: at most {max_devices} devices a report."
        case ["devices", index, part]:
            position = int(index) + 1
            if ":" not in named[int(index)]:
                return f"devices #{position} is not kind:identifier."
            if part == "kind":
                return f"The kind in devices #{position} must be one of {KIND_NAMES}."
            return f"devices #{position}: {error.message}"
    return error.message


def _device_filter(params: QueryParams, problems: list[UserError]) -> DeviceFilter | None:
    """The device filter the parameters ask for, None when they name none of its fields;
    instants the route cannot read are left out and added to ``problems``."""
    if not any(name in params for name in _FILTER_PARAMETERS):
        return None
    kinds = params.getlist("kinds")
    return DeviceFilter(
        kinds=tuple(kinds) if kinds else None,
        account_name=params.get("accountName"),
        activated_after=_report_instant(params, "activatedAfter", problems),
        activated_before=_report_instant(params, "activatedBefore", problems),
    )


def _report_request(params: QueryParams, max_devices: int) -> ReportRequest | Response:
    """The report the query parameters ask for, or the 400 answer about the first one
    unusable."""
    named = params.getlist("devices")
    event_types, statuses, event_by = _filter(params)
    problems: list[UserError] = []
    checked = check_request(
        devices=(
            [(kind, identifier) for kind, _, identifier in (n.partition(":") for n in named)]
            if named
            else None
        ),
        device_filter=_device_filter(params, problems),
        occurred_after=_report_instant(params, "occurredAfter", problems),
        occurred_before=_report_instant(params, "occurredBefore", problems),
        group_by=_group_by(params.getlist("groupBy"), problems),
        bucket=_bucket(params.get("bucket"), problems),
        zone=params.get("timeZone"),
        event_types=event_types,
        statuses=statuses,
        event_by=event_by,
        max_devices=max_devices,
    )
    if isinstance(checked, ReportRequest):
        if not problems:
            return checked
    else:
        # After the route's own: of two about one parameter (an instant the route could
        # not read, which the model then saw missing), the route's says more.
        problems += checked
    first = min(problems, key=_checked_order)
    return error_response(400, _in_our_words(first, named, max_devices), ErrorCode.BAD_USER_INPUT)


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
        return error_response(404, message, ErrorCode.NOT_FOUND, failures=listed)
    message = f"No device of the report could be read ({len(failures)} failed)."
    if codes == {UpstreamTimeout.category}:
        return error_response(504, message, UpstreamTimeout.category, failures=listed)
    # A failure's code is an upstream error category, or the upstream's own fault code.
    categories = {c if c.startswith("UPSTREAM_") else UpstreamFault.category for c in codes}
    code = categories.pop() if len(categories) == 1 else UpstreamError.category
    return error_response(502, message, code, failures=listed)


async def _job_report(
    request: Request, job_id: str
) -> tuple[dict[str, Any], ReportRequest] | Response:
    """A finished job's report of the caller's, and what it was asked for."""
    try:
        raw_id = job_id_of(job_id)
    except GraphQLError:  # not a global id at all
        return error_response(400, "jobId is not a report job's id.", ErrorCode.BAD_USER_INPUT)
    owner = principal_of(request).subject
    job = await services_of(request).jobs.get(raw_id, owner) if raw_id else None
    if job is None:
        return error_response(404, "No such report job.", ErrorCode.NOT_FOUND)
    if job.result is None:
        return error_response(409, f"The job is {job.state}, not finished.", ErrorCode.NOT_READY)
    return job.result, ReportRequest.of_json(job.request)


async def _computed_report(request: Request) -> tuple[dict[str, Any], ReportRequest] | Response:
    """The report the query parameters ask for, computed now, and what they asked for."""
    services = services_of(request)
    limit = services.settings.report_max_devices
    asked = _report_request(request.query_params, limit)
    if isinstance(asked, Response):
        return asked
    try:
        check_account_scope(asked, principal_of(request))
    except AccountNotVisible as refused:
        return error_response(403, str(refused), ErrorCode.FORBIDDEN)
    progress = Progress()
    try:
        devices = await report_devices(services.upstream, progress.cost, asked, at_most=limit)
    except ReportTooLarge as error:
        return error_response(422, str(error), ErrorCode.REPORT_TOO_LARGE, limit=error.limit)
    except UpstreamError as error:  # the device list could not be read
        return _upstream_error(error)
    spec = asked.spec(devices)
    report = await run_report(
        services.upstream, spec, progress, services.settings.upstream_concurrency
    )
    return report_json(report, spec), asked


def _report_row(row: dict[str, Any], columns: list[str], bucketed: bool) -> list[Any]:
    key = row["key"]
    values = [_device_label(key["device"]) if c == "device" else key.get(c) or "" for c in columns]
    if bucketed:
        values.append(format_api_instant(key["bucketStart"]))
    return [
        *values,
        row["count"],
        format_api_instant(row["firstOccurredAt"]),
        format_api_instant(row["lastOccurredAt"]),
    ]


def _report_file(document: dict[str, Any], asked: ReportRequest) -> Response:
    columns = [KEY_NAMES[dimension] for dimension in asked.group_by]
    bucketed = asked.bucket is not None
    header = [*columns, *(["bucketStart"] if bucketed else []), "count"]
    header += ["firstOccurredAt", "lastOccurredAt"]
    failures = document["failures"]

    async def body() -> AsyncIterator[str]:
        yield _csv([header])
        yield _csv(_report_row(row, columns, bucketed) for row in document["rows"])
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


async def report_csv(request: Request) -> Response:
    _serving("provisioningReportCsv")
    if refusal := _forbidden(request, REPORTS_READ):
        return refusal
    job_id = request.query_params.get("jobId")
    found = await (_computed_report(request) if job_id is None else _job_report(request, job_id))
    if isinstance(found, Response):
        return found
    document, asked = found
    if document["failures"] and not document["devicesScanned"]:
        return _failed_report(document["failures"])
    return _report_file(document, asked)

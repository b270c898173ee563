"""Typed GraphQL errors, and what every response says in ``extensions``."""

from typing import Any

import strawberry
from graphql import GraphQLError

from models.errors import ErrorCode, WarningCode
from models.instants import format_api_instant
from resolvers.cursors import CursorError
from resolvers.events import SubscriberTooSlow
from resolvers.history import HistoryPagingError
from resolvers.reports import AccountNotVisible, ReportTooLarge
from resolvers.upstream import Cost, UpstreamBudgetExceeded
from soap.errors import UpstreamBadReply, UpstreamError, UpstreamFault, UpstreamUnavailable

ERROR_CODES = strawberry.enum(
    ErrorCode,
    name="ErrorCode",
    description="Every extensions.code an error of this API carries, over GraphQL, HTTP "
    "and WebSockets alike. Clients match on these, never on messages.",
)
WARNING_CODES = strawberry.enum(
    WarningCode,
    name="WarningCode",
    description="Codes of extensions.warnings: the answer stands, with a caveat.",
)

UNEXPECTED = "Unexpected error."
"""The message of every masked error: what went wrong is in the log, under its request id."""


def user_error(message: str, argument: str | None = None) -> GraphQLError:
    extensions: dict[str, Any] = {"code": ErrorCode.BAD_USER_INPUT}
    if argument:
        extensions["argument"] = argument
    return GraphQLError(message, extensions=extensions)


def _extensions(error: BaseException) -> dict[str, Any] | None:
    if isinstance(error, CursorError):
        return {"code": ErrorCode.BAD_USER_INPUT}
    if isinstance(error, SubscriberTooSlow):
        return {"code": ErrorCode.SUBSCRIBER_TOO_SLOW}
    if isinstance(error, HistoryPagingError):
        return {"code": UpstreamBadReply.category}
    if isinstance(error, UpstreamBudgetExceeded):
        return {"code": ErrorCode.UPSTREAM_BUDGET_EXCEEDED, "budget": error.budget}
    if isinstance(error, AccountNotVisible):
        return {"code": ErrorCode.FORBIDDEN}
    if isinstance(error, ReportTooLarge):
        return {"code": ErrorCode.REPORT_TOO_LARGE, "limit": error.limit}
    if not isinstance(error, UpstreamError):
        return None
    extensions: dict[str, Any] = {"code": error.category}
    if isinstance(error, UpstreamFault):
        extensions["upstreamCode"] = error.code
    if isinstance(error, UpstreamUnavailable) and error.status_code is not None:
        extensions["httpStatus"] = error.status_code
    return extensions


def _device_list_warning(error: UpstreamError) -> dict[str, Any]:
    warning: dict[str, Any] = {
        "code": WarningCode.DEVICE_LIST_UNAVAILABLE,
        "message": "The upstream's device list could not be read: devices were found "
        "through their history, and their identifiers show only the one asked by.",
        "reason": error.category,
    }
    if isinstance(error, UpstreamFault):
        warning["upstreamCode"] = error.code
    return warning


def type_errors(errors: list[GraphQLError]) -> None:
    """Gives upstream and input errors their codes."""
    for error in errors:
        extensions = _extensions(error.original_error) if error.original_error else None
        if extensions is not None:
            error.extensions = {**(error.extensions or {}), **extensions}


def response_extensions(cost: Cost) -> dict[str, Any]:
    """What a response says in ``extensions``: its cost, and its warnings."""
    results: dict[str, Any] = {
        "cost": {"upstreamCalls": cost.upstream_calls, "cacheHits": cost.cache_hits}
    }
    warnings: list[dict[str, Any]] = [
        {
            "code": WarningCode.UPSTREAM_GAP,
            "message": gap.message,
            "device": {"kind": device.kind.upper(), "identifier": device.identifier},
            "occurredAt": format_api_instant(gap.instant),
            "delivered": gap.delivered,
        }
        for device, gap in cost.gaps
    ]
    if cost.stale_reads:
        results["cost"]["staleReads"] = cost.stale_reads
        warnings.append(
            {
                "code": WarningCode.STALE_DATA,
                "message": f"The upstream is unavailable: {cost.stale_reads} of its "
                "answers came from the cache after their freshness ran out; newer "
                "events may be missing.",
                "staleReads": cost.stale_reads,
            }
        )
    if cost.device_list_unavailable is not None:
        warnings.append(_device_list_warning(cost.device_list_unavailable))
    if warnings:
        results["warnings"] = warnings
    return results

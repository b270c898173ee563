"""The codes the API puts in ``extensions.code``: of errors, and of warnings.

One vocabulary for GraphQL responses, HTTP errors, WebSocket errors and CSV failures
alike; clients match on these, never on messages. GraphQL lists them as enums too
(``graph/errors.py``), so that introspection shows every code there is.
"""

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_USER_INPUT = "BAD_USER_INPUT"
    """An argument, variable, parameter or body the API refuses; nothing was changed."""
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    """Over a limit of depth, tokens, aliases or cost; ``extensions.limit`` says which."""
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    """The credential lacks the scope (or organization) this field needs."""
    NOT_FOUND = "NOT_FOUND"
    NOT_READY = "NOT_READY"
    """A report job's CSV asked for before the job finished."""
    REPORT_TOO_LARGE = "REPORT_TOO_LARGE"
    """A whole-account report, computed in the request, over more devices than
    REPORT_MAX_DEVICES (``extensions.limit``): start a report job instead."""
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
    """A subscriber fell SUBSCRIBER_QUEUE_SIZE events behind and was dropped: reconnect with
    ``after`` set to the last event id received."""
    TOO_MANY_INITIALISATION_REQUESTS = "TOO_MANY_INITIALISATION_REQUESTS"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    """Masked: the log line with the same ``requestId`` says what happened."""
    HTTP_ERROR = "HTTP_ERROR"
    """A framework's error with a status that has no name of its own."""
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    """No document has the hash the request names: send the document with its hash."""
    PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
    """Documents named by hash are off on this server (PERSISTED_QUERIES=off)."""
    PERSISTED_QUERY_NOT_ALLOWED = "PERSISTED_QUERY_NOT_ALLOWED"
    """The server runs only the documents of its manifest (PERSISTED_QUERIES=only)."""
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    UPSTREAM_FAULT = "UPSTREAM_FAULT"
    """A SOAP fault; ``extensions.upstreamCode`` carries its code."""
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UPSTREAM_BAD_REPLY = "UPSTREAM_BAD_REPLY"
    UPSTREAM_BUDGET_EXCEEDED = "UPSTREAM_BUDGET_EXCEEDED"
    """The operation would need more upstream calls than MAX_UPSTREAM_CALLS_PER_REQUEST."""


class WarningCode(StrEnum):
    """Codes of ``extensions.warnings``: the answer stands, with a caveat."""

    STALE_DATA = "STALE_DATA"
    UPSTREAM_GAP = "UPSTREAM_GAP"
    DEVICE_LIST_UNAVAILABLE = "DEVICE_LIST_UNAVAILABLE"


class UserErrorCode(StrEnum):
    """Codes of the ``userErrors`` a mutation or a report's input answers with: the
    request was read, and this part of it is refused; ``field`` points at the part."""

    REQUIRED = "REQUIRED"
    INVALID = "INVALID"
    TOO_LONG = "TOO_LONG"
    TOO_MANY = "TOO_MANY"
    INVALID_UID = "INVALID_UID"
    INVALID_CHARACTERS = "INVALID_CHARACTERS"
    INVALID_MAC_ADDRESS = "INVALID_MAC_ADDRESS"
    INVALID_KIND = "INVALID_KIND"
    INVALID_IDENTIFIER = "INVALID_IDENTIFIER"
    INVALID_RANGE = "INVALID_RANGE"
    INVALID_TIME_ZONE = "INVALID_TIME_ZONE"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    DEVICE_NOT_FOUND = "DEVICE_NOT_FOUND"
    TOO_MANY_JOBS = "TOO_MANY_JOBS"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    """A CSV parameter that is not one the route can read at all."""

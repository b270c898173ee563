"""Typed upstream failures. Messages are safe to show: they never carry credentials."""

from models.errors import ErrorCode
from soap.contract import DEVICE_NOT_FOUND, INPUT_INVALID

TRANSIENT_HTTP_STATUSES = frozenset({502, 503, 504})
"""Gateway and availability errors: a proxy or the service says "not now", not "never"."""


class UpstreamError(Exception):
    """Anything that kept an upstream call from giving a usable answer."""

    transient = False
    """Whether the same call may succeed if simply tried again later."""
    category = ErrorCode.UPSTREAM_ERROR
    """The error's code wherever the API reports it (GraphQL, report failures, exports)."""

    def __init__(self, operation: str, message: str) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation
        self.message = message


class UpstreamFault(UpstreamError):
    """The upstream answered with a SOAP fault."""

    category = ErrorCode.UPSTREAM_FAULT

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(operation, f"{code}: {message}")
        self.code = code
        """The fault code without its service prefix, e.g. 'REQUEST_FAILED.DeviceNotFound'."""
        self.fault_message = message

    @property
    def rejects_input(self) -> bool:
        """Whether the fault is about what was asked (an unknown device, an invalid
        identifier or range, an operation this account may not use: SOAP's ``Client``
        faults), which shows the service at work rather than failing."""
        return (
            self.code == DEVICE_NOT_FOUND
            or self.code.split(".")[0] == INPUT_INVALID
            or self.code.rpartition(":")[2] == "Client"
        )


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached, or answered with an HTTP error and no fault."""

    category = ErrorCode.UPSTREAM_UNAVAILABLE

    def __init__(self, operation: str, message: str, status_code: int | None = None) -> None:
        super().__init__(operation, message)
        self.status_code = status_code
        # A 500 without a fault is the service failing on this request: asking again
        # would most likely fail the same way, and only add load to a service in trouble.
        self.transient = status_code is None or status_code in TRANSIENT_HTTP_STATUSES


class UpstreamTimeout(UpstreamError):
    """No complete answer within the configured timeout."""

    transient = True
    category = ErrorCode.UPSTREAM_TIMEOUT


class UpstreamBadReply(UpstreamError):
    """An answer that is not a SOAP envelope: an HTML page, truncated XML, an empty body."""

    category = ErrorCode.UPSTREAM_BAD_REPLY

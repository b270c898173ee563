"""Typed upstream failures. Messages are safe to show: they never carry credentials."""


class UpstreamError(Exception):
    """Anything that kept an upstream call from giving a usable answer."""

    transient = False
    """Whether the same call may succeed if simply tried again later."""
    category = "UPSTREAM_ERROR"
    """The error's code wherever the API reports it (GraphQL, report failures, exports)."""

    def __init__(self, operation: str, message: str) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation
        self.message = message


class UpstreamFault(UpstreamError):
    """The upstream answered with a SOAP fault."""

    category = "UPSTREAM_FAULT"

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(operation, f"{code}: {message}")
        self.code = code
        """The fault code without its service prefix, e.g. 'REQUEST_FAILED.DeviceNotFound'."""
        self.fault_message = message


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached, or answered with an HTTP error and no fault."""

    transient = True
    category = "UPSTREAM_UNAVAILABLE"

    def __init__(self, operation: str, message: str, status_code: int | None = None) -> None:
        super().__init__(operation, message)
        self.status_code = status_code


class UpstreamTimeout(UpstreamError):
    """No complete answer within the configured timeout."""

    transient = True
    category = "UPSTREAM_TIMEOUT"


class UpstreamBadReply(UpstreamError):
    """An answer that is not a SOAP envelope: an HTML page, truncated XML, an empty body."""

    category = "UPSTREAM_BAD_REPLY"

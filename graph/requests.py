"""The request being served: its id, deadline and outcome, for logs, metrics and errors.

The server enters it for each HTTP request and WebSocket; the GraphQL layer reads its
deadline and labels its operation.
"""

import asyncio
from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass
class RequestInfo:
    """What the log line and the metrics of one HTTP request or WebSocket need."""

    id: str
    operation: str | None = None
    """The GraphQL operation, as labelled in the metrics."""
    export: str | None = None
    """The CSV export served, as labelled in the metrics."""
    outcome: str | None = None
    """An error code when the request failed; None while all is well."""
    deadline: asyncio.Timeout | None = None
    """The request's deadline, if it has one."""


_current: ContextVar[RequestInfo | None] = ContextVar("request", default=None)


def current_request() -> RequestInfo | None:
    return _current.get()


def enter_request(info: RequestInfo) -> Token[RequestInfo | None]:
    """Makes ``info`` current for this task and those it starts; returns the reset token."""
    return _current.set(info)


def leave_request(token: Token[RequestInfo | None]) -> None:
    _current.reset(token)

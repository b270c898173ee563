"""Request ids, the access log, and masked crashes."""

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graph.errors import UNEXPECTED
from graph.requests import RequestInfo, enter_request, leave_request
from models.errors import ErrorCode
from resolvers.metrics import REQUESTS
from server.responses import route_path, send_error
from soap.errors import UpstreamError

REQUEST_ID_HEADER = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

access = logging.getLogger("provgraph.access")
log = logging.getLogger(__name__)


def _request_id(scope: Scope) -> str:
    offered = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
    # A caller's id ties our lines to theirs; anything odd might forge log content.
    return offered if _SANE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex


class RequestContext:
    """Outermost: gives each request (and WebSocket) an id, the caller's X-Request-ID when
    it is sane, echoed in the response and carried by every log line; writes one access
    line per request (method, path, status, duration, operation; never the query string,
    the body or headers); and turns an exception that escaped everything into a masked
    500 whose request id leads to the one log line describing it."""

    def __init__(self, app: ASGIApp, quiet: tuple[str, ...] = ()) -> None:
        self.app = app
        self.quiet = quiet
        """Path prefixes whose lines are logged at DEBUG only (the embedded simulator)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        info = RequestInfo(_request_id(scope))
        # Decided now: a Mount below moves the scope's root_path as it routes.
        level = logging.DEBUG if route_path(scope).startswith(self.quiet) else logging.INFO
        token = enter_request(info)
        started = time.perf_counter()
        status: int | None = None
        logged = False

        def finish() -> None:
            nonlocal logged
            if not logged:
                logged = True
                self._served(scope, info, status, time.perf_counter() - started, level)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept"):
                status = message.get("status", 101)
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                headers[REQUEST_ID_HEADER] = info.id
                message["headers"] = headers.raw
            elif kind == "websocket.close" and status is None:
                status = 403  # closed before it was accepted: the handshake is refused
            elif kind == "http.response.body" and not message.get("more_body", False):
                finish()  # before the last byte leaves, so the line is there once it arrives
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if isinstance(error, UpstreamError):
                # Only a streamed export gets here, after its first byte: the transfer is
                # cut short (no final chunk), so nobody takes it for a whole file.
                log.warning("response aborted: %s", error.category)
                info.outcome = error.category
            else:
                log.error("unexpected error", exc_info=error)
                info.outcome = ErrorCode.INTERNAL_SERVER_ERROR
            if status is None and scope["type"] == "http":
                await send_error(send_with_id, 500, UNEXPECTED, ErrorCode.INTERNAL_SERVER_ERROR)
        finally:
            finish()
            leave_request(token)

    def _served(
        self, scope: Scope, info: RequestInfo, status: int | None, seconds: float, level: int
    ) -> None:
        method = scope.get("method", "WEBSOCKET")
        fields: dict[str, object] = {
            "method": method,
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
        }
        if scope["type"] == "http" and info.operation is not None:
            fields["operation"] = info.operation
        if info.outcome is not None:
            fields["outcome"] = info.outcome
        access.log(
            level, "%s %s %s %.1f ms", method, scope["path"], status, seconds * 1000, extra=fields
        )
        if info.export is not None:
            REQUESTS.labels(info.export, info.outcome or "ok").inc()

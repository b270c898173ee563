"""HTTP middleware: request ids and the access log, masked crashes, body size, deadline.

Every HTTP error the service writes, whatever the path, has the shape of a GraphQL
error, so that clients read every error the same way:
``{"errors": [{"message": ..., "extensions": {"code": ..., "requestId": ...}}]}``.
Ours are made by ``error_body``; the plain-text ones Starlette, Strawberry and the CORS
middleware write are rewritten into it by ``ErrorShape``.
"""

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from http import HTTPStatus

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graph.errors import BAD_USER_INPUT
from graph.logs import RequestInfo, current_request, enter_request, leave_request
from resolvers.metrics import REQUESTS
from soap.errors import UpstreamError

INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
UNEXPECTED = "Unexpected error."
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
REQUEST_ID_HEADER = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

access = logging.getLogger("provgraph.access")
log = logging.getLogger(__name__)


def route_path(scope: Scope) -> str:
    """What the router matches: the path below the root path the app is mounted at."""
    return str(scope["path"]).removeprefix(scope.get("root_path", ""))


def error_body(message: str, code: str, **details: object) -> bytes:
    """A GraphQL-shaped error, with the current request's id; records the outcome.

    ``details`` go into ``extensions`` beside the code.
    """
    extensions: dict[str, object] = {"code": code, **details}
    info = current_request()
    if info is not None:
        extensions["requestId"] = info.id
        info.outcome = code
    return json.dumps({"errors": [{"message": message, "extensions": extensions}]}).encode()


def error_response(
    status: int,
    message: str,
    code: str,
    headers: Mapping[str, str] | None = None,
    **details: object,
) -> Response:
    """``error_body`` as a response, for routes and the middleware that have one to return."""
    return Response(
        error_body(message, code, **details),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def send_error(
    send: Send,
    status: int,
    message: str,
    code: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    body = error_body(message, code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
                info.outcome = INTERNAL_SERVER_ERROR
            if status is None and scope["type"] == "http":
                await send_error(send_with_id, 500, UNEXPECTED, INTERNAL_SERVER_ERROR)
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


def framework_code(status: int) -> str:
    """The code of an error a framework wrote with only a status to go by."""
    if status == 400:
        return BAD_USER_INPUT  # as for every input we refuse ourselves
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "HTTP_ERROR"


class ErrorShape:
    """Rewrites the plain-text errors the frameworks write into the one error shape:
    Starlette's 404 and 405 for paths and methods no route serves, Strawberry's 400s for
    a request it cannot read, the CORS middleware's 400 for a refused preflight. Their
    text becomes the message and their status names the code; other headers stay."""

    def __init__(self, app: ASGIApp, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.exempt = exempt
        """Path prefixes answered as they are (the embedded simulator plays another service)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope).startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        text = bytearray()

        async def shaping_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
                if message["status"] >= 400 and content_type.startswith("text/plain"):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                text.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                status = held["status"]
                message_text = text.decode(errors="replace").strip()
                body = error_body(message_text or HTTPStatus(status).phrase, framework_code(status))
                headers = MutableHeaders(raw=list(held.get("headers", [])))
                headers["content-type"] = "application/json"
                headers["content-length"] = str(len(body))
                await send({**held, "headers": headers.raw})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, shaping_send)


class BodyLimit:
    """413 PAYLOAD_TOO_LARGE for a body over ``max_bytes``, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, 413, self._message(), PAYLOAD_TOO_LARGE)
            return
        received = 0
        refused = started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await send_error(send, 413, self._message(), PAYLOAD_TOO_LARGE)
                    # The app stops reading as if the client had gone.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # already answered 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise  # else the app only failed on the cut-off body, which is answered


class Deadline:
    """504 DEADLINE_EXCEEDED when a request's response has not started within ``seconds``.

    Cancelling the request cancels its upstream calls too. A response that has started
    (a CSV export streaming) is no longer timed.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        info = current_request()

        async def timed_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with asyncio.timeout(self.seconds) as deadline:
                if info is not None:
                    info.deadline = deadline
                await self.app(scope, receive, timed_send)
        except TimeoutError:
            if started or not deadline.expired():
                raise  # not ours: some inner timeout the app let escape
            await send_error(
                send,
                504,
                f"The request did not finish within its deadline of {self.seconds:g} s.",
                DEADLINE_EXCEEDED,
            )

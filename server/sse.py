"""GraphQL over SSE in single connection mode (graphql-sse's PROTOCOL.md), at /graphql.

Distinct connections mode (one operation per request, ``Accept: text/event-stream``) is
Strawberry's; this is the other one, which it does not speak:

- ``PUT`` reserves an event stream and answers 201 with its token, as ``text/plain``.
- ``GET`` (or ``POST`` without a body) with ``Accept: text/event-stream`` and the token
  (header ``X-GraphQL-Event-Stream-Token``, or ``?token=``) opens the stream; once.
- ``POST`` with the token and ``{query, variables, operationName, extensions:
  {operationId}}`` starts an operation (202); its results arrive on the stream as
  ``next`` events ``{"id", "payload"}``, then a ``complete`` event ``{"id"}``.
- ``DELETE`` with the token and ``?operationId=`` stops one.

A reservation belongs to the credential that made it: another credential's request finds
no stream (404), as an unknown token does. A reservation's stream is held to a socket's
rules by server/streams.py (its operations count per credential, its credential is
checked again, it ends at shutdown); when it ends, its operations stop and the token is
forgotten. A reservation never connected is forgotten after ``CONNECT_WITHIN_S``.

Reservations live in the process that made them: behind a load balancer, the protocol's
three kinds of request must reach the same replica (sticky sessions by the token header),
or clients use distinct connections mode, or a WebSocket, which need no affinity.
"""

import asyncio
import contextvars
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.streaming import SSETransport, merge_stream_with_heartbeat
from strawberry.schema.base import BaseSchema
from strawberry.schema.schema import StreamResult
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from graph.requests import current_request, enter_request
from models.errors import ErrorCode
from models.principal import Principal
from resolvers.auth import Unauthenticated
from server.auth import principal_of
from server.responses import error_response
from server.services import context_for, services_of
from server.streams import unauthenticated

TOKEN_HEADER = "x-graphql-event-stream-token"
TOKEN_PARAMETER = "token"
CONNECT_WITHIN_S = 60.0
"""How long a reservation waits for its stream, as graphql-transport-ws waits for a
``connection_init``."""
MAX_RESERVATIONS_PER_CREDENTIAL = 10
"""Reservations (open or waiting) one credential may hold on this replica."""
MESSAGES_BUFFERED = 100
"""Messages waiting for a slow stream; past them an operation waits, and so the event
hub's own bound, which drops a subscriber that falls behind, applies as over a socket."""
EVENT_STREAM_HEADERS = {
    "cache-control": "no-cache, no-transform",
    "x-accel-buffering": "no",
}

Process = Callable[[Request, ExecutionResult], Awaitable[GraphQLHTTPResponse]]
Decode = Callable[[bytes], Any]
Encode = Callable[[object], str]


def _problem(status: int, message: str, code: ErrorCode = ErrorCode.BAD_USER_INPUT) -> Response:
    return error_response(status, message, code)


def _outliving() -> contextvars.Context:
    """This request's context for an operation that outlives it: its trace and request id
    go on, its deadline (which ends with the 202) does not, as a socket's operations have
    none."""
    context = contextvars.copy_context()
    if (info := current_request()) is not None:
        context.run(enter_request, replace(info, deadline=None))
    return context


@dataclass(eq=False)
class _Reservation:
    principal: Principal
    made_at: float
    messages: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(MESSAGES_BUFFERED))
    operations: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    connected: bool = False

    def open_operations(self) -> int:
        return len(self.operations)

    def stop(self) -> None:
        for task in self.operations.values():
            task.cancel()
        self.operations.clear()


class SingleConnection:
    """The reservations of this process, and the requests of the protocol's mode."""

    def __init__(
        self,
        schema: BaseSchema,
        process: Process,
        decode: Decode,
        encode: Encode,
        keep_alive_s: float,
    ) -> None:
        self._schema = schema
        self._process = process
        self._decode = decode
        self._encode = encode
        self._sse = SSETransport(keep_alive_s)
        self._reservations: dict[str, _Reservation] = {}

    @staticmethod
    def claims(scope: Scope) -> bool:
        """Whether an HTTP request is this mode's (else it is an ordinary one)."""
        if scope["method"] in ("PUT", "DELETE"):
            return True
        if any(name == TOKEN_HEADER.encode() for name, _ in scope["headers"]):
            return True
        query = scope.get("query_string", b"").decode("latin-1")
        return any(part.startswith(f"{TOKEN_PARAMETER}=") for part in query.split("&"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._answer(request)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        self._forget_unconnected()
        principal = principal_of(request)
        if request.method == "PUT":
            return self._reserve(principal)
        token = request.headers.get(TOKEN_HEADER) or request.query_params.get(TOKEN_PARAMETER)
        reservation = self._reservations.get(token or "")
        if reservation is None or reservation.principal.subject != principal.subject:
            return _problem(
                404, "No such event stream: reserve one with PUT first.", ErrorCode.NOT_FOUND
            )
        assert token is not None
        if request.method == "DELETE":
            return self._stop(reservation, request)
        accept = request.headers.get("accept", "")
        if "text/event-stream" in accept:
            return self._connect(token, reservation, request)
        if request.method != "POST":
            return _problem(405, "Operations are sent with POST.")
        return await self._start(reservation, request)

    def _forget_unconnected(self) -> None:
        expired = time.monotonic() - CONNECT_WITHIN_S
        for token, reservation in list(self._reservations.items()):
            if not reservation.connected and reservation.made_at < expired:
                reservation.stop()
                del self._reservations[token]

    def _reserve(self, principal: Principal) -> Response:
        held = sum(r.principal.subject == principal.subject for r in self._reservations.values())
        if held >= MAX_RESERVATIONS_PER_CREDENTIAL:
            return error_response(
                429,
                f"At most {MAX_RESERVATIONS_PER_CREDENTIAL} event streams may be reserved at "
                "once for one credential.",
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                limit=MAX_RESERVATIONS_PER_CREDENTIAL,
            )
        token = secrets.token_urlsafe(24)
        self._reservations[token] = _Reservation(principal, time.monotonic())
        return PlainTextResponse(token, status_code=201)

    def _stop(self, reservation: _Reservation, request: Request) -> Response:
        operation_id = request.query_params.get("operationId")
        if not operation_id:
            return _problem(400, "operationId is missing.")
        task = reservation.operations.pop(operation_id, None)
        if task is not None:
            task.cancel()
        return Response(status_code=200)

    def _connect(self, token: str, reservation: _Reservation, request: Request) -> Response:
        if reservation.connected:
            return _problem(409, "The event stream is already open.")
        reservation.connected = True
        streams = services_of(request).streams

        async def messages() -> AsyncGenerator[str, None]:
            try:
                while True:
                    yield await reservation.messages.get()
            finally:
                reservation.stop()
                self._reservations.pop(token, None)

        with_keep_alives = merge_stream_with_heartbeat(
            messages,
            lambda: self._sse.encode_comment("ping"),
            interval=self._sse.heartbeat_interval,
            # The headers go out with the first chunk: the client knows at once.
            send_initial_heartbeat=True,
        )

        def last_words(error: Unauthenticated) -> str:
            # Every operation ends with the error, as a socket's do when it closes.
            failure = {"errors": [unauthenticated(error)]}
            return "".join(
                self._sse.encode_event("next", self._encode({"id": op, "payload": failure}))
                + self._sse.encode_event("complete", self._encode({"id": op}))
                for op in reservation.operations
            )

        held = streams.hold(
            with_keep_alives(), request, reservation.principal, last_words, reservation
        )
        return StreamingResponse(
            held, media_type=self._sse.headers["Content-Type"], headers=EVENT_STREAM_HEADERS
        )

    async def _start(self, reservation: _Reservation, request: Request) -> Response:
        try:
            body = self._decode(await request.body())
        except ValueError as error:
            return _problem(400, f"The request is not valid JSON: {error}")
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return _problem(400, "The request must be a JSON object with a query.")
        extensions = body.get("extensions") or {}
        variables = body.get("variables")
        operation_id = extensions.get("operationId") if isinstance(extensions, dict) else None
        if not isinstance(operation_id, str) or not operation_id:
            return _problem(400, "extensions.operationId is missing.")
        if variables is not None and not isinstance(variables, dict):
            return _problem(400, "variables must be an object.")
        if operation_id in reservation.operations:
            return _problem(409, f"Operation {operation_id} is already running.")
        services = services_of(request)
        if (refusal := services.streams.refusal(reservation.principal)) is not None:
            return refusal
        context = context_for(request, principal_of(request))
        results = await self._schema.stream(
            body["query"],
            variable_values=variables,
            context_value=context,
            operation_name=body.get("operationName"),
            operation_extensions=extensions,
            allowed_operation_types=tuple(OperationType),
        )
        reservation.operations[operation_id] = asyncio.create_task(
            self._run(reservation, operation_id, results, request), context=_outliving()
        )
        return Response(status_code=202)

    async def _run(
        self,
        reservation: _Reservation,
        operation_id: str,
        results: StreamResult,
        request: Request,
    ) -> None:
        try:
            async for result in results:
                if not isinstance(result, ExecutionResult):
                    continue  # incremental delivery (@defer, @stream): not in this schema
                payload = await self._process(request, result)
                message = {"id": operation_id, "payload": payload}
                await reservation.messages.put(
                    self._sse.encode_event("next", self._encode(message))
                )
            complete = self._encode({"id": operation_id})
            await reservation.messages.put(self._sse.encode_event("complete", complete))
        finally:
            await results.aclose()
            if reservation.operations.get(operation_id) is asyncio.current_task():
                del reservation.operations[operation_id]

"""WebSockets that keep to their credential, for both protocols Strawberry speaks.

A socket is authenticated once, at ``connection_init``, but may stay open for days. So:

- its credential is checked again (server/credentials.py), and before every new
  operation. One that no longer holds closes the socket: graphql-transport-ws
  closes 4403; graphql-ws answers ``connection_error``, then closes 4403.
- its ``connection_init`` and every operation it starts count against the credential's
  rate limit, as HTTP requests do; over it, the handshake closes 1013 (try again later)
  and an operation gets an error coded ``RATE_LIMITED`` while the socket stays open.
- operations in flight are capped per socket (``TOO_MANY_SUBSCRIPTIONS``,
  ``MAX_OPERATIONS_PER_SOCKET`` unless the app says otherwise) and per credential across
  this replica's sockets (``MAX_SUBSCRIPTIONS_PER_CREDENTIAL``).
- a socket keeps the credential it was acknowledged with: a second ``connection_init``
  closes it 4429, as graphql-transport-ws prescribes (graphql-ws answers
  ``connection_error`` first), since its count and its checks belong to the first one.

Strawberry's protocol handlers offer no public hook for any of this but the handshake
(``on_ws_connect``). So a guard stands between the connection and Strawberry's ASGI app:
it reads the protocol messages going either way (``connection_init``, ``subscribe`` or
``start``, ``complete`` or ``stop`` from the client; ``complete`` and ``error`` from the
server), and answers or closes for itself where its policy says so. Strawberry learns
that the guard closed the socket as it learns of any close: its next receive is a
disconnect, and it ends the socket's operations.

The guard also gives each operation it lets start an outlet (graph/sharing.py): a shared
subscription's live results go from the operation's task straight to the socket, as the
message Strawberry would have sent, without passing through its handler's send path
(with a thousand subscribers, most of a delivery's cost).
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_WS_PROTOCOL
from strawberry.types import ExecutionResult

from graph.context import Context
from graph.sharing import OUTLET, Outlet
from models.errors import ErrorCode
from resolvers.auth import Unauthenticated
from server.auth import authenticate_connection_init
from server.credentials import lapse, recheck
from server.frames import next_messages
from server.ratelimit import RateLimited
from server.services import services_of_context

log = logging.getLogger(__name__)

MAX_OPERATIONS_PER_SOCKET = 100
"""Operations one socket may have in flight at once, unless the app is given another
number (Strawberry's ``max_subscriptions_per_connection``, whose default this is)."""
FORBIDDEN = 4403
"""graphql-transport-ws's close code for a credential that does not (or no longer) hold."""
TRY_AGAIN_LATER = 1013
"""RFC 6455's close code for "try again later": clients reconnect after a while."""
TOO_MANY_INITIALISATION_REQUESTS = 4429
"""graphql-transport-ws's close code for a second ``connection_init``."""

_serving: ContextVar["SocketGuard"] = ContextVar("socket")
"""The socket whose ASGI call this is: ``on_ws_connect`` is given the context only."""


def _close_reason(text: str) -> str:
    # A close frame carries at most 123 bytes of reason.
    return text.encode()[:123].decode(errors="ignore")


def _error(message: str, extensions: dict[str, object]) -> dict[str, Any]:
    return {"message": message, "extensions": extensions}


def _unauthenticated(error: Unauthenticated) -> dict[str, Any]:
    return _error(error.reason, {"code": ErrorCode.UNAUTHENTICATED})


def _protocol_message(text: str | None, decode: Callable[[str], object]) -> dict[str, Any] | None:
    """A text frame's protocol message; None for anything else, which the guard leaves to
    Strawberry (it refuses what it cannot read in its protocol's way)."""
    if text is None:
        return None
    try:
        message = decode(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _may_end(text: str | None) -> bool:
    """Whether a message from Strawberry may end an operation. Most are events (``next``,
    ``data``), a whole result each, too many to parse again: one that ends an operation
    holds its type as a JSON string."""
    return text is not None and ('"complete"' in text or '"error"' in text)


def _text(data: dict[str, Any]) -> Message:
    return {"type": "websocket.send", "text": json.dumps(data)}


async def handshake(context: Context) -> None:
    """``on_ws_connect``: authenticates the ``connection_init`` (``ConnectionRejectionError``
    when its credential does not hold), counts it against the credential's rate limit, and
    has the socket watched from then on."""
    guard = _serving.get()
    try:
        await authenticate_connection_init(context)
        # A handshake counts against its credential's rate limit, as a request does.
        await services_of_context(context).rate_limits.check_request(context.principal)
    except RateLimited as limited:
        # Closed here with 1013, where Strawberry would close with 4403: the credential
        # is not refused, the client may try again later.
        refusal = _error(limited.message, limited.extensions)
        await guard.close(TRY_AGAIN_LATER, limited.message, refusal)
        raise ConnectionRejectionError(refusal) from None
    except ConnectionRejectionError as rejected:
        await guard.refuse(rejected.payload)
        raise
    guard.watch(context)


class SocketGuard:
    """One WebSocket: its credential while it is open, and its operations.

    ``receive`` and ``send`` stand in for the connection's own, for Strawberry's app;
    client messages are read with ``decode``, as Strawberry reads them.
    """

    def __init__(
        self,
        receive: Receive,
        send: Send,
        decode: Callable[[str], object],
        max_per_socket: int | None,
    ) -> None:
        self._receive = receive
        self._send = send
        self._decode = decode
        self._max_per_socket = max_per_socket
        self._legacy = False
        """graphql-ws, as the accepted subprotocol says; else graphql-transport-ws."""
        self._initialised = False
        self._context: Context | None = None
        """Set once the handshake is acknowledged."""
        self._operations: set[str] = set()
        self._deferred: Message | None = None
        self._closed = asyncio.Event()
        self._close_code = 1000
        self._watch: asyncio.Task[None] | None = None

    async def serve(self, app: ASGIApp, scope: Scope) -> None:
        """Runs ``app`` on the socket, through the guard."""
        serving = _serving.set(self)
        try:
            await app(scope, self.receive, self.send)
        finally:
            _serving.reset(serving)
            await self._stop()

    def open_operations(self) -> int:
        return len(self._operations)

    def watch(self, context: Context) -> None:
        """Once, when the handshake is acknowledged: the credential never changes after."""
        self._context = context
        services_of_context(context).rate_limits.join(context.principal, self)
        self._watch = asyncio.create_task(self._watch_credential())

    async def _stop(self) -> None:
        if self._watch is None:
            return
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        context = self._acknowledged()
        services_of_context(context).rate_limits.leave(context.principal, self)

    async def refuse(self, refusal: dict[str, Any]) -> None:
        """Closes a graphql-transport-ws socket whose ``connection_init`` was refused: 4403
        with the refusal's message as the reason ("The token has expired."), where
        Strawberry's close says only "Forbidden" and a browser could not learn why.
        graphql-ws sockets hear the refusal as ``connection_error`` from Strawberry."""
        if not self._legacy:
            await self.close(FORBIDDEN, str(refusal.get("message", "")), refusal)

    async def close(self, code: int, reason: str, error: dict[str, Any]) -> None:
        """Closes the socket; graphql-ws hears ``error`` first, as ``connection_error``."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._close_code = code
        if self._legacy:
            await self._transmit(_text({"type": "connection_error", "payload": error}))
        await self._transmit(
            {"type": "websocket.close", "code": code, "reason": _close_reason(reason)}
        )

    async def _transmit(self, message: Message) -> None:
        """Sends a message of the guard's own."""
        try:
            await self._send(message)
        except (OSError, RuntimeError):
            # The client went away meanwhile: ASGI servers raise OSError for a send on a
            # closed connection, uvicorn RuntimeError once it has seen it close.
            self._closed.set()

    def _disconnect(self) -> Message:
        return {"type": "websocket.disconnect", "code": self._close_code}

    # --- From the client ------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            message = self._deferred
            self._deferred = None
            if message is None:
                message = await self._next()
            passed = await self._from_client(message)
            if passed is not None:
                return passed

    async def _next(self) -> Message:
        """The client's next message; a disconnect once the guard has closed the socket,
        also while waiting for one."""
        if self._closed.is_set():
            return self._disconnect()
        receiving = asyncio.ensure_future(self._receive())
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait((receiving, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not receiving.done():
                receiving.cancel()
        if self._closed.is_set():
            return self._disconnect()
        return receiving.result()

    async def _from_client(self, message: Message) -> Message | None:
        """The message to pass on to Strawberry, or None where the guard answered it."""
        if message["type"] == "websocket.disconnect":
            self._closed.set()
            return message
        text = message.get("text") if message["type"] == "websocket.receive" else None
        request = _protocol_message(text, self._decode)
        if request is None:
            return message
        kind, operation = request.get("type"), request.get("id")
        if kind == "connection_init":
            if self._initialised:
                reason = "Too many initialisation requests"
                refusal = _error(
                    f"{reason}: the socket keeps the credential it was acknowledged with.",
                    {"code": ErrorCode.TOO_MANY_INITIALISATION_REQUESTS},
                )
                await self.close(TOO_MANY_INITIALISATION_REQUESTS, reason, refusal)
                return self._disconnect()
            self._initialised = True
        elif kind in ("subscribe", "start") and isinstance(operation, str):
            if self._context is not None:  # else Strawberry closes it 4401, unacknowledged
                return await self._start(message, operation)
        elif kind in ("complete", "stop") and isinstance(operation, str):
            self._operations.discard(operation)
        return message

    async def _start(self, message: Message, operation: str) -> Message | None:
        if operation in self._operations:
            if not self._legacy:
                return message  # Strawberry closes the socket 4409: the id is in use
            # graphql-ws restarts an operation under an id in use. It is stopped first, as
            # Strawberry would stop it, so that its end is not taken for the new one's.
            self._operations.discard(operation)
            self._deferred = message
            return {
                "type": "websocket.receive",
                "text": json.dumps({"type": "stop", "id": operation}),
            }
        try:
            refusal = await self._refusal()
        except Unauthenticated as error:
            await self.close(FORBIDDEN, error.reason, _unauthenticated(error))
            return self._disconnect()
        if refusal is not None:
            payload = refusal if self._legacy else [refusal]
            await self._transmit(_text({"id": operation, "type": "error", "payload": payload}))
            return None
        self._operations.add(operation)
        # Strawberry creates the operation's task as it takes this message, in this context.
        OUTLET.set(self._outlet(operation))
        return message

    def _outlet(self, operation: str) -> Outlet:
        """Sends a shared subscription's results for the operation (graph/sharing.py) as
        Strawberry would, skipping the hops from its handler to the guard, none of which
        does anything to a result's message but pass it on."""
        # The keys in the order of Strawberry's messages: graphql-ws, graphql-transport-ws.
        legacy, modern = {"type": "data", "id": operation}, {"id": operation, "type": "next"}
        message = next_messages(legacy if self._legacy else modern)

        async def send(result: ExecutionResult) -> None:
            if not self._closed.is_set():  # as for Strawberry's messages
                await self._transmit({"type": "websocket.send", "text": message(result)})

        return send

    async def _refusal(self) -> dict[str, Any] | None:
        """Why one more operation may not start, as a GraphQL error; None when it may.
        ``Unauthenticated`` when the credential no longer holds."""
        context = self._acknowledged()
        await self._recheck(context)
        limits = services_of_context(context).rate_limits
        try:
            await limits.check_request(context.principal)
        except RateLimited as limited:
            return _error(limited.message, limited.extensions)
        if self._max_per_socket is not None and len(self._operations) >= self._max_per_socket:
            return _error(
                f"At most {self._max_per_socket} operations may run at once on one socket.",
                {"code": ErrorCode.TOO_MANY_SUBSCRIPTIONS, "limit": self._max_per_socket},
            )
        if limits.open_operations(context.principal) >= limits.max_socket_operations:
            return _error(
                f"At most {limits.max_socket_operations} operations may run at once for "
                "one credential, across its sockets.",
                {"code": ErrorCode.TOO_MANY_SUBSCRIPTIONS, "limit": limits.max_socket_operations},
            )
        return None

    # --- From Strawberry --------------------------------------------------------------

    async def send(self, message: Message) -> None:
        if self._closed.is_set():
            return  # Strawberry hears of the close from receive, and ends its operations
        if message["type"] == "websocket.accept":
            self._legacy = message.get("subprotocol") == GRAPHQL_WS_PROTOCOL
        elif message["type"] == "websocket.close":
            self._closed.set()
        elif message["type"] == "websocket.send" and _may_end(message.get("text")):
            answer = _protocol_message(message.get("text"), json.loads)
            if answer is not None and answer.get("type") in ("complete", "error"):
                self._operations.discard(answer.get("id"))
        await self._send(message)

    # --- The credential ---------------------------------------------------------------

    def _acknowledged(self) -> Context:
        if self._context is None:
            raise RuntimeError("the socket has not been acknowledged")
        return self._context

    async def _recheck(self, context: Context) -> None:
        """Raises ``Unauthenticated`` once the credential no longer holds."""
        authenticator = services_of_context(context).authenticator
        await recheck(authenticator, context.authorization, local=context.local)

    async def _watch_credential(self) -> None:
        context = self._acknowledged()
        services = services_of_context(context)
        error = await lapse(
            services.authenticator,
            context.authorization,
            local=context.local,
            interval_s=services.settings.ws_recheck_s,
        )
        log.info("WebSocket closed: %s", error.reason)
        await self.close(FORBIDDEN, error.reason, _unauthenticated(error))

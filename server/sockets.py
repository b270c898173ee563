"""WebSockets that keep to their credential, for both protocols Strawberry speaks.

A socket is authenticated once, at ``connection_init``, but may stay open for days. So:

- its credential is checked again: an API token every ``WS_RECHECK_S`` (it may be
  revoked or expire), a JWT when its ``exp`` (plus the leeway) passes, and either before
  every new operation. One that no longer holds closes the socket: graphql-transport-ws
  closes 4403; graphql-ws answers ``connection_error``, then closes 4403.
- its ``connection_init`` and every operation it starts count against the credential's
  rate limit, as HTTP requests do; over it, the handshake closes 1013 (try again later)
  and an operation gets an error coded ``RATE_LIMITED`` while the socket stays open.
- operations in flight are capped per socket (``TOO_MANY_SUBSCRIPTIONS``, Strawberry's
  ``max_subscriptions_per_connection``) and per credential across this replica's sockets
  (``MAX_SUBSCRIPTIONS_PER_CREDENTIAL``).
- a socket keeps the credential it was acknowledged with: a second ``connection_init``
  closes it 4429, as graphql-transport-ws prescribes (graphql-ws answers
  ``connection_error`` first), since its count and its checks belong to the first one.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema.base import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyConnectionInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import StartMessage
from strawberry.types.graphql import OperationType

from graph.context import Context
from resolvers.auth import Unauthenticated
from server.auth import UNAUTHENTICATED
from server.ratelimit import RateLimited, Socket
from server.services import services_of_context

log = logging.getLogger(__name__)

TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
FORBIDDEN = 4403
"""graphql-transport-ws's close code for a credential that does not (or no longer) hold."""
TRY_AGAIN_LATER = 1013
"""RFC 6455's close code for "try again later": clients reconnect after a while."""
TOO_MANY_INITIALISATION_REQUESTS = 4429
"""graphql-transport-ws's close code for a second ``connection_init``."""


def _close_reason(text: str) -> str:
    # A close frame carries at most 123 bytes of reason.
    return text.encode()[:123].decode(errors="ignore")


def _error(message: str, extensions: dict[str, object]) -> dict[str, Any]:
    return {"message": message, "extensions": extensions}


def _unauthenticated(error: Unauthenticated) -> dict[str, Any]:
    return _error(error.reason, {"code": UNAUTHENTICATED})


class _Guard:
    """One socket's credential, watched while the socket is open, and its operations."""

    def __init__(
        self,
        context: Context,
        socket: Socket,
        max_per_socket: int | None,
        close: Callable[[Unauthenticated], Awaitable[None]],
    ) -> None:
        self._context = context
        self._socket = socket
        self._max_per_socket = max_per_socket
        self._close = close
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Once, when the socket is acknowledged (its credential never changes after)."""
        services_of_context(self._context).rate_limits.join(self._context.principal, self._socket)
        self._watch = asyncio.create_task(self._watch_credential())

    async def stop(self) -> None:
        if self._watch is None:
            return
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        services_of_context(self._context).rate_limits.leave(self._context.principal, self._socket)

    async def _recheck(self) -> None:
        """Raises ``Unauthenticated`` once the credential no longer holds."""
        try:
            await services_of_context(self._context).authenticator.recheck(
                self._context.authorization, local=self._context.local
            )
        except Unauthenticated:
            raise
        except Exception as error:
            # The token store unreachable says nothing about the token, which held at its
            # last check: the socket and its operations go on, and it is asked again at
            # the next check, rather than the error closing the socket with a traceback.
            log.warning("re-checking a WebSocket's token failed: %s", type(error).__name__)

    async def _watch_credential(self) -> None:
        authenticator = services_of_context(self._context).authenticator
        interval = services_of_context(self._context).settings.ws_recheck_s
        while True:
            delay = interval
            seconds_left = authenticator.seconds_left(self._context.authorization)
            if seconds_left is not None:
                delay = min(delay, seconds_left)
            await asyncio.sleep(delay)
            try:
                await self._recheck()
            except Unauthenticated as error:
                log.info("WebSocket closed: %s", error.reason)
                # The client may be closing it at this very moment, and then may not hear.
                with contextlib.suppress(RuntimeError, WebSocketDisconnected):
                    await self._close(error)
                return

    async def admit(self, open_here: int) -> dict[str, Any] | None:
        """Why one more operation may not start, as a GraphQL error; None when it may.
        ``Unauthenticated`` when the credential no longer holds."""
        await self._recheck()
        limits = services_of_context(self._context).rate_limits
        principal = self._context.principal
        try:
            await limits.check_request(principal)
        except RateLimited as limited:
            return _error(limited.message, limited.extensions)
        if self._max_per_socket is not None and open_here >= self._max_per_socket:
            return _error(
                f"At most {self._max_per_socket} operations may run at once on one socket.",
                {"code": TOO_MANY_SUBSCRIPTIONS, "limit": self._max_per_socket},
            )
        if limits.open_operations(principal) >= limits.max_socket_operations:
            return _error(
                f"At most {limits.max_socket_operations} operations may run at once for "
                "one credential, across its sockets.",
                {"code": TOO_MANY_SUBSCRIPTIONS, "limit": limits.max_socket_operations},
            )
        return None


class TransportHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, its credential watched and its operations counted."""

    def __init__(self, *, max_subscriptions_per_connection: int | None, **options: Any) -> None:
        # The per-socket cap is ours to apply, so that its error carries a code.
        super().__init__(max_subscriptions_per_connection=None, **options)
        self.guard = _Guard(self.context, self, max_subscriptions_per_connection, self._forbid)

    def open_operations(self) -> int:
        return len(self.operations)

    async def _forbid(self, error: Unauthenticated) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        await self.websocket.close(code=FORBIDDEN, reason=_close_reason(error.reason))

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        repeated = self.connection_init_received  # then Strawberry closes the socket 4429
        try:
            await super().handle_connection_init(message)
        except RateLimited as limited:
            await self.websocket.close(code=TRY_AGAIN_LATER, reason=_close_reason(limited.message))
            return
        if self.connection_acknowledged and not repeated:
            self.guard.start()

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged and message["id"] not in self.operations:
            try:
                refusal = await self.guard.admit(len(self.operations))
            except Unauthenticated as error:
                await self._forbid(error)
                return
            if refusal is not None:
                await self.send_message(
                    {"id": message["id"], "type": "error", "payload": [refusal]}
                )
                return
        await super().handle_subscribe(message)

    async def shutdown(self) -> None:
        await self.guard.stop()
        await super().shutdown()


class _AnyOperation:
    """The schema as the legacy graphql-ws handler sees it: able to run every operation.

    Strawberry runs only subscriptions over graphql-ws; the protocol (and clients that
    still speak it) send queries and mutations too, as over graphql-transport-ws.
    """

    def __init__(self, schema: BaseSchema) -> None:
        self._schema = schema

    def __getattr__(self, name: str) -> Any:
        return getattr(self._schema, name)

    async def subscribe(self, query: str | None, **options: Any) -> Any:
        return await self._schema.stream(
            query, allowed_operation_types=tuple(OperationType), **options
        )


class LegacyHandler(BaseGraphQLWSHandler[Context, None]):
    """graphql-ws, for every operation, its credential watched and its operations counted."""

    def __init__(
        self, *, schema: BaseSchema, max_subscriptions_per_connection: int | None, **options: Any
    ) -> None:
        super().__init__(
            schema=_AnyOperation(schema),  # type: ignore[arg-type]
            max_subscriptions_per_connection=None,
            **options,
        )
        self.guard = _Guard(self.context, self, max_subscriptions_per_connection, self._forbid)

    def open_operations(self) -> int:
        return len(self.tasks)

    async def _forbid(self, error: Unauthenticated) -> None:
        for operation_id in list(self.tasks):
            await self.cleanup_operation(operation_id)
        await self.send_message({"type": "connection_error", "payload": _unauthenticated(error)})
        await self.websocket.close(code=FORBIDDEN, reason=_close_reason(error.reason))

    async def handle_connection_init(self, message: LegacyConnectionInitMessage) -> None:
        if self.connection_acknowledged:
            reason = "Too many initialisation requests"
            refusal = _error(
                f"{reason}: the socket keeps the credential it was acknowledged with.",
                {"code": "TOO_MANY_INITIALISATION_REQUESTS"},
            )
            await self.send_message({"type": "connection_error", "payload": refusal})
            await self.websocket.close(code=TOO_MANY_INITIALISATION_REQUESTS, reason=reason)
            return
        try:
            await super().handle_connection_init(message)
        except RateLimited as limited:
            refusal = _error(limited.message, limited.extensions)
            await self.send_message({"type": "connection_error", "payload": refusal})
            await self.websocket.close(code=TRY_AGAIN_LATER, reason=_close_reason(limited.message))
            return
        if self.connection_acknowledged:
            self.guard.start()

    async def handle_start(self, message: StartMessage) -> None:
        if self.connection_acknowledged:
            try:
                refusal = await self.guard.admit(len(self.tasks))
            except Unauthenticated as error:
                await self._forbid(error)
                return
            if refusal is not None:
                await self.send_message({"type": "error", "id": message["id"], "payload": refusal})
                return
        await super().handle_start(message)

    async def cleanup(self) -> None:
        await self.guard.stop()
        await super().cleanup()

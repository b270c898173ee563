"""Subscriptions over HTTP, held to the rules a WebSocket's operations keep.

Apollo's multipart subscriptions and GraphQL over SSE (server/sse.py) answer an operation
with a response that streams for as long as the operation runs. The request was
authenticated and counted against its credential's rate limit at the edge, as every
request is; around the stream, as around a socket (server/sockets.py):

- its credential is checked again (server/credentials.py); when it no longer holds, the
  stream ends with an ``UNAUTHENTICATED`` error, as the client's last message.
- its operations count among the credential's operations in flight on this replica, with
  its sockets' (``MAX_SUBSCRIPTIONS_PER_CREDENTIAL``); one more is refused with 429
  ``TOO_MANY_SUBSCRIPTIONS``.
- at shutdown (``drain``) every stream ends without its closing message, as a WebSocket
  closes with 1012: clients take it for a dropped connection, connect again (to another
  replica) and resume with ``after``. uvicorn would otherwise wait for them for ever.
"""

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Protocol

from starlette.requests import HTTPConnection
from starlette.responses import Response

from models.errors import ErrorCode
from models.principal import Principal
from resolvers.auth import Authenticator, Unauthenticated
from server.credentials import lapse
from server.development import is_local
from server.ratelimit import RateLimits
from server.responses import error_response

LastWords = Callable[[Unauthenticated], str]
"""What a stream sends before it ends because its credential no longer holds."""


class Operations(Protocol):
    def open_operations(self) -> int: ...


class _Single:
    """A stream that carries one operation."""

    def open_operations(self) -> int:
        return 1


def unauthenticated(error: Unauthenticated) -> dict[str, object]:
    """The GraphQL error a stream ends with when its credential lapses."""
    return {"message": error.reason, "extensions": {"code": ErrorCode.UNAUTHENTICATED}}


async def _advance(chunks: AsyncIterator[str]) -> str | None:
    """The next chunk; None at the end (a task cannot carry StopAsyncIteration)."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None


class HttpStreams:
    """This process's open HTTP streams. Made in the event loop that serves them."""

    def __init__(
        self, authenticator: Authenticator, rate_limits: RateLimits, recheck_s: float
    ) -> None:
        self._authenticator = authenticator
        self._rate_limits = rate_limits
        self._recheck_s = recheck_s
        self._loop = asyncio.get_running_loop()
        self._draining = asyncio.Event()

    def drain(self) -> None:
        """Ends every stream, now and from now on. Safe from a signal handler or another
        thread."""
        self._loop.call_soon_threadsafe(self._draining.set)

    def refusal(self, principal: Principal) -> Response | None:
        """429 when the credential may not start one more operation; None when it may."""
        limit = self._rate_limits.max_socket_operations
        if self._rate_limits.open_operations(principal) < limit:
            return None
        return error_response(
            429,
            f"At most {limit} operations may run at once for one credential, across its "
            "sockets and streams.",
            ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            limit=limit,
        )

    def hold(
        self,
        chunks: AsyncIterator[str],
        request: HTTPConnection,
        principal: Principal,
        last_words: LastWords,
        operations: Operations | None = None,
    ) -> AsyncGenerator[str, None]:
        """``chunks`` as the response streams them, for the caller who made ``request``;
        ``operations`` says how many the stream carries (one, unless said)."""
        return self._held(
            chunks,
            request.headers.get("authorization"),
            is_local(request),
            principal,
            last_words,
            operations or _Single(),
        )

    async def _held(
        self,
        chunks: AsyncIterator[str],
        authorization: str | None,
        local: bool,
        principal: Principal,
        last_words: LastWords,
        operations: Operations,
    ) -> AsyncGenerator[str, None]:
        # Counted from the first chunk on: a response that never starts streaming never
        # runs the generator's cleanup either.
        self._rate_limits.join(principal, operations)
        lapsed = asyncio.ensure_future(
            lapse(self._authenticator, authorization, local=local, interval_s=self._recheck_s)
        )
        draining = asyncio.ensure_future(self._draining.wait())
        chunk: asyncio.Future[str | None] | None = None
        try:
            while True:
                chunk = asyncio.ensure_future(_advance(chunks))
                await asyncio.wait((chunk, lapsed, draining), return_when=asyncio.FIRST_COMPLETED)
                if not chunk.done():
                    if lapsed.done():
                        yield last_words(lapsed.result())
                    return
                if (text := chunk.result()) is None:
                    return
                yield text
        finally:
            # Also when the client went away (the response's task is cancelled): the
            # chunk being read is given up before the stream is closed under it.
            for task in (chunk, lapsed, draining):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
            self._rate_limits.leave(principal, operations)

"""Limits that count callers: 429 RATE_LIMITED with Retry-After, or its WebSocket forms.

Requests to the API paths count by the caller's credential (``principal.subject``, which
authentication puts on the request's state before this runs) or, without one, by client
address. A WebSocket's upgrade is not counted: its ``connection_init`` and every operation
on it count by credential, so many sockets behind one proxy address can connect. Refused
credentials count by client address, and beyond their limit an address's credentials are
not even checked; an address's credentials are checked ``CHECKS_PER_ADDRESS`` at a time,
so that a burst of them, all arriving before any is counted, passes the limit by fewer
than that (per replica). Counts live in this process (``memory://``) or in Redis, where every
replica shares them; a moving window allows no burst of twice the limit across a
window's edge. Operations in flight on WebSockets are counted here, per credential, in
this process.
"""

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from models.errors import ErrorCode
from models.principal import Principal
from resolvers.auth import Unauthenticated
from resolvers.metrics import RATE_LIMITED
from server.development import client_address
from server.responses import error_response, route_path

CHECKS_PER_ADDRESS = 4
"""Credentials of one client address checked at once; more wait their turn. Few, so that
a burst of refused ones cannot pass the address's limit by many; not one, so that many
callers behind one proxy are not checked one by one."""
log = logging.getLogger(__name__)


class RateLimited(Exception):
    """Over a limit; the message is safe to show and says when to retry."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    @property
    def extensions(self) -> dict[str, object]:
        return {"code": ErrorCode.RATE_LIMITED, "retryAfter": self.retry_after}


def too_many_requests(limited: RateLimited) -> Response:
    """The one HTTP answer to any limit: 429, with ``Retry-After`` in the header and in
    the error's extensions."""
    return error_response(
        429,
        limited.message,
        ErrorCode.RATE_LIMITED,
        headers={"Retry-After": str(limited.retry_after)},
        retryAfter=limited.retry_after,
    )


class Socket(Protocol):
    def open_operations(self) -> int: ...


def _storage(url: str) -> Storage:
    """memory:// or redis(s)://... (Settings accepts nothing else)."""
    if url == "memory://":
        return MemoryStorage()
    return RedisStorage(f"async+{url}", implementation="redispy", key_prefix="provgraph")


def caller_key(scope: Scope) -> str:
    principal = scope.get("state", {}).get("principal")
    if principal is not None:
        return subject_key(principal)
    return f"address:{client_address(HTTPConnection(scope))}"


def subject_key(principal: Principal) -> str:
    return f"subject:{principal.subject}"


@dataclass
class _Checks:
    """The credentials of one address being checked, and those waiting to be."""

    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CHECKS_PER_ADDRESS))
    users: int = 0


class RateLimits:
    """Every replica-wide count of callers, and this process's sockets per credential."""

    def __init__(
        self,
        *,
        rate_limit: str,
        auth_failure_limit: str,
        storage_url: str,
        max_socket_operations: int,
    ) -> None:
        self.requests: RateLimitItem | None = parse(rate_limit) if rate_limit else None
        self.failures: RateLimitItem | None = (
            parse(auth_failure_limit) if auth_failure_limit else None
        )
        self.max_socket_operations = max_socket_operations
        self._storage_url = storage_url
        self._limiter: MovingWindowRateLimiter | None = None
        self._store_failing = False
        self._sockets: defaultdict[str, set[Socket]] = defaultdict(set)
        self._checks: dict[str, _Checks] = {}

    def _strategy(self) -> MovingWindowRateLimiter:
        if self._limiter is None:  # made in the event loop: the memory store needs one
            self._limiter = MovingWindowRateLimiter(_storage(self._storage_url))
        return self._limiter

    async def _retry_after(self, item: RateLimitItem, key: str, *, hit: bool) -> int | None:
        """None when one more is allowed (counted if ``hit``); else the seconds until it is."""
        limiter = self._strategy()
        try:
            allowed = await (limiter.hit(item, key) if hit else limiter.test(item, key))
            self._store_failing = False
            if allowed:
                return None
            stats = await limiter.get_window_stats(item, key)
        except Exception as error:
            # A store outage must not take the API down with it: let requests through.
            if not self._store_failing:
                log.warning("rate-limit store unreachable, not limiting: %s", type(error).__name__)
            self._store_failing = True
            return None
        RATE_LIMITED.inc()
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def _enforce(self, item: RateLimitItem, key: str, *, hit: bool, what: str) -> None:
        """Raises ``RateLimited`` when ``key`` is past ``item`` (counting one more if
        ``hit``); ``what`` names what the limit counts, for the message."""
        retry_after = await self._retry_after(item, key, hit=hit)
        if retry_after is not None:
            raise RateLimited(
                f"Too many {what}: at most {item}. Retry in {retry_after} s.", retry_after
            )

    async def count_request(self, key: str) -> None:
        """Counts one request (or WebSocket message that starts work) of ``key`` (a
        ``caller_key``), raising ``RateLimited`` when it may not go ahead."""
        if self.requests is not None:
            await self._enforce(self.requests, key, hit=True, what="requests for each caller")

    async def check_request(self, principal: Principal) -> None:
        """``count_request`` for a credential."""
        await self.count_request(subject_key(principal))

    @asynccontextmanager
    async def _checking(self, address: str) -> AsyncIterator[None]:
        """One of the few checks of ``address``'s credentials that may run at once."""
        checks = self._checks.get(address)
        if checks is None:
            checks = self._checks[address] = _Checks()
        checks.users += 1
        try:
            async with checks.slots:
                yield
        finally:
            checks.users -= 1
            if not checks.users:
                del self._checks[address]

    async def authenticate(
        self, address: str, authenticate: Callable[[], Awaitable[Principal]]
    ) -> Principal:
        """The caller ``authenticate`` names, unless ``address`` has had too many
        credentials refused: then ``RateLimited``, and no credential is checked."""
        if self.failures is None:
            return await authenticate()
        key = f"auth-failures:{address}"
        # The count is read before a check and written after it: unchecked, a burst
        # would all read it before any refusal is written, and all be checked.
        async with self._checking(address):
            await self._enforce(
                self.failures, key, hit=False, what="refused credentials from this address"
            )
            try:
                return await authenticate()
            except Unauthenticated as error:
                # Only verdicts on presented credentials: guessing them is what this
                # limit slows down.
                if error.presented and error.counts_as_failure:
                    await self._retry_after(self.failures, key, hit=True)
                raise

    def join(self, principal: Principal, socket: Socket) -> None:
        self._sockets[principal.subject].add(socket)

    def leave(self, principal: Principal, socket: Socket) -> None:
        sockets = self._sockets.get(principal.subject)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._sockets[principal.subject]

    def open_operations(self, principal: Principal) -> int:
        """Operations in flight on this credential's sockets, in this process."""
        return sum(socket.open_operations() for socket in self._sockets.get(principal.subject, ()))


class RateLimit:
    """The per-credential limit on HTTP requests to ``paths``."""

    def __init__(self, app: ASGIApp, limits: RateLimits, paths: tuple[str, ...]) -> None:
        self.app = app
        self.limits = limits
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.limits.requests is None
            or scope["type"] != "http"
            or not route_path(scope).startswith(self.paths)
        ):
            await self.app(scope, receive, send)
            return
        try:
            await self.limits.count_request(caller_key(scope))
        except RateLimited as limited:
            await too_many_requests(limited)(scope, receive, send)
            return
        await self.app(scope, receive, send)

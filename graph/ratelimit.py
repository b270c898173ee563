"""Per-credential rate limit on the API paths: 429 RATE_LIMITED with Retry-After.

Requests count by the caller's credential (``principal.subject``, which authentication
puts on the request's state before this runs) or, without one, by client address. Counts
live in this process (``memory://``) or in Redis, where every replica shares them. A
moving window: no burst of twice the limit across a window's edge.
"""

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Receive, Scope, Send

from graph.middleware import route_path, send_error
from resolvers.metrics import RATE_LIMITED

RATE_LIMITED_CODE = "RATE_LIMITED"
log = logging.getLogger(__name__)


def _storage(url: str) -> Storage:
    """memory:// or redis(s)://... (Settings accepts nothing else)."""
    if url == "memory://":
        return storage_from_string("async+memory://")
    return storage_from_string(f"async+{url}", implementation="redispy", key_prefix="provgraph")


def caller_key(scope: Scope) -> str:
    principal = scope.get("state", {}).get("principal")
    if principal is not None:
        return f"subject:{principal.subject}"
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


class RateLimit:
    def __init__(self, app: ASGIApp, limit: str, storage_url: str, paths: tuple[str, ...]) -> None:
        self.app = app
        self.item: RateLimitItem | None = parse(limit) if limit else None
        self.paths = paths
        self._storage_url = storage_url
        self._limiter: MovingWindowRateLimiter | None = None
        self._store_failing = False

    async def _retry_after(self, key: str) -> int | None:
        """None when the request may go ahead; else the seconds until it may."""
        assert self.item is not None
        if self._limiter is None:  # made in the event loop: the memory store needs one
            self._limiter = MovingWindowRateLimiter(_storage(self._storage_url))
        try:
            if await self._limiter.hit(self.item, key):
                self._store_failing = False
                return None
            stats = await self._limiter.get_window_stats(self.item, key)
        except Exception as error:
            # A store outage must not take the API down with it: let requests through.
            if not self._store_failing:
                log.warning("rate-limit store unreachable, not limiting: %s", type(error).__name__)
            self._store_failing = True
            return None
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.item is None
            or scope["type"] not in ("http", "websocket")
            or not route_path(scope).startswith(self.paths)
        ):
            await self.app(scope, receive, send)
            return
        retry_after = await self._retry_after(caller_key(scope))
        if retry_after is None:
            await self.app(scope, receive, send)
            return
        RATE_LIMITED.inc()
        if scope["type"] == "websocket":
            await receive()  # the connect message, before refusing the handshake (HTTP 403)
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_error(
            send,
            429,
            f"Too many requests: at most {self.item} for each caller. Retry in {retry_after} s.",
            RATE_LIMITED_CODE,
            headers=[(b"retry-after", str(retry_after).encode())],
        )

"""The identity provider's signing keys (its JWKS), fetched without ever stalling a caller
who does not need them.

- One fetch at a time: concurrent callers that need keys wait for the same fetch.
- A floor between fetches: tokens naming a ``kid`` the provider never published cannot
  make the service ask again and again; within the floor they are refused at once.
- A timeout on each fetch, and an asynchronous client: the fetch takes no thread of the
  default pool, which the SOAP reply parsing shares (a slow provider once held every
  such thread and an API-token user's history read waited 13.8 s for one).
- Keys older than ``max_age_s`` are refreshed behind the callers' backs: callers whose
  key is known go on with it while the provider is asked.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from jwt import PyJWK, PyJWKSet

log = logging.getLogger(__name__)


class KeysUnavailable(Exception):
    """The provider's keys could not be fetched, and none are known."""


class JwksKeys:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        refetch_floor_s: float,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if httpx.URL(url).scheme not in ("http", "https"):
            raise ValueError(f"AUTH_JWT_JWKS_URL must be an http(s) URL, not {url!r}.")
        self._url = url
        self._timeout_s = timeout_s
        self._floor_s = refetch_floor_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at: float | None = None
        """When the last fetch started, successful or not: the floor counts from there."""
        self._loaded_at: float | None = None
        self._fetching: asyncio.Task[None] | None = None

    async def key(self, kid: str | None) -> PyJWK | None:
        """The signing key named ``kid``, or None when the provider has none by that name.

        Raises ``KeysUnavailable`` when no keys could be had at all.
        """
        now = self._clock()
        stale = self._loaded_at is not None and now - self._loaded_at >= self._max_age_s
        if kid in self._keys:
            if stale:
                self._start_fetch(now)  # in the background: this caller goes on
            return self._keys[kid]
        self._start_fetch(now)
        fetching = self._fetching
        if fetching is not None:
            # Shielded: one caller giving up (its request's deadline) must not cancel the
            # fetch the others wait for.
            await asyncio.shield(fetching)
        if self._loaded_at is None:
            raise KeysUnavailable
        return self._keys.get(kid)

    def _start_fetch(self, now: float) -> None:
        """A fetch, unless one is under way or the last one started within the floor:
        neither unknown key ids nor a provider that keeps failing may set off a storm."""
        if self._fetching is not None:
            return
        if self._fetched_at is not None and now - self._fetched_at < self._floor_s:
            return
        self._fetched_at = now
        self._fetching = asyncio.create_task(self._fetch())

    async def _fetch(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s) as client:
                response = await client.get(self._url, headers={"accept": "application/json"})
                response.raise_for_status()
                document: Any = response.json()
            self._keys = _signing_keys(document)
            self._loaded_at = self._clock()
        except (httpx.HTTPError, ValueError, TypeError, jwt.PyJWKError, jwt.PyJWKSetError) as exc:
            # Keys already known stay in use: an outage of the provider must not sign
            # everybody out.
            log.warning("the identity provider's keys could not be fetched: %s", exc)
        finally:
            self._fetching = None

    async def aclose(self) -> None:
        fetching = self._fetching
        if fetching is not None:
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetching


def _signing_keys(document: Any) -> dict[str | None, PyJWK]:
    if not isinstance(document, dict):
        raise ValueError("the JWKS document is not a JSON object")
    keys = PyJWKSet.from_dict(document).keys
    return {key.key_id: key for key in keys if key.public_key_use in ("sig", None)}

"""Who is calling: a bearer credential in, a principal out, or ``Unauthenticated``.

Two kinds of credential are accepted: API tokens this service issued (``pgr_...``, see
``resolvers.tokens``) and JWTs from an identity provider (``resolvers.identity``). A third
serves local development only: the development token of ``make serve``, which lives in
this process's memory alone.
"""

import hmac
import secrets
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol

import jwt

from models.principal import LOCAL_DEVELOPER, SCOPES, Principal
from models.tokens import TOKEN_PREFIX

DEVELOPER = Principal(
    subject="development-token",
    organizations=frozenset(),
    scopes=frozenset(SCOPES),
    all_organizations=True,
)
"""Whoever presents the development token: every scope, every organization."""


class Unauthenticated(Exception):
    """No usable credential. The reason is safe to show: it never holds the credential."""

    def __init__(
        self, reason: str, *, presented: bool = True, counts_as_failure: bool = True
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.presented = presented
        """Whether a credential was sent at all (RFC 6750 answers the two differently)."""
        self.counts_as_failure = counts_as_failure
        """Whether this is a verdict on the credential itself (invalid, unknown, revoked,
        expired), which counts against the address's limit of refused credentials. Not
        when the credential could not be checked at all (the identity provider's keys
        unavailable): an outage must not lock out every address that uses it."""


class Verifier(Protocol):
    async def verify(self, credential: str) -> Principal: ...


def bearer_credential(authorization: str | None) -> str:
    """The credential of an ``Authorization: Bearer <credential>`` value."""
    if not authorization or not authorization.strip():
        raise Unauthenticated(
            "Authentication required: send Authorization: Bearer <token>.", presented=False
        )
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthenticated("The Authorization header must be 'Bearer <token>'.")
    return credential.strip()


class Authenticator:
    def __init__(
        self,
        tokens: Verifier,
        jwts: Verifier | None = None,
        *,
        disabled: bool = False,
        development: bool = False,
        jwt_leeway_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tokens = tokens
        self._jwts = jwts
        self._jwt_leeway_s = jwt_leeway_s
        self._clock = clock
        """Epoch seconds, against which an accepted JWT's expiry is held (tests set it)."""
        self.disabled = disabled
        """Set only where the bind is loopback: every local caller is then
        ``LOCAL_DEVELOPER``."""
        self.development_token = TOKEN_PREFIX + secrets.token_urlsafe(32) if development else None
        """Made at start and kept nowhere else: no other process, replica or later start
        of this one accepts it, and it is good for local requests only."""

    async def authenticate(self, authorization: str | None, *, local: bool) -> Principal:
        """The caller ``authorization`` names. ``local``: the request was made on this
        host directly (``server.development.is_local``), which switched-off authentication
        and the development token require."""
        if self.disabled:
            if not local:
                raise Unauthenticated(
                    "Authentication is off here for requests made on this host only "
                    "(a loopback Host, no proxy, no page of another origin)."
                )
            return LOCAL_DEVELOPER
        credential = bearer_credential(authorization)
        if self.development_token is not None and hmac.compare_digest(
            credential.encode(), self.development_token.encode()
        ):
            if not local:
                raise Unauthenticated(
                    "The development token works for requests made on this host only "
                    "(a loopback Host, no proxy, no page of another origin)."
                )
            return DEVELOPER
        if credential.startswith(TOKEN_PREFIX):
            return await self._tokens.verify(credential)
        if self._jwts is not None and credential.count(".") == 2:
            return await self._jwts.verify(credential)
        raise Unauthenticated("The token is not valid.")

    def _expires_at(self, authorization: str | None) -> float | None:
        """When a JWT ``authenticate`` accepted stops being accepted: its ``exp`` plus the
        leeway for clock skew (epoch seconds). None for anything else."""
        if self.disabled or self._jwts is None:
            return None
        credential = bearer_credential(authorization)
        if credential.startswith(TOKEN_PREFIX):
            return None
        expiry = _expiry(credential)
        return None if expiry is None else expiry + self._jwt_leeway_s

    def seconds_left(self, authorization: str | None) -> float | None:
        """How long a JWT ``authenticate`` accepted is accepted still (0 once expired);
        None for anything else."""
        expires_at = self._expires_at(authorization)
        return None if expires_at is None else max(0.0, expires_at - self._clock())

    async def recheck(self, authorization: str | None, *, local: bool) -> None:
        """Raises ``Unauthenticated`` once a credential ``authenticate`` accepted no longer
        is: an API token revoked or expired since, a JWT past its expiry."""
        if self.disabled:
            return
        if bearer_credential(authorization).startswith(TOKEN_PREFIX):
            await self.authenticate(authorization, local=local)
            return
        if self.seconds_left(authorization) == 0:
            raise Unauthenticated("The token has expired.")


@lru_cache(maxsize=4096)
def _expiry(credential: str) -> float | None:
    """A JWT's ``exp``, remembered: a thousand sockets of one service re-check theirs
    together, and decoding one is PyJWT's careful base64 every time. Its signature was
    checked when it was accepted; only its lifetime is read."""
    try:
        expiry = jwt.decode(credential, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(expiry) if isinstance(expiry, int | float) else None

"""Who is calling: a bearer credential in, a principal out, or ``Unauthenticated``.

Two kinds of credential are accepted: API tokens this service issued (``pgr_...``, see
``resolvers.tokens``) and JWTs from an identity provider (``resolvers.identity``).
"""

from typing import Protocol

from models.principal import LOCAL_DEVELOPER, Principal
from models.tokens import TOKEN_PREFIX


class Unauthenticated(Exception):
    """No usable credential. The reason is safe to show: it never holds the credential."""

    def __init__(self, reason: str, *, presented: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.presented = presented
        """Whether a credential was sent at all (RFC 6750 answers the two differently)."""


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
        self, tokens: Verifier, jwts: Verifier | None = None, *, disabled: bool = False
    ) -> None:
        self._tokens = tokens
        self._jwts = jwts
        self.disabled = disabled
        """Set only where the bind is loopback: every caller is then ``LOCAL_DEVELOPER``."""

    async def authenticate(self, authorization: str | None) -> Principal:
        if self.disabled:
            return LOCAL_DEVELOPER
        credential = bearer_credential(authorization)
        if credential.startswith(TOKEN_PREFIX):
            return await self._tokens.verify(credential)
        if self._jwts is not None and credential.count(".") == 2:
            return await self._jwts.verify(credential)
        raise Unauthenticated("The token is not valid.")

"""Bearer JWTs from an identity provider, verified with PyJWT.

The issuer and the audience must match, ``exp`` and ``sub`` must be there, and only the
allowed asymmetric algorithms are accepted, so a token cannot choose how it is checked
(no ``none``, no HMAC keyed with the public key). Keys come from the provider's JWKS
endpoint (``resolvers.jwks``) or from a fixed PEM public key.
"""

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt
from cachetools import TTLCache
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK

from models.principal import ALL_ORGANIZATIONS, SCOPES, Principal
from resolvers.auth import Unauthenticated
from resolvers.jwks import JwksKeys, KeysUnavailable

log = logging.getLogger(__name__)

_RSA = frozenset(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"))
_EC = frozenset(("ES256", "ES384", "ES512"))
ASYMMETRIC = _RSA | _EC | {"EdDSA"}
_SUBJECT_MAX = 128
"""What report jobs keep of their owner's subject."""
VERIFIED_TOKENS = 1024
VERIFIED_FOR_S = 60.0
"""A client sends the same token with every request, and checking its signature is about
a third of a millisecond: the principal of a token found valid is kept (at most
``VERIFIED_TOKENS``), until its ``exp`` or for ``VERIFIED_FOR_S``, whichever comes first.
A key the identity provider withdraws stops verifying within that time, as it does when
the provider's keys are refetched (``AUTH_JWT_JWKS_MAX_AGE_S``)."""


def _public_key(pem: str) -> tuple[Any, frozenset[str]]:
    """The key of a PEM text, and the algorithms that can use a key of its kind."""
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ValueError(f"The JWT public key is not a PEM public key: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey):
        return key, _RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, _EC
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, frozenset(("EdDSA",))
    raise ValueError(f"The JWT public key is a {type(key).__name__}, not a signing key.")


def _words(value: Any) -> list[str]:
    """A claim given as a list or as one space-separated string (OAuth's ``scope``)."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


class JwtVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str],
        public_key: str | None = None,
        jwks_url: str | None = None,
        organizations_claim: str = "organizations",
        scopes_claim: str = "scope",
        account_id_claim: str | None = None,
        leeway_s: float = 30,
        jwks_timeout_s: float = 5,
        jwks_refetch_floor_s: float = 60,
        jwks_max_age_s: float = 300,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if (public_key is None) == (jwks_url is None):
            raise ValueError("JWT verification needs exactly one of a JWKS URL and a public key.")
        unsafe = set(algorithms) - ASYMMETRIC
        if unsafe or not algorithms:
            raise ValueError(
                f"JWT algorithms must be asymmetric ({', '.join(sorted(ASYMMETRIC))}): "
                f"not {', '.join(sorted(unsafe)) or 'none'}."
            )
        self._algorithms = list(algorithms)
        self._key: Any = None
        if public_key is not None:
            self._key, usable = _public_key(public_key)
            # Only the algorithms of the key's kind: a token naming another would make
            # PyJWT fail with a TypeError instead of a verdict.
            self._algorithms = [name for name in algorithms if name in usable]
            if not self._algorithms:
                raise ValueError(
                    f"No allowed JWT algorithm ({', '.join(algorithms)}) fits the public key."
                )
        self._issuer = issuer
        self._audience = audience
        self._jwks = (
            JwksKeys(
                jwks_url,
                timeout_s=jwks_timeout_s,
                refetch_floor_s=jwks_refetch_floor_s,
                max_age_s=jwks_max_age_s,
                clock=clock,
            )
            if jwks_url
            else None
        )
        self._organizations_claim = organizations_claim
        self._scopes_claim = scopes_claim
        self._account_id_claim = account_id_claim
        self._leeway_s = leeway_s
        self._wall_clock = wall_clock
        # Principal and the instant its token expires (``exp`` plus the leeway).
        self._verified: TTLCache[str, tuple[Principal, float]] = TTLCache(
            VERIFIED_TOKENS, VERIFIED_FOR_S, timer=wall_clock
        )

    async def _key_for(self, credential: str) -> Any:
        if self._jwks is None:
            return self._key
        try:
            kid = jwt.get_unverified_header(credential).get("kid")
        except jwt.DecodeError as exc:
            raise Unauthenticated("The token is not a JWT.") from exc
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("No key of the identity provider signed this token.")
        try:
            key: PyJWK | None = await self._jwks.key(kid)
        except KeysUnavailable as exc:
            raise Unauthenticated(
                "The identity provider's keys are unavailable.", counts_as_failure=False
            ) from exc
        if key is None:
            raise Unauthenticated("No key of the identity provider signed this token.")
        # The PyJWK is passed on whole, so that PyJWT holds the token to its algorithm.
        return key

    async def aclose(self) -> None:
        if self._jwks is not None:
            await self._jwks.aclose()

    async def verify(self, credential: str) -> Principal:
        known = self._verified.get(credential)
        if known is not None:
            principal, expires = known
            if self._wall_clock() < expires:
                return principal
            del self._verified[credential]
            raise Unauthenticated("The token has expired.")
        key = await self._key_for(credential)
        try:
            claims = jwt.decode(
                credential,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The token has expired.") from exc
        except jwt.PyJWTError as exc:
            # PyJWT's messages name the failed check ("Invalid audience"), never the token.
            raise Unauthenticated(f"The token is not valid: {exc}.") from exc
        principal = self._principal(claims)
        self._verified[credential] = (principal, claims["exp"] + self._leeway_s)
        return principal

    def _principal(self, claims: dict[str, Any]) -> Principal:
        subject = f"jwt:{claims['iss']}|{claims['sub']}"
        if len(subject) > _SUBJECT_MAX:
            subject = "jwt:sha256:" + hashlib.sha256(subject.encode()).hexdigest()
        organizations = frozenset(_words(claims.get(self._organizations_claim)))
        account_id = claims.get(self._account_id_claim) if self._account_id_claim else None
        return Principal(
            subject=subject,
            organizations=organizations - {ALL_ORGANIZATIONS},
            # A provider's tokens carry other applications' scopes too (openid, profile).
            scopes=frozenset(_words(claims.get(self._scopes_claim))) & SCOPES.keys(),
            account_id=account_id if isinstance(account_id, int) else None,
            all_organizations=ALL_ORGANIZATIONS in organizations,
        )

"""Credentials for the benchmarks: the services trust a throwaway identity provider, whose
key is made per run, and the benchmark's clients carry its JWTs."""

import time
from collections.abc import Iterable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from models.principal import ALL_ORGANIZATIONS, SCOPES

ISSUER = "https://bench.invalid/"
AUDIENCE = "provisioning-graph"
_KEY = ec.generate_private_key(ec.SECP256R1())


def service_auth_environment() -> dict[str, str]:
    """What a service process needs in its environment to accept ``bearer`` tokens."""
    public = _KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "AUTH_JWT_ISSUER": ISSUER,
        "AUTH_JWT_AUDIENCE": AUDIENCE,
        "AUTH_JWT_PUBLIC_KEY": public.decode(),
        "AUTH_JWT_ALGORITHMS": "ES256",
    }


def service_auth_settings() -> dict[str, str]:
    """The same, as keyword arguments of ``Settings``."""
    return {name.lower(): value for name, value in service_auth_environment().items()}


def bearer(organizations: Iterable[str] = (ALL_ORGANIZATIONS,), subject: str = "bench") -> str:
    """A JWT with every scope, valid for a day: longer than any run."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + 86_400,
        "organizations": list(organizations),
        "scope": " ".join(SCOPES),
    }
    return jwt.encode(claims, _KEY, algorithm="ES256")


def headers(token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or bearer()}"}

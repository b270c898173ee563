"""Credentials for the benchmarks: the services trust a throwaway identity provider, whose
key is made per run, and the benchmark's clients carry its JWTs (valid for a day: longer
than any run)."""

from cryptography.hazmat.primitives.asymmetric import ec

from server.testing import TokenIssuer, authorization

IDENTITY = TokenIssuer(
    "https://bench.invalid/", ec.generate_private_key(ec.SECP256R1()), "ES256", lifetime_s=86_400
)


def bearer(subject: str = "bench") -> str:
    """A JWT with every scope, for every organization."""
    return IDENTITY.bearer(subject)


def headers(token: str | None = None) -> dict[str, str]:
    return authorization(token or bearer())

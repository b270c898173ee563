"""What the tests and the benchmarks share to run the service and call it: a throwaway
identity provider whose JWTs the service accepts (no row in any database to make first,
so services in other processes accept them too), and the service on a loopback port."""

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from starlette.applications import Starlette

from models.principal import ALL_ORGANIZATIONS, SCOPES
from server.app import create_app
from server.settings import Settings
from soap.simulator.background import listening_socket, serving
from soap.simulator.server import Simulator


@dataclass(frozen=True)
class TokenIssuer:
    """Signs JWTs as an identity provider would; ``settings`` make a service trust it."""

    issuer: str
    key: RSAPrivateKey | EllipticCurvePrivateKey
    algorithm: str
    audience: str = "provisioning-graph"
    lifetime_s: int = 3600

    @property
    def public_key(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def settings(self) -> dict[str, str]:
        """Keyword arguments of ``Settings``."""
        return {
            "auth_jwt_issuer": self.issuer,
            "auth_jwt_audience": self.audience,
            "auth_jwt_public_key": self.public_key,
        }

    def environment(self) -> dict[str, str]:
        """The same for a service in a process of its own."""
        return {name.upper(): value for name, value in self.settings().items()}

    def bearer(
        self,
        subject: str,
        organizations: Iterable[str] = (ALL_ORGANIZATIONS,),
        scopes: Iterable[str] = SCOPES,
        **claims: object,
    ) -> str:
        """A JWT for ``subject``; ``claims`` override or add to the defaults."""
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "exp": now + self.lifetime_s,
            "organizations": list(organizations),
            "scope": " ".join(scopes),
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm=self.algorithm)


def authorization(token: str) -> dict[str, str]:
    """The header that carries ``token``."""
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def serving_service(
    simulator: Simulator | None = None,
    *,
    clock: Callable[[], float] | None = None,
    **settings: Any,
) -> Iterator[tuple[str, Starlette]]:
    """The whole service on a loopback port, with ``settings`` and no ``.env`` file (and
    ``simulator`` mounted, when it talks to its own); yields its URL and app."""
    sock = listening_socket()
    configured = Settings(_env_file=None, port=sock.getsockname()[1], **settings)
    app = create_app(configured, simulator, clock=clock)
    with serving(app, sock) as url:
        yield url, app


async def post_graphql(
    http: httpx.AsyncClient,
    url: str,
    document: str,
    variables: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON body of the answer to ``document`` posted to ``url``."""
    response = await http.post(
        url, json={"query": document, "variables": dict(variables or {})}, headers=headers
    )
    body: dict[str, Any] = response.json()
    return body

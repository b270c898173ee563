"""What the tests share beyond fixtures."""

import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from alembic import command
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gql.transport.websockets import WebsocketsTransport

from models.principal import ALL_ORGANIZATIONS, SCOPES
from resolvers.database import alembic_config
from server.app import create_app
from server.settings import Settings
from soap.simulator.background import listening_socket, serving, serving_process
from soap.simulator.fleet import Fleet
from soap.simulator.server import Simulator


def require_service(name: str, host: str, port: int) -> None:
    """Skips when a local service is absent, unless REQUIRE_SERVICES=1 makes that a failure."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


QUERIES = Path(__file__).parent / "queries"


def document(name: str) -> str:
    """A query exactly as the frontend sends it, from tests/queries/<name>.graphql."""
    return (QUERIES / f"{name}.graphql").read_text()


def lossless_floor(instants: list[int]) -> int:
    """The calls a lossless read of these events needs at most (DESIGN.md)."""
    n = len(instants)
    if n <= 500:
        return 1
    m = max(Counter(instants).values())
    return 1 + ceil((n - 500) / (500 - m))


# Every test service trusts this identity provider, and tests sign in as its users: no
# database row to make first, so services in other processes accept them too.
ISSUER = "https://idp.test/"
AUDIENCE = "provisioning-graph"
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_KEY = (
    SIGNING_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
AUTH_SETTINGS = {
    "auth_jwt_issuer": ISSUER,
    "auth_jwt_audience": AUDIENCE,
    "auth_jwt_public_key": PUBLIC_KEY,
}


def auth_environment() -> dict[str, str]:
    return {name.upper(): value for name, value in AUTH_SETTINGS.items()}


def bearer(
    subject: str = "tester",
    organizations: Iterable[str] = (ALL_ORGANIZATIONS,),
    scopes: Iterable[str] = SCOPES,
    **claims: object,
) -> str:
    """A JWT the test services accept; ``claims`` override or add to the defaults."""
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + 3600,
        "organizations": list(organizations),
        "scope": " ".join(scopes),
        **claims,
    }
    return jwt.encode(payload, SIGNING_KEY, algorithm="RS256")


@dataclass
class Api:
    """The whole service on a loopback port, with its own simulator to count calls."""

    base_url: str
    simulator: Simulator
    token: str = field(default_factory=bearer)
    """Every scope, every organization, unless a test says otherwise."""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/graphql"

    def websocket(self, protocol: str = "graphql-transport-ws") -> WebsocketsTransport:
        """A gql transport that authenticates in its connection_init."""
        return WebsocketsTransport(
            url=self.ws_url, subprotocols=[protocol], init_payload=self.headers
        )

    def calls(self, operation: str = "GetDeviceProvisioningHistory") -> int:
        return self.simulator.state.calls[operation]

    async def query(
        self,
        document: str,
        variables: dict | None = None,
        headers: dict | None = None,
        *,
        expect_errors: bool = False,
    ) -> dict:
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.post(
                f"{self.base_url}/graphql",
                json={"query": document, "variables": variables or {}},
                headers={**self.headers, **(headers or {})},
            )
        body = response.json()
        if not expect_errors:
            assert "errors" not in body, body["errors"]
        return body


def api_server(
    tmp_path: Path, clock: Callable[[], float] | None = None, **overrides: object
) -> Iterator[Api]:
    simulator = Simulator(Fleet())
    sock = listening_socket()
    overrides = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/provgraph.db",
        **AUTH_SETTINGS,
        **overrides,
    }
    settings = Settings(_env_file=None, port=sock.getsockname()[1], **overrides)
    with serving(create_app(settings, simulator, clock=clock), sock) as base:
        yield Api(base, simulator)


def embedded_service(tmp_path: Path, **overrides: object) -> Iterator[str]:
    """The service with the simulator it makes for itself, as `provgraph serve` has it,
    and no identity provider of the tests'; yields its URL."""
    sock = listening_socket()
    settings = Settings(
        _env_file=None,
        port=sock.getsockname()[1],
        database_url=f"sqlite+aiosqlite:///{tmp_path}/provgraph.db",
        **overrides,
    )
    with serving(create_app(settings), sock) as base:
        yield base


@contextmanager
def server_process(**environment: str) -> Iterator[str]:
    """The service in a process of its own; yields its URL."""
    with serving_process("server.app:create_app", {**auth_environment(), **environment}) as served:
        yield served.url


# Overridable so that test runs side by side on one machine keep to their own database.
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def schema_at(url: str, revision: str, *, down: bool = False) -> Callable[[Any], None]:
    """A ``run_sync`` step that takes the database at ``url`` (on the connection it is
    given) up, or ``down``, to an Alembic ``revision``."""

    def move(connection: Any) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    return move


async def fresh_postgres() -> None:
    """The PostgreSQL test database at the newest schema, with no recipes or events."""
    from sqlalchemy import text

    from resolvers.database import create_engine, migrate

    engine = create_engine(POSTGRES_URL)
    try:
        await migrate(engine)
        async with engine.begin() as connection:
            await connection.execute(
                text("TRUNCATE provisioning_recipes, outbox_events RESTART IDENTITY")
            )
    finally:
        await engine.dispose()

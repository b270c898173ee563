"""What the tests share beyond fixtures."""

import os
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from math import ceil
from pathlib import Path

import httpx
import pytest

from graph.app import create_app
from graph.settings import Settings
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


@dataclass
class Api:
    """The whole service on a loopback port, with its own simulator to count calls."""

    base_url: str
    simulator: Simulator

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
                headers=headers,
            )
        body = response.json()
        if not expect_errors:
            assert "errors" not in body, body["errors"]
        return body


def api_server(tmp_path: Path, **overrides: object) -> Iterator[Api]:
    simulator = Simulator(Fleet())
    sock = listening_socket()
    overrides = {"database_url": f"sqlite+aiosqlite:///{tmp_path}/provgraph.db", **overrides}
    settings = Settings(_env_file=None, port=sock.getsockname()[1], **overrides)
    with serving(create_app(settings, simulator), sock) as base:
        yield Api(base, simulator)


@contextmanager
def server_process(**environment: str) -> Iterator[str]:
    """The service in a process of its own; yields its URL."""
    with serving_process("graph.app:create_app", environment) as served:
        yield served.url


POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


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

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import POSTGRES_URL, REDIS_URL, Api, api_server, fresh_postgres, require_service

from server.settings import SIMULATOR_MOUNT
from soap.client import UwsClient
from soap.simulator.background import serving
from soap.simulator.fleet import Fleet
from soap.simulator.server import Simulator
from soap.simulator.state import Knobs


@dataclass
class Upstream:
    simulator: Simulator
    base_url: str

    @property
    def fleet(self) -> Fleet:
        return self.simulator.fleet

    def calls(self, operation: str = "GetDeviceProvisioningHistory") -> int:
        return self.simulator.state.calls[operation]


@pytest.fixture(scope="session")
def _simulator_server() -> Iterator[Upstream]:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    simulator = Simulator(Fleet())
    app = Starlette(routes=[Mount(SIMULATOR_MOUNT, app=simulator.app)])
    with serving(app) as base:
        yield Upstream(simulator, base + SIMULATOR_MOUNT)


@pytest.fixture
def upstream(_simulator_server: Upstream) -> Upstream:
    """The simulator over real HTTP, with counts, knobs and injected failures reset."""
    state = _simulator_server.simulator.state
    state.knobs = Knobs()
    state.clear_failures()
    state.reset_calls()
    return _simulator_server


@pytest.fixture
async def uws(upstream: Upstream) -> AsyncIterator[UwsClient]:
    client = await UwsClient.open(
        upstream.base_url, timeout_s=5.0, username="demo", password="demo"
    )
    yield client
    await client.aclose()


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """A fresh service per test: cold cache, zero call counts."""
    yield from api_server(tmp_path)


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
async def recipe_api(request, tmp_path: Path) -> AsyncIterator[Api]:
    """The service on SQLite (its default) and on PostgreSQL, each starting empty."""
    overrides = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
        await fresh_postgres()
    for api in api_server(tmp_path, **overrides):
        yield api

"""What the tests share beyond fixtures."""

import asyncio
import json
import os
import shutil
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric import rsa
from gql.transport.websockets import WebsocketsTransport
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send
from strawberry.http import process_result
from strawberry.types import ExecutionResult

from graph.context import Context
from graph.schema import schema
from models.principal import ALL_ORGANIZATIONS, SCOPES
from resolvers.database import alembic_config, create_engine, migrate
from server.auth import jwt_verifier
from server.ratelimit import RateLimits
from server.services import ServerServices, open_services
from server.settings import Settings
from server.testing import TokenIssuer, authorization, post_graphql, serving_service
from soap.contract import DEVICE_PATH
from soap.simulator import MOUNT as SIMULATOR_MOUNT
from soap.simulator.background import listening_socket, serving, serving_process
from soap.simulator.fleet import Fleet
from soap.simulator.server import Simulator
from soap.simulator.state import PASSWORD, USERNAME


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


# Recipes: the inputs and checks the recipe tests share, whatever they run on.
DATA = Path(__file__).parent / "data"
CREATE = document("CreateRecipe")
UPDATE = document("UpdateRecipeStatus")
RECIPES = document("Recipes")
SEED_EXAMPLE = json.loads((DATA / "seed_recipe_created_example.json").read_text())
SEED_SHAPE = json.loads((DATA / "seed_recipe_created_shape.json").read_text())

ORG = "624c9c670000000000000000ad7cd727"
OTHER_ORG = "11111111111111111111111111111111"


def full_input(**changes) -> dict:
    """Every field the seed example has, in the API's input form; but the owner's
    organization, which only a caller acting for it may name."""
    p = SEED_EXAMPLE["payload"]
    value = {
        "owner": {"parentCompanyUid": "9a52dc0a000000000000000092acfccc"},
        "organizationUid": ORG,
        "confirmedOwnership": p["confirmedOwnership"],
        "serialNumber": p["serialNumber"],
        "macAddress": "29:9f:66:c8:0a:1b",
        "model": p["model"],
        "brand": p["brand"],
        "tagUids": ["87e460040000000000000000" + "4bea2712"],
        "deviceName": p["deviceName"],
        "policyUid": "2ca49d20000000000000000056c01137",
        "locationUid": "b7cb61bf0000000000000000d468d313",
    }
    value.update(changes)
    return value


def shape_keys(shape: dict) -> tuple[list[str], set[str]]:
    """The seed shape's keys in order, and which of them are required."""
    keys = [k.rstrip("?") for k in shape]
    return keys, {k for k in shape if not k.endswith("?")}


def assert_seed_shape(event: dict) -> None:
    """The event against the seed document's Shape, key for key, never our own output."""
    assert list(event) == list(SEED_SHAPE)
    assert event["kind"] == "domain"
    assert event["type"] == "Device.ProvisioningRecipeCreated"
    assert isinstance(event["id"], str)
    payload, shape = event["payload"], SEED_SHAPE["payload"]
    order, required = shape_keys(shape)
    assert required <= set(payload), required - set(payload)
    assert set(payload) <= set(order), set(payload) - set(order)
    assert [k for k in order if k in payload] == list(payload)  # the seed's key order
    assert list(payload["owner"]) == ["ownershipType", "organizationUid", "parentCompanyUid"]
    assert payload["owner"]["ownershipType"] == "organization"
    assert payload["status"] in shape["status"].split(" | ")
    assert payload["type"] == event["type"]
    for key, value in payload.items():
        example = SEED_EXAMPLE["payload"][key]
        assert type(value) is type(example) or (value is None and key == "owner"), key


async def create(api, **changes) -> dict:
    body = await api.query(CREATE, {"input": full_input(**changes)})
    return body["data"]["createProvisioningRecipe"]


# Reports: what the report tests share, whatever they run on.
REPORT = document("FleetReport")
START = document("StartReport")
RANGE = {"occurredAfter": "2015-01-01T00:00:00Z", "occurredBefore": "2026-06-01T00:00:00Z"}


def ident(device) -> dict[str, str]:
    """A simulated device as the API's identifier input names it."""
    return {"kind": device.primary.kind.upper(), "identifier": device.primary.identifier}


def ordinary(api, count: int) -> list:
    """The first ``count`` devices of the simulator's plain kind."""
    return [d for d in api.simulator.fleet.devices if d.profile.name == "ordinary"][:count]


def lossless_floor(instants: list[int]) -> int:
    """The calls a lossless read of these events needs at most (docs/ARCHITECTURE.md)."""
    n = len(instants)
    if n <= 500:
        return 1
    m = max(Counter(instants).values())
    return 1 + ceil((n - 500) / (500 - m))


# Every test service trusts this identity provider, and tests sign in as its users.
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
IDENTITY = TokenIssuer("https://idp.test/", SIGNING_KEY, "RS256")
ISSUER, AUDIENCE, PUBLIC_KEY = IDENTITY.issuer, IDENTITY.audience, IDENTITY.public_key
AUTH_SETTINGS = IDENTITY.settings()
auth_environment = IDENTITY.environment


def bearer(
    subject: str = "tester",
    organizations: Iterable[str] = (ALL_ORGANIZATIONS,),
    scopes: Iterable[str] = SCOPES,
    **claims: object,
) -> str:
    """A JWT the test services accept; ``claims`` override or add to the defaults."""
    return IDENTITY.bearer(subject, organizations, scopes, **claims)


@dataclass
class Api:
    """The whole service on a loopback port, with its own simulator to count calls."""

    base_url: str
    simulator: Simulator
    token: str = field(default_factory=bearer)
    """Every scope, every organization, unless a test says otherwise."""

    @property
    def headers(self) -> dict[str, str]:
        return authorization(self.token)

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
            body = await post_graphql(
                http,
                f"{self.base_url}/graphql",
                document,
                variables,
                {**self.headers, **(headers or {})},
            )
        if not expect_errors:
            assert "errors" not in body, body["errors"]
        return body


def api_server(
    tmp_path: Path, clock: Callable[[], float] | None = None, **overrides: object
) -> Iterator[Api]:
    simulator = Simulator(Fleet())
    overrides = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/provgraph.db",
        **AUTH_SETTINGS,
        **overrides,
    }
    with serving_service(simulator, clock=clock, **overrides) as (base, _):
        yield Api(base, simulator)


def embedded_service(tmp_path: Path, **overrides: object) -> Iterator[str]:
    """The service with the simulator it makes for itself, as `provgraph serve` has it,
    and no identity provider of the tests'; yields its URL."""
    database_url = f"sqlite+aiosqlite:///{tmp_path}/provgraph.db"
    with serving_service(database_url=database_url, **overrides) as (base, _):
        yield base


@contextmanager
def server_process(**environment: str) -> Iterator[str]:
    """The service in a process of its own; yields its URL."""
    with serving_process("server.app:create_app", {**auth_environment(), **environment}) as served:
        yield served.url


WAIT_S = 30
"""An upper bound for what a test waits on, never a synchronisation."""


class Gate:
    """Holds the simulator's device calls while shut, so that a test catches work in
    flight for as long as it needs to, where a latency would have to outlast the test.

    Calls wait in the simulator's thread and loop, the test in its own: whatever both
    touch is guarded by one condition, and a held call is woken on its own loop.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._shut = False
        self._wakers: list[Callable[[], None]] = []
        self.arrived = 0
        """Device calls that reached the simulator, held or not."""
        self.held = 0
        self.peak = 0
        """The most calls held at once."""

    def shut(self) -> None:
        with self._changed:
            self._shut = True

    def open(self) -> None:
        with self._changed:
            self._shut = False
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    async def through(self) -> None:
        """Lets a call through, once the gate is open."""
        loop = asyncio.get_running_loop()
        opened = loop.create_future()
        with self._changed:
            self.arrived += 1
            if not self._shut:
                return
            self._wakers.append(lambda: loop.call_soon_threadsafe(_settle, opened))
            self.held += 1
            self.peak = max(self.peak, self.held)
            self._changed.notify_all()
        try:
            await opened
        finally:
            with self._changed:
                self.held -= 1

    async def holding(self, count: int) -> None:
        """Returns once ``count`` calls are held."""

        def reached() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: self.held >= count, WAIT_S)

        assert await asyncio.to_thread(reached), f"{self.held} calls held, not {count}"


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SimulatorSeat:
    """One simulator server for a whole test session, answering as the simulator, and
    through the gate, of the test running now: each test has a fleet, call counts and
    knobs of its own, as with a service of its own, without starting a server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.simulator, self.gate = self.renew()

    def renew(self) -> tuple[Simulator, Gate]:
        """The next test's simulator and gate."""
        self.simulator, self.gate = Simulator(Fleet()), Gate()
        return self.simulator, self.gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        simulator, gate = self.simulator, self.gate
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].endswith(DEVICE_PATH)
        ):
            await gate.through()
        await simulator.app(scope, receive, send)


@contextmanager
def simulator_seat() -> Iterator[SimulatorSeat]:
    """A seat, served on loopback from a thread of its own."""
    sock = listening_socket()
    seat = SimulatorSeat(f"http://127.0.0.1:{sock.getsockname()[1]}{SIMULATOR_MOUNT}")
    with serving(Starlette(routes=[Mount(SIMULATOR_MOUNT, app=seat)]), sock):
        yield seat


def _response(result: ExecutionResult) -> dict[str, Any]:
    """The body the HTTP view would send for ``result``, as a client reads it back."""
    body: dict[str, Any] = json.loads(json.dumps(process_result(result)))
    return body


@dataclass
class InProcess:
    """The GraphQL schema executed in this process over the services the composition root
    builds, with no app and no HTTP, against a simulator of its own: ``Api``'s interface,
    for what is GraphQL's behaviour rather than the transport's."""

    services: ServerServices
    simulator: Simulator
    gate: Gate
    token: str = field(default_factory=bearer)
    """Every scope, every organization, unless a test says otherwise."""

    @property
    def headers(self) -> dict[str, str]:
        return authorization(self.token)

    def calls(self, operation: str = "GetDeviceProvisioningHistory") -> int:
        return self.simulator.state.calls[operation]

    async def context(self, headers: dict | None = None) -> Context:
        """A context for the caller the headers name, as the service authenticates it."""
        merged = httpx.Headers(self.headers)
        merged.update(headers or {})
        principal = await self.services.authenticator.authenticate(
            merged.get("authorization"), local=False
        )
        return Context(services=self.services, principal=principal)

    async def query(
        self,
        document: str,
        variables: dict | None = None,
        headers: dict | None = None,
        *,
        expect_errors: bool = False,
    ) -> dict:
        result = await schema.execute(
            document, variable_values=variables or {}, context_value=await self.context(headers)
        )
        body = _response(result)
        if not expect_errors:
            assert "errors" not in body, body["errors"]
        return body

    async def subscribe(
        self, document: str, variables: dict | None = None, headers: dict | None = None
    ) -> AsyncIterator[dict]:
        """Each response of a subscription; close it (``aclosing``) to end it early."""
        stream = await schema.subscribe(
            document, variable_values=variables or {}, context_value=await self.context(headers)
        )
        try:
            async for result in stream:
                yield _response(result)
        finally:
            await stream.aclose()


@dataclass(frozen=True)
class FastTier:
    """What the fast tier's tests share for a session."""

    seat: SimulatorSeat
    migrated: Path
    """A SQLite database at the newest schema, which each test starts from a copy of:
    migrating takes longer than most tests."""


@asynccontextmanager
async def fast_tier(directory: Path) -> AsyncIterator[FastTier]:
    migrated = directory / "provgraph.db"
    engine = create_engine(f"sqlite+aiosqlite:///{migrated}")
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    with simulator_seat() as seat:
        yield FastTier(seat, migrated)


@asynccontextmanager
async def in_process(
    tier: FastTier,
    tmp_path: Path,
    clock: Callable[[], float] | None = None,
    **overrides: object,
) -> AsyncIterator[InProcess]:
    """The services ``api_server`` would serve, built in this process on the seat's next
    simulator; a gate left shut is opened at the end, so that no call stays held."""
    simulator, gate = tier.seat.renew()
    if "database_url" not in overrides:
        database = shutil.copyfile(tier.migrated, tmp_path / "provgraph.db")
        overrides["database_url"] = f"sqlite+aiosqlite:///{database}"
    overrides = {**AUTH_SETTINGS, **overrides}
    settings = Settings(
        _env_file=None,
        uws_base_url=tier.seat.url,
        uws_username=USERNAME,
        uws_password=PASSWORD,
        **overrides,
    )
    jwts = jwt_verifier(settings)
    rate_limits = RateLimits(
        rate_limit=settings.rate_limit,
        auth_failure_limit=settings.auth_failure_limit,
        storage_url=settings.rate_limit_storage_url,
        max_socket_operations=settings.max_subscriptions_per_credential,
    )
    try:
        async with open_services(settings, rate_limits, jwts, clock) as services:
            try:
                yield InProcess(services, simulator, gate)
            finally:
                gate.open()
    finally:
        if jwts is not None:
            await jwts.aclose()


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

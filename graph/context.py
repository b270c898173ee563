"""What every resolver receives: the process's services and this request's state."""

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection
from strawberry.dataloader import DataLoader

from graph.settings import Settings
from models.devices import DeviceIdentifier
from models.principal import Principal
from resolvers.auth import Authenticator
from resolvers.cursors import CursorCodec
from resolvers.devices import Device, find_devices
from resolvers.events import EventHub
from resolvers.jobs import ReportJobs
from resolvers.recipes import RecipeStore
from resolvers.upstream import Cost, Upstream
from soap.client import UwsClient


@dataclass
class Services:
    """Shared by all requests for the process's lifetime."""

    settings: Settings
    uws: UwsClient
    upstream: Upstream
    engine: AsyncEngine
    cursors: CursorCodec
    recipes: RecipeStore
    hub: EventHub
    jobs: ReportJobs
    authenticator: Authenticator
    development_token: str | None = None
    """The secret GraphiQL is prefilled with (``AUTH_DEV_TOKEN``, loopback binds only)."""


@dataclass
class Context:
    services: Services
    principal: Principal
    cost: Cost = field(default_factory=Cost)
    connection_params: dict[str, object] | None = None
    """A WebSocket's ``connection_init`` payload (Strawberry sets it)."""
    devices: DataLoader[DeviceIdentifier, Device | None] = field(init=False)

    def __post_init__(self) -> None:
        async def load(keys: list[DeviceIdentifier]) -> list[Device | None]:
            return await find_devices(self.services.upstream, self.cost, keys)

        # One per request: a query naming a device several times looks it up once.
        self.devices = DataLoader(load_fn=load)


def context_for(connection: HTTPConnection, principal: Principal) -> Context:
    return Context(services=connection.app.state.services, principal=principal)

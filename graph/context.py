"""What every resolver receives: the process's services and this request's state."""

from contextvars import ContextVar
from dataclasses import dataclass

import strawberry

from graph.lookups import Lookups
from models.devices import DeviceIdentifier
from models.principal import Principal
from resolvers.cursors import CursorCodec
from resolvers.devices import Device, find_devices
from resolvers.events import EventHub
from resolvers.jobs import ReportJobs
from resolvers.recipes import RecipeStore
from resolvers.upstream import Cost, Upstream


@dataclass(frozen=True)
class Operation:
    """What one GraphQL operation holds for itself."""

    cost: Cost
    devices: Lookups[DeviceIdentifier, Device | None]


# Not reset when an operation ends: its task ends with it, and a subscription may be
# finalised from another task, where a reset fails.
_current: ContextVar[Operation | None] = ContextVar("operation", default=None)


@dataclass(frozen=True)
class Limits:
    """The bounds the settings put on what one operation may ask and spend."""

    max_query_depth: int
    max_query_tokens: int
    max_query_aliases: int
    max_query_cost: int
    max_upstream_calls_per_request: int
    report_max_devices: int
    upstream_concurrency: int
    """How many upstream calls one report makes at a time."""
    cache_ttl_recent_s: float
    """How long a window touching the present stays fresh; a range without an end ends
    that long ago, so that its windows are shared while fresh."""
    introspection: bool
    """Whether operations may ask for __schema and __type."""


@dataclass
class Services:
    """Shared by all requests for the process's lifetime."""

    upstream: Upstream
    cursors: CursorCodec
    recipes: RecipeStore
    hub: EventHub
    jobs: ReportJobs
    limits: Limits


@dataclass
class Context:
    services: Services
    principal: Principal
    connection_params: dict[str, object] | None = None
    """A WebSocket's ``connection_init`` payload (Strawberry sets it)."""
    authorization: str | None = None
    """The Authorization a WebSocket authenticated with, checked again while it is open."""
    client_address: str = "unknown"
    """Refused credentials are limited per client address."""
    local: bool = False
    """The request (or WebSocket upgrade) was made on this host directly."""

    def begin_operation(self) -> Cost:
        """Gives the operation starting in this task its own Cost and device loader.

        Operations over one WebSocket share one Context, yet each must have its own
        budget of upstream calls and see devices as they are now: each runs in a task
        of its own, and ``graph.observability.OperationHooks`` calls this as it starts.
        """
        cost = Cost(budget=self.services.limits.max_upstream_calls_per_request)

        async def load(keys: list[DeviceIdentifier]) -> list[Device | None]:
            return await find_devices(self.services.upstream, cost, keys)

        # A query naming a device several times looks it up once.
        _current.set(Operation(cost, Lookups(load)))
        return cost

    @property
    def operation(self) -> Operation:
        operation = _current.get()
        if operation is None:
            raise RuntimeError("no GraphQL operation has begun in this task")
        return operation

    @property
    def cost(self) -> Cost:
        """What the running operation spends upstream, within its budget of calls."""
        return self.operation.cost

    @property
    def devices(self) -> Lookups[DeviceIdentifier, Device | None]:
        return self.operation.devices


Info = strawberry.Info[Context, None]
"""What every resolver of this schema is given."""

"""The Device type: its identifiers, its history, its recipes."""

import strawberry
from strawberry.relay import PageInfo

from graph.context import Info
from graph.devices.identifiers import (
    KINDS,
    DeviceIdentifier,
    DeviceIdentifierKind,
    identifier_record,
)
from graph.history.connection import provisioning_history as read_history
from graph.history.types import ProvisioningEventConnection, ProvisioningEventFilter
from graph.permissions import needs
from graph.recipes.queries import recipe_connection
from graph.recipes.types import ProvisioningRecipeConnection
from graph.relay import Node, global_id, node_loader
from graph.scalars import DateTime
from models.devices import IDENTIFIER_KINDS
from models.devices import DeviceIdentifier as IdentifierRecord
from models.principal import RECIPES_READ
from resolvers.devices import Device as DeviceRecord
from resolvers.devices import all_identifiers
from resolvers.recipes import RecipeFilter


@strawberry.type
class Device(Node):
    id: strawberry.ID
    identifier: DeviceIdentifier
    record: strawberry.Private[DeviceRecord]

    @classmethod
    def of(cls, device: DeviceRecord) -> "Device":
        asked = device.identifier
        return cls(
            id=global_id("Device", asked.kind, asked.identifier),
            identifier=DeviceIdentifier.of(asked),
            record=device,
        )

    @strawberry.field(
        description="All identifiers the upstream knows for this device: those of its "
        "GetDeviceList entry. Only the identifier asked by where the device list lacks "
        "the device or cannot be read (a DEVICE_LIST_UNAVAILABLE warning says so)."
    )
    async def identifiers(self, info: Info) -> list[DeviceIdentifier]:
        context = info.context
        known = await all_identifiers(context.services.upstream, context.cost, self.record)
        return [DeviceIdentifier.of(i) for i in known if i.kind in KINDS]

    @strawberry.field(
        description="The device's provisioning history, oldest first, read lazily from "
        "the upstream 500-record pages. The range is inclusive: occurredAfter defaults to "
        "2000-01-01T00:00:00Z and occurredBefore to now (rounded up to the cache's "
        "recent-window lifetime, 30 s by default); a cursor keeps the range it was read "
        "with. Pages hold 50 events unless first or last (at most 500) says otherwise; "
        "last without before gives the newest events."
    )
    async def provisioning_history(
        self,
        info: Info,
        occurred_after: DateTime | None = None,
        occurred_before: DateTime | None = None,
        filter: ProvisioningEventFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> ProvisioningEventConnection:
        return await read_history(
            info,
            self.record.identifier,
            occurred_after,
            occurred_before,
            filter,
            first,
            after,
            last,
            before,
        )

    @strawberry.field(
        description="Recipes of the caller's organizations linked to this device, oldest "
        "first. Needs recipes:read.",
        extensions=needs(RECIPES_READ),
    )
    async def provisioning_recipes(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> ProvisioningRecipeConnection:
        where = RecipeFilter(device=self.record.identifier)
        return await recipe_connection(info, where, first, after, None, None)


@strawberry.type
class DeviceEdge:
    cursor: str
    node: Device


@strawberry.type
class DeviceConnection:
    edges: list[DeviceEdge]
    page_info: PageInfo


async def load_device(info: Info, identifier: IdentifierRecord) -> Device | None:
    device = await info.context.devices.load(identifier)
    return Device.of(device) if device is not None else None


@node_loader("Device")
async def device_node(info: Info, parts: list[str]) -> Device | None:
    if len(parts) != 2 or parts[0] not in IDENTIFIER_KINDS:
        return None
    return await load_device(info, identifier_record(DeviceIdentifierKind(parts[0]), parts[1]))

"""Devices: lookup by identifier, the account's device list, and a device's history."""

from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from graph.errors import user_error
from graph.history import ProvisioningEventConnection, ProvisioningEventFilter
from graph.history import provisioning_history as read_history
from graph.permissions import RECIPES_READ, needs
from graph.relay import Node, PageInfo, global_id, page_size
from graph.scalars import DateTime
from models.devices import IDENTIFIER_FORMATS
from models.devices import DeviceIdentifier as IdentifierRecord
from resolvers.devices import Device as DeviceRecord
from resolvers.devices import DeviceListPosition, ListedDevice, all_identifiers, list_devices
from resolvers.recipes import RecipeFilter

if TYPE_CHECKING:
    from graph.recipes import ProvisioningRecipeConnection

DEVICES_CURSOR = "d"


@strawberry.enum(
    description="Identifier kinds the upstream service accepts (compared "
    "case-insensitively on the wire)."
)
class DeviceIdentifierKind(Enum):
    ESN = "esn"
    ICCID = "iccid"
    IMEI = "imei"
    MDN = "mdn"
    MEID = "meid"
    MSISDN = "msisdn"
    MIN = "min"
    EID = "eid"


_KINDS = {kind.value for kind in DeviceIdentifierKind}


@strawberry.type
class DeviceIdentifier:
    kind: DeviceIdentifierKind
    identifier: str

    @classmethod
    def of(cls, record: IdentifierRecord) -> "DeviceIdentifier":
        return cls(kind=DeviceIdentifierKind(record.kind), identifier=record.identifier)


@strawberry.input
class DeviceIdentifierInput:
    kind: DeviceIdentifierKind
    identifier: str


def identifier_record(kind: DeviceIdentifierKind, identifier: str) -> IdentifierRecord:
    """The identifier as the upstream takes it; BAD_USER_INPUT for one it would refuse.

    The message leaves the value out: it may be long, or made to look like something else.
    """
    value = identifier.strip().upper()
    expected = IDENTIFIER_FORMATS[kind.value]
    if not expected.pattern.fullmatch(value):
        raise user_error(
            f"Not a valid {kind.name} identifier: {expected.description}.", "identifier"
        )
    return IdentifierRecord(kind.value, value)


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
    async def identifiers(self, info: strawberry.Info) -> list[DeviceIdentifier]:
        context = info.context
        known = await all_identifiers(context.services.upstream, context.cost, self.record)
        return [DeviceIdentifier.of(i) for i in known if i.kind in _KINDS]

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
        info: strawberry.Info,
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
        self, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Annotated["ProvisioningRecipeConnection", strawberry.lazy("graph.recipes")]:
        from graph.recipes import recipe_connection

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


async def load_device(info: strawberry.Info, identifier: IdentifierRecord) -> Device | None:
    device = await info.context.devices.load(identifier)
    return Device.of(device) if device is not None else None


async def device(
    info: strawberry.Info, kind: DeviceIdentifierKind, identifier: str
) -> Device | None:
    return await load_device(info, identifier_record(kind, identifier))


async def devices(
    info: strawberry.Info, first: int | None = None, after: str | None = None
) -> DeviceConnection:
    context = info.context
    codec = context.services.cursors
    scope = codec.scope(DEVICES_CURSOR)
    position = None
    if after is not None:
        page_after, index = codec.decode(after, DEVICES_CURSOR, scope, 2)
        if index is None:
            raise user_error("after is not a valid cursor.", "after")
        position = DeviceListPosition(page_after, index)
    listed, more = await list_devices(
        context.services.upstream, context.cost, page_size(first, None), position
    )

    def edge(item: ListedDevice) -> DeviceEdge:
        return DeviceEdge(
            cursor=codec.encode(DEVICES_CURSOR, scope, list(item.at)), node=Device.of(item.device)
        )

    edges = [edge(item) for item in listed]
    return DeviceConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=more,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )

"""Root fields: a device by identifier, and the account's devices."""

import strawberry

from graph.context import Info
from graph.devices.identifiers import DeviceIdentifierKind, identifier_record
from graph.devices.types import Device, DeviceConnection, DeviceEdge, load_device
from graph.errors import user_error
from graph.permissions import needs
from graph.relay import page_info, page_size
from models.principal import HISTORY_READ
from resolvers.devices import DeviceListPosition, ListedDevice, list_devices

DEVICES_CURSOR = "d"


async def device(info: Info, kind: DeviceIdentifierKind, identifier: str) -> Device | None:
    return await load_device(info, identifier_record(kind, identifier))


async def devices(
    info: Info, first: int | None = None, after: str | None = None
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
        page_info=page_info(edges, has_next=more, has_previous=after is not None),
    )


@strawberry.type
class Query:
    device: Device | None = strawberry.field(
        resolver=device,
        description="The device with this identifier, or null when the upstream does not know "
        "it. Needs history:read.",
        extensions=needs(HISTORY_READ),
    )
    devices: DeviceConnection = strawberry.field(
        resolver=devices,
        description="The account's devices in the upstream's order (GetDeviceList, 2,000 a "
        "call); 50 a page unless first (at most 500) says otherwise. Needs history:read.",
        extensions=needs(HISTORY_READ),
    )

"""The schema: root fields of every domain, and the extensions every operation runs."""

from functools import partial

import strawberry
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig

from graph import devices as device_fields
from graph.errors import ResponseExtensions
from graph.relay import Node, parse_global_id
from graph.scalars import SCALARS
from models.devices import IDENTIFIER_KINDS


async def node(info: strawberry.Info, id: strawberry.ID) -> Node | None:
    type_name, parts = parse_global_id(id)
    if type_name == "Device" and len(parts) == 2 and parts[0] in IDENTIFIER_KINDS:
        kind = device_fields.DeviceIdentifierKind(parts[0])
        return await device_fields.device(info, kind, parts[1])
    return None


@strawberry.type
class Query:
    node: Node | None = strawberry.field(
        resolver=node, description="The object with this global id, or null when there is none."
    )
    device: device_fields.Device | None = strawberry.field(
        resolver=device_fields.device,
        description="The device with this identifier, or null when the upstream does not know it.",
    )
    devices: device_fields.DeviceConnection = strawberry.field(
        resolver=device_fields.devices,
        description="The account's devices in the upstream's order (GetDeviceList, 2,000 a "
        "call); 50 a page unless first (at most 500) says otherwise.",
    )


schema = strawberry.Schema(
    query=Query,
    types=[device_fields.Device, device_fields.DeviceIdentifierInput],
    # Frontends send the same few documents again and again: parse and validate each once
    # (both caches live at module level; factories, not instances, per request).
    extensions=[
        ResponseExtensions,
        partial(ParserCache, maxsize=256),
        partial(ValidationCache, maxsize=256),
    ],
    config=StrawberryConfig(scalar_map=SCALARS),
)

"""The history's types: events, their attributes, the filter, the connection."""

from collections.abc import Awaitable, Callable

import strawberry
from strawberry.relay import PageInfo

from graph.scalars import DateTime


@strawberry.type(description="A key and value the upstream attached to an event.")
class ExtendedAttribute:
    key: str
    value: str | None


@strawberry.type(description="One provisioning event, as the upstream reported it.")
class ProvisioningEvent:
    occurred_at: DateTime
    status: str
    event_by: str | None
    event_type: str
    service_plan: str | None
    mdn: str | None
    msisdn: str | None
    extended_attributes: list[ExtendedAttribute]


@strawberry.input(description="Keeps events whose fields equal one of the values (any case).")
class ProvisioningEventFilter:
    event_types: list[str] | None = None
    statuses: list[str] | None = None
    event_by: list[str] | None = None


@strawberry.type
class ProvisioningEventEdge:
    cursor: str
    node: ProvisioningEvent


@strawberry.type
class ProvisioningEventConnection:
    edges: list[ProvisioningEventEdge]
    page_info: PageInfo
    count_events: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(
        description="Number of events in the range after filters; costs a full read of "
        "the range, so only computed when asked."
    )
    async def total_count(self) -> int:
        return await self.count_events()

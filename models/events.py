"""The provisioning event record and one upstream window of them.

Records are tuples: immutable, so a cached window can be handed to many callers, and
cheap to build, which matters when 500 of them are made from every upstream reply.
"""

from typing import NamedTuple


class ExtendedAttribute(NamedTuple):
    key: str
    value: str | None


class ProvisioningEvent(NamedTuple):
    occurred_at: int
    """Ticks (100 ns since the Unix epoch, UTC): the upstream's full precision."""
    status: str
    event_by: str | None
    event_type: str
    service_plan: str | None
    mdn: str | None
    msisdn: str | None
    extended_attributes: tuple[ExtendedAttribute, ...]


class HistoryWindow(NamedTuple):
    """One upstream reply: at most 500 events of [earliest, latest], oldest first."""

    events: tuple[ProvisioningEvent, ...]
    is_complete: bool

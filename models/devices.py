"""Device identifiers and the device records GetDeviceList reports."""

from typing import NamedTuple

from models.events import ExtendedAttribute

IDENTIFIER_KINDS = ("esn", "iccid", "imei", "mdn", "meid", "msisdn", "min", "eid")
"""The kinds the upstream accepts, in its own lower-case spelling."""


class DeviceIdentifier(NamedTuple):
    kind: str
    """Lower case; the upstream compares kinds case-insensitively ("iccId" has been seen)."""
    identifier: str

    @classmethod
    def of(cls, kind: str, identifier: str) -> "DeviceIdentifier":
        return cls(kind.strip().lower(), identifier.strip())


class DeviceRecord(NamedTuple):
    device_id: int
    """The upstream's numeric id, the key GetDeviceList pages by."""
    identifiers: tuple[DeviceIdentifier, ...]
    account_name: str | None
    last_activation_ticks: int | None
    extended_attributes: tuple[ExtendedAttribute, ...]


class DeviceListPage(NamedTuple):
    devices: tuple[DeviceRecord, ...]
    largest_device_id_seen: int | None
    is_complete: bool

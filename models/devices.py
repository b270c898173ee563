"""Device identifiers and the device records GetDeviceList reports."""

import re
from typing import NamedTuple

from models.events import ExtendedAttribute

IDENTIFIER_KINDS = ("esn", "iccid", "imei", "mdn", "meid", "msisdn", "min", "eid")
"""The kinds the upstream accepts, in its own lower-case spelling."""


class IdentifierFormat(NamedTuple):
    pattern: re.Pattern[str]
    """Matched against the identifier in upper case."""
    description: str


def _format(pattern: str, description: str) -> IdentifierFormat:
    return IdentifierFormat(re.compile(pattern), description)


IDENTIFIER_FORMATS: dict[str, IdentifierFormat] = {
    # 32-bit ESNs are written as 8 hex digits or 11 decimal ones (3 + 8).
    "esn": _format(r"[0-9A-F]{8}|[0-9]{11}", "8 hex digits or 11 decimal digits"),
    # 56-bit MEIDs: 14 hex digits, or 18 decimal digits (10 + 8).
    "meid": _format(r"[0-9A-F]{14}|[0-9]{18}", "14 hex digits or 18 decimal digits"),
    # 14 digits without the check digit, 15 with it, 16 as IMEISV.
    "imei": _format(r"[0-9]{14,16}", "14 to 16 digits"),
    "iccid": _format(r"[0-9]{19,20}", "19 or 20 digits"),
    "eid": _format(r"[0-9]{32}", "32 digits"),
    "mdn": _format(r"[0-9]{10,15}", "10 to 15 digits"),
    "msisdn": _format(r"[0-9]{10,15}", "10 to 15 digits"),
    "min": _format(r"[0-9]{10}", "10 digits"),
}
"""What the upstream's identifiers look like, by kind. Checking them here keeps what the
upstream refuses with a fault (apostrophes, ``<``, backslashes) from ever reaching it."""


class DeviceIdentifier(NamedTuple):
    kind: str
    """Lower case; the upstream compares kinds case-insensitively ("iccId" has been seen)."""
    identifier: str

    @classmethod
    def of(cls, kind: str, identifier: str) -> "DeviceIdentifier":
        return cls(kind.strip().lower(), identifier.strip())


class InvalidIdentifier(ValueError):
    """An identifier the upstream would refuse. The message leaves the value out: it may
    be long, or made to look like something else."""


def read_identifier(kind: str, identifier: str) -> DeviceIdentifier:
    """The identifier as the upstream takes it, of a kind in IDENTIFIER_FORMATS;
    InvalidIdentifier for one the upstream would refuse."""
    value = identifier.strip().upper()
    expected = IDENTIFIER_FORMATS[kind]
    if not expected.pattern.fullmatch(value):
        raise InvalidIdentifier(f"Not a valid {kind.upper()} identifier: {expected.description}.")
    return DeviceIdentifier(kind, value)


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

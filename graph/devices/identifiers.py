"""Device identifiers as the API takes and gives them; shared by every domain."""

from enum import Enum

import strawberry

from graph.errors import user_error
from models.devices import IDENTIFIER_FORMATS
from models.devices import DeviceIdentifier as IdentifierRecord


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


KINDS = {kind.value for kind in DeviceIdentifierKind}


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

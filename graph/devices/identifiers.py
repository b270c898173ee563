"""Device identifiers as the API takes and gives them; shared by every domain."""

from enum import Enum

import strawberry

from graph.errors import user_error
from models.devices import DeviceIdentifier as IdentifierRecord
from models.devices import InvalidIdentifier, read_identifier


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
    """The identifier as the upstream takes it; BAD_USER_INPUT for one it would refuse."""
    try:
        return read_identifier(kind.value, identifier)
    except InvalidIdentifier as invalid:
        raise user_error(str(invalid), "identifier") from None

"""What a provisioning recipe holds: its statuses, its ownership types, and its plain fields.

A plain field is declared once, in ``RecipeFields``, and everything else is derived from
that declaration: the table's column (the table row inherits the class), the
``NewRecipe`` input record and its validation, the event JSON key (the field's name in
camelCase, where the declaration puts it among the payload's keys), and the GraphQL
type, input and event payload fields (added by ``with_recipe_fields``). Adding one is one
line here plus its migration. Fields with a behaviour of their own (the owner, the
originator, the status, the device, the uid, the timestamps) are written out where they
act.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum, auto
from typing import Annotated, Any, TypeVar, get_args

from annotated_types import MaxLen
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

_Class = TypeVar("_Class")


class RecipeStatus(StrEnum):
    """Spelled as the event payload spells them."""

    PENDING = "Pending"
    APPLIED = "Applied"
    FAILED = "Failed"
    INVALID = "Invalid"


class OwnershipType(StrEnum):
    ORGANIZATION = "organization"


class Check(Enum):
    """How an input value is checked and put in canonical form; a field's ``max_length``
    bounds it."""

    TEXT = auto()
    """Stripped; empty is absent; storable, at most ``max_length`` characters. The check of
    text that names no other."""
    UID = auto()
    """32 hexadecimal digits, kept in lower case."""
    MAC_ADDRESS = auto()
    """Six hex pairs, kept as 'AA:BB:CC:DD:EE:FF'."""
    TAGS = auto()
    """At most ``max_length`` UIDs, duplicates dropped."""


class RecipeFields(SQLModel):
    """The recipe's plain fields, in the order of the event payload and the GraphQL types.

    Each is optional (None, left out of the event) unless it has no default. A ``Field``
    gives its column, and its ``description`` is the GraphQL description; a ``Check`` in
    the annotation says how input is checked (text when none is named).
    """

    confirmed_ownership: bool | None = None
    serial_number: str | None = Field(default=None, max_length=128, index=True)
    mac_address: Annotated[str | None, Check.MAC_ADDRESS] = Field(
        default=None, max_length=17, index=True
    )
    model: str | None = Field(default=None, max_length=128)
    brand: str = Field(max_length=128)
    tag_uids: Annotated[list[str] | None, Check.TAGS] = Field(
        default=None, max_length=50, sa_type=JSON
    )
    device_name: str | None = Field(default=None, max_length=256)
    policy_uid: Annotated[str | None, Check.UID] = Field(default=None, max_length=32)
    location_uid: Annotated[str | None, Check.UID] = Field(default=None, max_length=32)


@dataclass(frozen=True)
class RecipeField:
    """One plain field, as the rest of the code reads its declaration."""

    name: str
    annotation: Any
    """The Python type, as the column, the input record and the GraphQL types hold it."""
    required: bool
    max_length: int | None
    check: Check | None
    """None: taken as given (a flag)."""
    description: str | None

    @property
    def key(self) -> str:
        """The field's key in the event payload, and its GraphQL name."""
        return to_camel(self.name)


def _field(name: str, info: FieldInfo) -> RecipeField:
    max_length = next((m.max_length for m in info.metadata if isinstance(m, MaxLen)), None)
    check = next((m for m in info.metadata if isinstance(m, Check)), None)
    if check is None and str in (*get_args(info.annotation), info.annotation):
        check = Check.TEXT
    # Unbounded text would take a column without a length and any input at all.
    if check in (Check.TEXT, Check.TAGS) and max_length is None:
        raise TypeError(f"The recipe field {name} needs a max_length.")
    return RecipeField(
        name=name,
        annotation=info.annotation,
        required=info.is_required(),
        max_length=max_length,
        check=check,
        description=info.description,
    )


RECIPE_FIELDS = tuple(_field(name, info) for name, info in RecipeFields.model_fields.items())


def values_of(source: object) -> dict[str, Any]:
    """The plain fields of a row, an input record or a GraphQL input, by name."""
    return {field.name: getattr(source, field.name) for field in RECIPE_FIELDS}


def with_recipe_fields(
    after: str, attribute: Callable[[RecipeField], object]
) -> Callable[[type[_Class]], type[_Class]]:
    """Adds the plain fields to a class, right after its own field ``after``, for a
    dataclass decorator (the standard library's, Strawberry's) applied next to make
    fields of. ``attribute`` gives each field's class attribute: its default, its
    description."""

    def add(cls: type[_Class]) -> type[_Class]:
        own = inspect.get_annotations(cls)
        if after not in own:
            raise TypeError(f"{cls.__name__} has no field {after} to add the recipe's after.")
        annotations: dict[str, Any] = {}
        for name, annotation in own.items():
            annotations[name] = annotation
            if name == after:
                for field in RECIPE_FIELDS:
                    annotations[field.name] = field.annotation
                    setattr(cls, field.name, attribute(field))
        cls.__annotations__ = annotations
        return cls

    return add

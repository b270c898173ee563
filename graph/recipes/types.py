"""The recipe, its inputs and payloads, and the events announced about it."""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry
from strawberry.relay import PageInfo
from strawberry.scalars import JSON

from graph.context import Info
from graph.devices.identifiers import DeviceIdentifierInput
from graph.errors import user_error
from graph.permissions import needs
from graph.relay import Node, global_id, load_node
from graph.scalars import DateTime
from models import recipe_events
from models.instants import from_datetime
from models.principal import HISTORY_READ
from models.recipe_fields import (
    OwnershipType,
    RecipeField,
    RecipeStatus,
    values_of,
    with_recipe_fields,
)
from models.recipes import OutboxEvent
from models.recipes import ProvisioningRecipe as RecipeRow
from resolvers.recipes import UserError as UserErrorRecord

if TYPE_CHECKING:
    from graph.devices.types import Device

DeviceType = Annotated["Device", strawberry.lazy("graph.devices.types")]
"""Lazy: the Device type reaches recipes through its provisioningRecipes field."""


strawberry.enum(RecipeStatus, name="ProvisioningRecipeStatus")
strawberry.enum(OwnershipType)


def _output(field: RecipeField) -> object:
    return strawberry.field(description=field.description)


def _input(field: RecipeField) -> object:
    if field.required:
        return strawberry.field(description=field.description)
    return strawberry.field(default=None, description=field.description)


@strawberry.type
class RecipeOwner:
    ownership_type: OwnershipType
    organization_uid: str | None
    parent_company_uid: str | None


@strawberry.type
class Originator:
    account_id: int | None
    organization_uid: str | None
    policy_uid: str | None


@strawberry.type
class UnsuccessfulRegisterAttemptStatus:
    warning_message: str


@strawberry.type
@with_recipe_fields("status", _output)
class ProvisioningRecipe(Node):
    id: strawberry.ID
    uid: str
    owner: RecipeOwner
    organization_uid: str
    status: RecipeStatus
    unsuccessful_register_attempt_status: UnsuccessfulRegisterAttemptStatus | None
    error_message: str | None
    originator: Originator | None
    created_at: DateTime
    updated_at: DateTime
    row: strawberry.Private[RecipeRow]

    @strawberry.field(
        description="The upstream device this recipe targets, where one was given. Needs "
        "history:read.",
        extensions=needs(HISTORY_READ),
    )
    async def device(self, info: Info) -> DeviceType | None:
        if self.row.device_kind is None or self.row.device_identifier is None:
            return None
        # Through the node loaders: the devices domain imports this one, not the reverse.
        # The loader registered for "Device" gives Devices.
        device = await load_node(info, "Device", [self.row.device_kind, self.row.device_identifier])
        return cast("Device | None", device)

    @classmethod
    def of(cls, row: RecipeRow) -> "ProvisioningRecipe":
        originator = None
        if any(
            v is not None
            for v in (
                row.originator_account_id,
                row.originator_organization_uid,
                row.originator_policy_uid,
            )
        ):
            originator = Originator(
                account_id=row.originator_account_id,
                organization_uid=row.originator_organization_uid,
                policy_uid=row.originator_policy_uid,
            )
        return cls(
            **values_of(row),
            id=global_id("ProvisioningRecipe", row.uid),
            uid=row.uid,
            owner=RecipeOwner(
                ownership_type=row.owner_ownership_type,
                organization_uid=row.owner_organization_uid,
                parent_company_uid=row.owner_parent_company_uid,
            ),
            organization_uid=row.organization_uid,
            status=row.status,
            unsuccessful_register_attempt_status=(
                UnsuccessfulRegisterAttemptStatus(warning_message=row.warning_message)
                if row.warning_message is not None
                else None
            ),
            error_message=row.error_message,
            originator=originator,
            created_at=DateTime(from_datetime(row.created_at)),
            updated_at=DateTime(from_datetime(row.updated_at)),
            row=row,
        )


@strawberry.type
class ProvisioningRecipeEdge:
    cursor: str
    node: ProvisioningRecipe


@strawberry.type
class ProvisioningRecipeConnection:
    edges: list[ProvisioningRecipeEdge]
    page_info: PageInfo
    count_recipes: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="Recipes matching the filter; counted only when asked.")
    async def total_count(self) -> int:
        return await self.count_recipes()


@strawberry.input
class ProvisioningRecipeFilter:
    organization_uid: str | None = None
    statuses: list[RecipeStatus] | None = None
    serial_number: str | None = None
    mac_address: str | None = None


@strawberry.input
class RecipeOwnerInput:
    ownership_type: OwnershipType = OwnershipType.ORGANIZATION
    organization_uid: str | None = None
    parent_company_uid: str | None = None


@strawberry.input
@with_recipe_fields("organization_uid", _input)
class CreateProvisioningRecipeInput:
    owner: RecipeOwnerInput
    organization_uid: str
    device: DeviceIdentifierInput | None = strawberry.field(
        default=None, description="Links the recipe to an upstream device; optional."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Retrying with the same key returns the first result and emits nothing new.",
    )


@strawberry.input
class UpdateProvisioningRecipeStatusInput:
    uid: str
    status: RecipeStatus
    error_message: str | None = None
    warning_message: str | None = None


@strawberry.type(description="A problem with the caller's input, pointing at the offending field.")
class UserError:
    field: list[str]
    code: str
    message: str

    @classmethod
    def of(cls, error: UserErrorRecord) -> "UserError":
        return cls(field=error.field, code=error.code, message=error.message)


@strawberry.type
class EventOwner:
    ownership_type: str
    organization_uid: str | None
    parent_company_uid: str | None


@strawberry.type
@with_recipe_fields("status", _output)
class ProvisioningRecipeCreatedPayload:
    owner: EventOwner
    organization_uid: str
    status: str
    unsuccessful_register_attempt_status: UnsuccessfulRegisterAttemptStatus | None
    error_message: str | None
    uid: str
    originator: Originator | None
    type: str


@strawberry.type
class ProvisioningRecipeStatusUpdatedPayload:
    uid: str
    organization_uid: str
    status: str
    error_message: str | None
    type: str


_JSON_DESCRIPTION = (
    "The event exactly as other systems consume it: the seed document's JSON, optional "
    "payload keys left out when absent."
)
_OCCURRED_AT_DESCRIPTION = (
    "When the service recorded the event, in the transaction of the change it announces. "
    "Not part of `json`, which keeps the seed document's shape."
)


@strawberry.type(
    description="The domain event of the seed document 000_209d21a4edc24dcc.txt, field for "
    "field: its JSON form (GraphQL response or broker message) has exactly the seed's keys "
    "and value formats."
)
class DeviceProvisioningRecipeCreated:
    id: strawberry.ID
    kind: str
    type: str
    payload: ProvisioningRecipeCreatedPayload
    json: JSON = strawberry.field(description=_JSON_DESCRIPTION)
    occurred_at: DateTime = strawberry.field(description=_OCCURRED_AT_DESCRIPTION)


@strawberry.type(description="Emitted when a recipe's status changes; payload {uid, status, ...}.")
class DeviceProvisioningRecipeStatusUpdated:
    id: strawberry.ID
    kind: str
    type: str
    payload: ProvisioningRecipeStatusUpdatedPayload
    json: JSON = strawberry.field(description=_JSON_DESCRIPTION)
    occurred_at: DateTime = strawberry.field(description=_OCCURRED_AT_DESCRIPTION)


ProvisioningRecipeEvent = Annotated[
    DeviceProvisioningRecipeCreated | DeviceProvisioningRecipeStatusUpdated,
    strawberry.union("ProvisioningRecipeEvent"),
]


def _attempt(payload: dict[str, Any]) -> UnsuccessfulRegisterAttemptStatus | None:
    attempt = payload.get("unsuccessfulRegisterAttemptStatus")
    return (
        UnsuccessfulRegisterAttemptStatus(warning_message=attempt["warningMessage"])
        if (attempt)
        else None
    )


def created_event(row: OutboxEvent) -> DeviceProvisioningRecipeCreated:
    document = row.document
    p = document["payload"]
    originator = p.get("originator")
    return DeviceProvisioningRecipeCreated(
        id=strawberry.ID(document["id"]),
        kind=document["kind"],
        type=document["type"],
        payload=ProvisioningRecipeCreatedPayload(
            **recipe_events.field_values(p),
            owner=EventOwner(
                ownership_type=p["owner"]["ownershipType"],
                organization_uid=p["owner"]["organizationUid"],
                parent_company_uid=p["owner"]["parentCompanyUid"],
            ),
            organization_uid=p["organizationUid"],
            status=p["status"],
            unsuccessful_register_attempt_status=_attempt(p),
            error_message=p.get("errorMessage"),
            uid=p["uid"],
            originator=Originator(
                account_id=originator.get("accountId"),
                organization_uid=originator.get("organizationUid"),
                policy_uid=originator.get("policyUid"),
            )
            if originator
            else None,
            type=p["type"],
        ),
        json=JSON(document),
        occurred_at=DateTime(from_datetime(row.created_at)),
    )


def status_event(row: OutboxEvent) -> DeviceProvisioningRecipeStatusUpdated:
    document = row.document
    p = document["payload"]
    return DeviceProvisioningRecipeStatusUpdated(
        id=strawberry.ID(document["id"]),
        kind=document["kind"],
        type=document["type"],
        payload=ProvisioningRecipeStatusUpdatedPayload(
            uid=p["uid"],
            organization_uid=p["organizationUid"],
            status=p["status"],
            error_message=p.get("errorMessage"),
            type=p["type"],
        ),
        json=JSON(document),
        occurred_at=DateTime(from_datetime(row.created_at)),
    )


def any_event(
    row: OutboxEvent,
) -> DeviceProvisioningRecipeCreated | DeviceProvisioningRecipeStatusUpdated:
    if row.type == recipe_events.CREATED:
        return created_event(row)
    return status_event(row)


def event_position(value: str | None, argument: str) -> int | None:
    """The outbox sequence number an event id names, as an argument takes one."""
    if value is None:
        return None
    # str.isdigit() takes superscripts (which int() refuses) and Arabic-Indic digits
    # (which int() reads as numbers); event ids are 20 ASCII digits naming a BIGINT.
    if not (
        value.isascii()
        and value.isdigit()
        and len(value) <= len(recipe_events.event_id(0))
        and int(value) < 2**63
    ):
        raise user_error(f"{argument} is not an event id: ASCII digits, below 2**63.", argument)
    return int(value)


@strawberry.type
class ProvisioningRecipeEventEdge:
    cursor: str = strawberry.field(
        description="The event's id: `before` of the next page back, or `after` of a "
        "subscription that should continue from this event."
    )
    node: ProvisioningRecipeEvent


@strawberry.type
class ProvisioningRecipeEventConnection:
    edges: list[ProvisioningRecipeEventEdge]
    page_info: PageInfo
    latest_event_id: strawberry.ID = strawberry.field(
        description="Where the service's event log stood when this page was read: the id "
        "of the last event it had recorded, whichever organization it belongs to "
        "(00000000000000000000 when none). As `after` of Subscription."
        "provisioningRecipeEvents it continues this page with every later event, with no "
        "gap and no duplicate, also when the page is empty."
    )


@strawberry.type
class CreateProvisioningRecipePayload:
    recipe: ProvisioningRecipe | None
    event: DeviceProvisioningRecipeCreated | None = strawberry.field(
        description="The event that was emitted, exactly as subscribers receive it."
    )
    user_errors: list[UserError]


@strawberry.type
class UpdateProvisioningRecipeStatusPayload:
    recipe: ProvisioningRecipe | None
    event: DeviceProvisioningRecipeStatusUpdated | None
    user_errors: list[UserError]

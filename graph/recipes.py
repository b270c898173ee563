"""Provisioning recipes: types, queries, mutations, and their live events."""

from collections.abc import AsyncGenerator, Awaitable, Callable
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.scalars import JSON

from graph.errors import user_error
from graph.permissions import HISTORY_READ, needs
from graph.relay import Node, PageInfo, global_id, page_size
from graph.scalars import DateTime
from models import recipe_events
from models.devices import DeviceIdentifier as IdentifierRecord
from models.instants import from_datetime
from models.recipes import OutboxEvent
from models.recipes import ProvisioningRecipe as RecipeRow
from resolvers.recipes import NewRecipe, Outcome, RecipeFilter, canonical_mac
from resolvers.recipes import UserError as UserErrorRecord

if TYPE_CHECKING:
    from graph.devices import Device, DeviceIdentifierInput

DeviceType = Annotated["Device", strawberry.lazy("graph.devices")]
DeviceInput = Annotated["DeviceIdentifierInput", strawberry.lazy("graph.devices")]
RECIPES_CURSOR = "r"


@strawberry.enum
class ProvisioningRecipeStatus(Enum):
    PENDING = "Pending"
    APPLIED = "Applied"
    FAILED = "Failed"
    INVALID = "Invalid"


@strawberry.enum
class OwnershipType(Enum):
    ORGANIZATION = "organization"


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
class ProvisioningRecipe(Node):
    id: strawberry.ID
    uid: str
    owner: RecipeOwner
    organization_uid: str
    status: ProvisioningRecipeStatus
    confirmed_ownership: bool | None
    serial_number: str | None
    mac_address: str | None
    model: str | None
    brand: str
    tag_uids: list[str] | None
    device_name: str | None
    policy_uid: str | None
    location_uid: str | None
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
    async def device(self, info: strawberry.Info) -> DeviceType | None:
        from graph.devices import load_device

        if self.row.device_kind is None or self.row.device_identifier is None:
            return None
        return await load_device(
            info, IdentifierRecord(self.row.device_kind, self.row.device_identifier)
        )

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
            id=global_id("ProvisioningRecipe", row.uid),
            uid=row.uid,
            owner=RecipeOwner(
                ownership_type=OwnershipType(row.owner_ownership_type),
                organization_uid=row.owner_organization_uid,
                parent_company_uid=row.owner_parent_company_uid,
            ),
            organization_uid=row.organization_uid,
            status=ProvisioningRecipeStatus(row.status),
            confirmed_ownership=row.confirmed_ownership,
            serial_number=row.serial_number,
            mac_address=row.mac_address,
            model=row.model,
            brand=row.brand,
            tag_uids=row.tag_uids,
            device_name=row.device_name,
            policy_uid=row.policy_uid,
            location_uid=row.location_uid,
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
    statuses: list[ProvisioningRecipeStatus] | None = None
    serial_number: str | None = None
    mac_address: str | None = None


@strawberry.input
class RecipeOwnerInput:
    ownership_type: OwnershipType = OwnershipType.ORGANIZATION
    organization_uid: str | None = None
    parent_company_uid: str | None = None


@strawberry.input
class CreateProvisioningRecipeInput:
    owner: RecipeOwnerInput
    organization_uid: str
    confirmed_ownership: bool | None = None
    serial_number: str | None = None
    mac_address: str | None = None
    model: str | None = None
    brand: str
    tag_uids: list[str] | None = None
    device_name: str | None = None
    policy_uid: str | None = None
    location_uid: str | None = None
    device: DeviceInput | None = strawberry.field(
        default=None, description="Links the recipe to an upstream device; optional."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Retrying with the same key returns the first result and emits nothing new.",
    )


@strawberry.input
class UpdateProvisioningRecipeStatusInput:
    uid: str
    status: ProvisioningRecipeStatus
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
class ProvisioningRecipeCreatedPayload:
    owner: EventOwner
    organization_uid: str
    status: str
    confirmed_ownership: bool | None
    serial_number: str | None
    mac_address: str | None
    model: str | None
    brand: str
    tag_uids: list[str] | None
    device_name: str | None
    policy_uid: str | None
    location_uid: str | None
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


@strawberry.type(description="Emitted when a recipe's status changes; payload {uid, status, ...}.")
class DeviceProvisioningRecipeStatusUpdated:
    id: strawberry.ID
    kind: str
    type: str
    payload: ProvisioningRecipeStatusUpdatedPayload
    json: JSON = strawberry.field(description=_JSON_DESCRIPTION)


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


def created_event(document: dict[str, Any]) -> DeviceProvisioningRecipeCreated:
    p = document["payload"]
    originator = p.get("originator")
    return DeviceProvisioningRecipeCreated(
        id=strawberry.ID(document["id"]),
        kind=document["kind"],
        type=document["type"],
        payload=ProvisioningRecipeCreatedPayload(
            owner=EventOwner(
                ownership_type=p["owner"]["ownershipType"],
                organization_uid=p["owner"]["organizationUid"],
                parent_company_uid=p["owner"]["parentCompanyUid"],
            ),
            organization_uid=p["organizationUid"],
            status=p["status"],
            confirmed_ownership=p.get("confirmedOwnership"),
            serial_number=p.get("serialNumber"),
            mac_address=p.get("macAddress"),
            model=p.get("model"),
            brand=p["brand"],
            tag_uids=p.get("tagUids"),
            device_name=p.get("deviceName"),
            policy_uid=p.get("policyUid"),
            location_uid=p.get("locationUid"),
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
        json=document,
    )


def status_event(document: dict[str, Any]) -> DeviceProvisioningRecipeStatusUpdated:
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
        json=document,
    )


def any_event(
    document: dict[str, Any],
) -> DeviceProvisioningRecipeCreated | DeviceProvisioningRecipeStatusUpdated:
    if document["type"] == recipe_events.CREATED:
        return created_event(document)
    return status_event(document)


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


def _settle(info: strawberry.Info, outcome: Outcome) -> None:
    if outcome.seq is not None:
        info.context.services.hub.committed()


async def create_provisioning_recipe(
    info: strawberry.Info, input: CreateProvisioningRecipeInput
) -> CreateProvisioningRecipePayload:
    from graph.devices import identifier_record

    context = info.context
    device = None
    if input.device is not None:
        try:
            device = identifier_record(input.device.kind, input.device.identifier)
        except Exception:
            device = None
            return CreateProvisioningRecipePayload(
                recipe=None,
                event=None,
                user_errors=[
                    UserError(
                        field=["input", "device", "identifier"],
                        code="INVALID_IDENTIFIER",
                        message="1 to 64 letters or digits.",
                    )
                ],
            )

    async def device_exists(identifier: IdentifierRecord) -> bool:
        return await context.devices.load(identifier) is not None

    outcome = await context.services.recipes.create(
        NewRecipe(
            organization_uid=input.organization_uid,
            brand=input.brand,
            owner_ownership_type=input.owner.ownership_type.value,
            owner_organization_uid=input.owner.organization_uid,
            owner_parent_company_uid=input.owner.parent_company_uid,
            confirmed_ownership=input.confirmed_ownership,
            serial_number=input.serial_number,
            mac_address=input.mac_address,
            model=input.model,
            tag_uids=input.tag_uids,
            device_name=input.device_name,
            policy_uid=input.policy_uid,
            location_uid=input.location_uid,
            device=device,
            idempotency_key=input.idempotency_key,
        ),
        context.principal,
        device_exists,
    )
    _settle(info, outcome)
    return CreateProvisioningRecipePayload(
        recipe=ProvisioningRecipe.of(outcome.recipe) if outcome.recipe else None,
        event=created_event(outcome.event) if outcome.event else None,
        user_errors=[UserError.of(e) for e in outcome.errors],
    )


async def update_provisioning_recipe_status(
    info: strawberry.Info, input: UpdateProvisioningRecipeStatusInput
) -> UpdateProvisioningRecipeStatusPayload:
    context = info.context
    outcome = await context.services.recipes.update_status(
        input.uid,
        input.status.value,
        context.principal,
        input.error_message,
        input.warning_message,
    )
    _settle(info, outcome)
    return UpdateProvisioningRecipeStatusPayload(
        recipe=ProvisioningRecipe.of(outcome.recipe) if outcome.recipe else None,
        event=status_event(outcome.event) if outcome.event else None,
        user_errors=[UserError.of(e) for e in outcome.errors],
    )


async def provisioning_recipe(info: strawberry.Info, uid: str) -> ProvisioningRecipe | None:
    row = await info.context.services.recipes.get(uid, info.context.principal)
    return ProvisioningRecipe.of(row) if row else None


async def recipe_connection(
    info: strawberry.Info,
    where: RecipeFilter,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> ProvisioningRecipeConnection:
    context = info.context
    store, codec = context.services.recipes, context.services.cursors
    size = page_size(first, last)
    scope = codec.scope(
        RECIPES_CURSOR,
        where.organization_uid,
        where.statuses,
        where.serial_number,
        where.mac_address,
        where.device,
    )
    bounds = {
        name: codec.decode(value, RECIPES_CURSOR, scope, 1)[0]
        for name, value in (("after", after), ("before", before))
        if value is not None
    }
    backwards = last is not None
    rows, more = await store.page(
        where, context.principal, size, bounds.get("after"), bounds.get("before"), backwards
    )
    edges = [
        ProvisioningRecipeEdge(
            cursor=codec.encode(RECIPES_CURSOR, scope, [row.id]), node=ProvisioningRecipe.of(row)
        )
        for row in rows
    ]

    async def count() -> int:
        return await store.count(where, context.principal)

    return ProvisioningRecipeConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=more if not backwards else before is not None,
            has_previous_page=more if backwards else after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        count_recipes=count,
    )


async def provisioning_recipes(
    info: strawberry.Info,
    filter: ProvisioningRecipeFilter | None = None,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> ProvisioningRecipeConnection:
    mac = None
    if filter is not None and filter.mac_address is not None:
        mac = canonical_mac(filter.mac_address)
        if mac is None:
            raise user_error("filter.macAddress is not a MAC address.", "filter")
    where = RecipeFilter(
        organization_uid=filter.organization_uid.lower()
        if filter and filter.organization_uid
        else None,
        statuses=[s.value for s in filter.statuses] if filter and filter.statuses else None,
        serial_number=filter.serial_number if filter else None,
        mac_address=mac,
    )
    return await recipe_connection(info, where, first, after, last, before)


def _accepts(
    organization_uid: str | None, types: set[str], info: strawberry.Info
) -> Callable[[OutboxEvent], bool]:
    principal = info.context.principal

    def accepts(row: OutboxEvent) -> bool:
        if row.type not in types:
            return False
        if organization_uid is not None and row.organization_uid != organization_uid:
            return False
        return principal.may_see(row.organization_uid)

    return accepts


def _after(after: strawberry.ID | None) -> int | None:
    if after is None:
        return None
    # str.isdigit() takes superscripts (which int() refuses) and Arabic-Indic digits
    # (which int() reads as numbers); event ids are 20 ASCII digits naming a BIGINT.
    text = str(after)
    if not (
        text.isascii()
        and text.isdigit()
        and len(text) <= len(recipe_events.event_id(0))
        and int(text) < 2**63
    ):
        raise user_error("after is not an event id: ASCII digits, below 2**63.", "after")
    return int(text)


async def provisioning_recipe_created(
    info: strawberry.Info,
    organization_uid: str | None = None,
    after: strawberry.ID | None = None,
) -> AsyncGenerator[DeviceProvisioningRecipeCreated, None]:
    accepts = _accepts(organization_uid, {recipe_events.CREATED}, info)
    async for row in info.context.services.hub.subscribe(accepts, _after(after)):
        yield created_event(row.document)


async def provisioning_recipe_events(
    info: strawberry.Info,
    organization_uid: str | None = None,
    after: strawberry.ID | None = None,
) -> AsyncGenerator[DeviceProvisioningRecipeCreated | DeviceProvisioningRecipeStatusUpdated, None]:
    accepts = _accepts(
        organization_uid, {recipe_events.CREATED, recipe_events.STATUS_UPDATED}, info
    )
    async for row in info.context.services.hub.subscribe(accepts, _after(after)):
        yield any_event(row.document)

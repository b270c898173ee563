"""Live recipe events: creations, and creations with status changes."""

from collections.abc import AsyncGenerator, Callable

import strawberry

from graph.context import Info
from graph.errors import user_error
from graph.permissions import needs
from graph.recipes.types import (
    DeviceProvisioningRecipeCreated,
    DeviceProvisioningRecipeStatusUpdated,
    ProvisioningRecipeEvent,
    any_event,
    created_event,
)
from graph.sharing import event_rows
from models import recipe_events
from models.principal import RECIPES_READ
from models.recipes import OutboxEvent


def _accepts(
    organization_uid: str | None, types: set[str], info: Info
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
    info: Info,
    organization_uid: str | None = None,
    after: strawberry.ID | None = None,
) -> AsyncGenerator[DeviceProvisioningRecipeCreated, None]:
    accepts = _accepts(organization_uid, {recipe_events.CREATED}, info)
    async for row in event_rows(info, accepts, _after(after)):
        yield created_event(row)


async def provisioning_recipe_events(
    info: Info,
    organization_uid: str | None = None,
    after: strawberry.ID | None = None,
) -> AsyncGenerator[DeviceProvisioningRecipeCreated | DeviceProvisioningRecipeStatusUpdated, None]:
    accepts = _accepts(
        organization_uid, {recipe_events.CREATED, recipe_events.STATUS_UPDATED}, info
    )
    async for row in event_rows(info, accepts, _after(after)):
        yield any_event(row)


@strawberry.type
class Subscription:
    # A subscription field is typed as its stream; the schema shows what the stream yields.
    provisioning_recipe_created: AsyncGenerator[DeviceProvisioningRecipeCreated, None] = (
        strawberry.subscription(
            resolver=provisioning_recipe_created,
            description="Live recipe creations, optionally for one organization. With "
            "`after` (an event id) the stream first replays every later event it still "
            "keeps, then goes live, so a client that reconnects misses nothing. Only the "
            "caller's organizations. Needs recipes:read.",
            extensions=needs(RECIPES_READ),
        )
    )
    provisioning_recipe_events: AsyncGenerator[ProvisioningRecipeEvent, None] = (
        strawberry.subscription(
            resolver=provisioning_recipe_events,
            description="Creations and status changes together, in the order they happened. "
            "Only the caller's organizations. Needs recipes:read.",
            extensions=needs(RECIPES_READ),
        )
    )

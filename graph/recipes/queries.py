"""Root fields: a recipe by uid, and pages of recipes."""

import strawberry

from graph.context import Info
from graph.errors import user_error
from graph.permissions import needs
from graph.recipes.types import (
    ProvisioningRecipe,
    ProvisioningRecipeConnection,
    ProvisioningRecipeEdge,
    ProvisioningRecipeEventConnection,
    ProvisioningRecipeEventEdge,
    ProvisioningRecipeFilter,
    any_event,
    event_position,
)
from graph.relay import node_loader, page_info, page_size
from models import recipe_events
from models.principal import RECIPES_READ
from resolvers.recipes import RecipeFilter, canonical_mac

RECIPES_CURSOR = "r"


async def provisioning_recipe(info: Info, uid: str) -> ProvisioningRecipe | None:
    row = await info.context.services.recipes.get(uid, info.context.principal)
    return ProvisioningRecipe.of(row) if row else None


async def recipe_connection(
    info: Info,
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
        page_info=page_info(
            edges,
            has_next=more if not backwards else before is not None,
            has_previous=more if backwards else after is not None,
        ),
        count_recipes=count,
    )


async def provisioning_recipes(
    info: Info,
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
        statuses=filter.statuses if filter and filter.statuses else None,
        serial_number=filter.serial_number if filter else None,
        mac_address=mac,
    )
    return await recipe_connection(info, where, first, after, last, before)


async def provisioning_recipe_events(
    info: Info,
    organization_uid: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> ProvisioningRecipeEventConnection:
    size = page_size(None, last)
    recent = await info.context.services.recipes.log.recent(
        info.context.principal,
        organization_uid.lower() if organization_uid is not None else None,
        size,
        event_position(before, "before"),
    )
    edges = [
        ProvisioningRecipeEventEdge(cursor=row.event_id, node=any_event(row))
        for row in recent.events
    ]
    return ProvisioningRecipeEventConnection(
        edges=edges,
        page_info=page_info(edges, has_next=before is not None, has_previous=recent.more),
        latest_event_id=strawberry.ID(recipe_events.event_id(recent.head)),
    )


@node_loader("ProvisioningRecipe")
async def recipe_node(info: Info, parts: list[str]) -> ProvisioningRecipe | None:
    return await provisioning_recipe(info, parts[0]) if len(parts) == 1 else None


@strawberry.type
class Query:
    provisioning_recipe: ProvisioningRecipe | None = strawberry.field(
        resolver=provisioning_recipe,
        description="The recipe with this uid, or null when there is none in the caller's "
        "organizations. Needs recipes:read.",
        extensions=needs(RECIPES_READ),
    )
    provisioning_recipes: ProvisioningRecipeConnection = strawberry.field(
        resolver=provisioning_recipes,
        description="Recipes of the caller's organizations in creation order (keyset pages, "
        "stable under inserts). Needs recipes:read.",
        extensions=needs(RECIPES_READ),
    )
    provisioning_recipe_events: ProvisioningRecipeEventConnection = strawberry.field(
        resolver=provisioning_recipe_events,
        description="The last recipe events the service still keeps (those "
        "Subscription.provisioningRecipeEvents replays), optionally for one organization, "
        "newest last; pages back with `before`. A live feed reads these, then subscribes "
        "with `after: latestEventId`. Only the caller's organizations. Needs recipes:read.",
        extensions=needs(RECIPES_READ),
    )

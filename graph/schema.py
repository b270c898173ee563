"""The schema: root fields of every domain, and the extensions every operation runs."""

from functools import partial

import strawberry
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig

from graph import devices as device_fields
from graph import recipes, reports
from graph.errors import ResponseExtensions
from graph.execution import EventExecutor
from graph.limits import QueryLimits
from graph.observability import OperationMetrics, Schema
from graph.permissions import needs, needs_scope_of_node
from graph.relay import Node, parse_global_id
from graph.scalars import SCALARS
from models.devices import IDENTIFIER_KINDS
from models.principal import HISTORY_READ, RECIPES_READ, RECIPES_WRITE, REPORTS_READ, REPORTS_WRITE


async def node(info: strawberry.Info, id: strawberry.ID) -> Node | None:
    type_name, parts = parse_global_id(id)
    if type_name == "Device" and len(parts) == 2 and parts[0] in IDENTIFIER_KINDS:
        kind = device_fields.DeviceIdentifierKind(parts[0])
        return await device_fields.device(info, kind, parts[1])
    if type_name == "ProvisioningRecipe" and len(parts) == 1:
        return await recipes.provisioning_recipe(info, parts[0])
    if type_name == "ProvisioningReportJob":
        return await reports.provisioning_report_job(info, id)
    return None


@strawberry.type
class Query:
    node: Node | None = strawberry.field(
        resolver=node,
        description="The object with this global id, or null when there is none or it is "
        "not the caller's to see. Needs the scope of its type: history:read for a Device, "
        "recipes:read for a ProvisioningRecipe, reports:read for a ProvisioningReportJob.",
        extensions=needs_scope_of_node(),
    )
    device: device_fields.Device | None = strawberry.field(
        resolver=device_fields.device,
        description="The device with this identifier, or null when the upstream does not know "
        "it. Needs history:read.",
        extensions=needs(HISTORY_READ),
    )
    devices: device_fields.DeviceConnection = strawberry.field(
        resolver=device_fields.devices,
        description="The account's devices in the upstream's order (GetDeviceList, 2,000 a "
        "call); 50 a page unless first (at most 500) says otherwise. Needs history:read.",
        extensions=needs(HISTORY_READ),
    )
    provisioning_recipe: recipes.ProvisioningRecipe | None = strawberry.field(
        resolver=recipes.provisioning_recipe,
        description="The recipe with this uid, or null when there is none in the caller's "
        "organizations. Needs recipes:read.",
        extensions=needs(RECIPES_READ),
    )
    provisioning_recipes: recipes.ProvisioningRecipeConnection = strawberry.field(
        resolver=recipes.provisioning_recipes,
        description="Recipes of the caller's organizations in creation order (keyset pages, "
        "stable under inserts). Needs recipes:read.",
        extensions=needs(RECIPES_READ),
    )
    provisioning_report: reports.ProvisioningReport = strawberry.field(
        resolver=reports.provisioning_report,
        description="A report over the devices' histories, computed in this request; "
        "for large fleets start a job instead. Its cost is in extensions.cost. Needs "
        "reports:read.",
        extensions=needs(REPORTS_READ),
    )
    provisioning_report_job: reports.ProvisioningReportJob | None = strawberry.field(
        resolver=reports.provisioning_report_job,
        description="A report job of the caller's, from any replica. Needs reports:read.",
        extensions=needs(REPORTS_READ),
    )


@strawberry.type
class Mutation:
    create_provisioning_recipe: recipes.CreateProvisioningRecipePayload = strawberry.mutation(
        resolver=recipes.create_provisioning_recipe,
        description="A recipe for one of the caller's organizations, announced to "
        "subscribers. Needs recipes:write.",
        extensions=needs(RECIPES_WRITE),
    )
    update_provisioning_recipe_status: recipes.UpdateProvisioningRecipeStatusPayload = (
        strawberry.mutation(
            resolver=recipes.update_provisioning_recipe_status,
            description="Pending -> Applied | Failed | Invalid; Failed -> Pending (a retry). "
            "Applied and Invalid are final. Needs recipes:write.",
            extensions=needs(RECIPES_WRITE),
        )
    )
    start_provisioning_report: reports.StartProvisioningReportPayload = strawberry.mutation(
        resolver=reports.start_provisioning_report,
        description="A report job that belongs to the caller. Needs reports:write.",
        extensions=needs(REPORTS_WRITE),
    )
    cancel_provisioning_report: reports.ProvisioningReportJob | None = strawberry.mutation(
        resolver=reports.cancel_provisioning_report,
        description="Stops a job of the caller's. Needs reports:write.",
        extensions=needs(REPORTS_WRITE),
    )


@strawberry.type
class Subscription:
    provisioning_recipe_created: recipes.DeviceProvisioningRecipeCreated = strawberry.subscription(
        resolver=recipes.provisioning_recipe_created,
        description="Live recipe creations, optionally for one organization. With "
        "`after` (an event id) the stream first replays every later event it still "
        "keeps, then goes live, so a client that reconnects misses nothing. Only the "
        "caller's organizations. Needs recipes:read.",
        extensions=needs(RECIPES_READ),
    )
    provisioning_recipe_events: recipes.ProvisioningRecipeEvent = strawberry.subscription(
        resolver=recipes.provisioning_recipe_events,
        description="Creations and status changes together, in the order they happened. "
        "Only the caller's organizations. Needs recipes:read.",
        extensions=needs(RECIPES_READ),
    )
    provisioning_report_progress: reports.ProvisioningReportJob = strawberry.subscription(
        resolver=reports.provisioning_report_progress,
        description="Progress of a report job until it ends; the last message carries the "
        "final state. Needs reports:read.",
        extensions=needs(REPORTS_READ),
    )


schema = Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    types=[device_fields.Device, device_fields.DeviceIdentifierInput, recipes.ProvisioningRecipe],
    # Frontends send the same few documents again and again: parse and validate each once
    # (both caches live at module level; factories, not instances, per request).
    extensions=[
        OperationMetrics,
        QueryLimits,
        ResponseExtensions,
        partial(ParserCache, maxsize=256),
        partial(ValidationCache, maxsize=256),
    ],
    config=StrawberryConfig(scalar_map=SCALARS),
    execution_context_class=EventExecutor,
)

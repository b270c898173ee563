"""The schema: root fields of every domain, and the extensions every operation runs."""

from functools import partial

import strawberry
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig

from graph import devices as device_fields
from graph import recipes, reports
from graph.errors import ResponseExtensions
from graph.relay import Node, parse_global_id
from graph.scalars import SCALARS
from models.devices import IDENTIFIER_KINDS


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
        resolver=node, description="The object with this global id, or null when there is none."
    )
    device: device_fields.Device | None = strawberry.field(
        resolver=device_fields.device,
        description="The device with this identifier, or null when the upstream does not know it.",
    )
    devices: device_fields.DeviceConnection = strawberry.field(
        resolver=device_fields.devices,
        description="The account's devices in the upstream's order (GetDeviceList, 2,000 a "
        "call); 50 a page unless first (at most 500) says otherwise.",
    )
    provisioning_recipe: recipes.ProvisioningRecipe | None = strawberry.field(
        resolver=recipes.provisioning_recipe
    )
    provisioning_recipes: recipes.ProvisioningRecipeConnection = strawberry.field(
        resolver=recipes.provisioning_recipes,
        description="Recipes in creation order (keyset pages, stable under inserts).",
    )
    provisioning_report: reports.ProvisioningReport = strawberry.field(
        resolver=reports.provisioning_report,
        description="A report over the devices' histories, computed in this request; "
        "for large fleets start a job instead. Its cost is in extensions.cost.",
    )
    provisioning_report_job: reports.ProvisioningReportJob | None = strawberry.field(
        resolver=reports.provisioning_report_job,
        description="A report job of the caller's, from any replica.",
    )


@strawberry.type
class Mutation:
    create_provisioning_recipe: recipes.CreateProvisioningRecipePayload = strawberry.mutation(
        resolver=recipes.create_provisioning_recipe
    )
    update_provisioning_recipe_status: recipes.UpdateProvisioningRecipeStatusPayload = (
        strawberry.mutation(
            resolver=recipes.update_provisioning_recipe_status,
            description="Pending -> Applied | Failed | Invalid; Failed -> Pending (a retry). "
            "Applied and Invalid are final.",
        )
    )
    start_provisioning_report: reports.StartProvisioningReportPayload = strawberry.mutation(
        resolver=reports.start_provisioning_report
    )
    cancel_provisioning_report: reports.ProvisioningReportJob | None = strawberry.mutation(
        resolver=reports.cancel_provisioning_report
    )


@strawberry.type
class Subscription:
    provisioning_recipe_created: recipes.DeviceProvisioningRecipeCreated = strawberry.subscription(
        resolver=recipes.provisioning_recipe_created,
        description="Live recipe creations, optionally for one organization. With "
        "`after` (an event id) the stream first replays every later event it still "
        "keeps, then goes live, so a client that reconnects misses nothing.",
    )
    provisioning_recipe_events: recipes.ProvisioningRecipeEvent = strawberry.subscription(
        resolver=recipes.provisioning_recipe_events,
        description="Creations and status changes together, in the order they happened.",
    )
    provisioning_report_progress: reports.ProvisioningReportJob = strawberry.subscription(
        resolver=reports.provisioning_report_progress,
        description="Progress of a report job until it ends; the last message carries the "
        "final state.",
    )


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    types=[device_fields.Device, device_fields.DeviceIdentifierInput, recipes.ProvisioningRecipe],
    # Frontends send the same few documents again and again: parse and validate each once
    # (both caches live at module level; factories, not instances, per request).
    extensions=[
        ResponseExtensions,
        partial(ParserCache, maxsize=256),
        partial(ValidationCache, maxsize=256),
    ],
    config=StrawberryConfig(scalar_map=SCALARS),
)

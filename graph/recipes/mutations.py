"""Root mutations: create a recipe, move its status."""

import strawberry

from graph.context import Info
from graph.devices.identifiers import identifier_record
from graph.permissions import needs
from graph.recipes.types import (
    CreateProvisioningRecipeInput,
    CreateProvisioningRecipePayload,
    ProvisioningRecipe,
    UpdateProvisioningRecipeStatusInput,
    UpdateProvisioningRecipeStatusPayload,
    UserError,
    created_event,
    status_event,
)
from models.devices import DeviceIdentifier as IdentifierRecord
from models.errors import UserErrorCode
from models.principal import RECIPES_WRITE
from models.recipe_fields import values_of
from resolvers.recipes import NewRecipe, Outcome


def _settle(info: Info, outcome: Outcome) -> None:
    if outcome.seq is not None:
        info.context.services.hub.committed()


async def create_provisioning_recipe(
    info: Info, input: CreateProvisioningRecipeInput
) -> CreateProvisioningRecipePayload:
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
                        code=UserErrorCode.INVALID_IDENTIFIER,
                        message="1 to 64 letters or digits.",
                    )
                ],
            )

    async def device_exists(identifier: IdentifierRecord) -> bool:
        return await context.devices.load(identifier) is not None

    outcome = await context.services.recipes.create(
        NewRecipe(
            **values_of(input),
            organization_uid=input.organization_uid,
            owner_ownership_type=input.owner.ownership_type,
            owner_organization_uid=input.owner.organization_uid,
            owner_parent_company_uid=input.owner.parent_company_uid,
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
    info: Info, input: UpdateProvisioningRecipeStatusInput
) -> UpdateProvisioningRecipeStatusPayload:
    context = info.context
    outcome = await context.services.recipes.update_status(
        input.uid,
        input.status,
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


@strawberry.type
class Mutation:
    create_provisioning_recipe: CreateProvisioningRecipePayload = strawberry.mutation(
        resolver=create_provisioning_recipe,
        description="A recipe for one of the caller's organizations, announced to "
        "subscribers. Needs recipes:write.",
        extensions=needs(RECIPES_WRITE),
    )
    update_provisioning_recipe_status: UpdateProvisioningRecipeStatusPayload = strawberry.mutation(
        resolver=update_provisioning_recipe_status,
        description="Pending -> Applied | Failed | Invalid; Failed -> Pending (a retry). "
        "Applied and Invalid are final. Needs recipes:write.",
        extensions=needs(RECIPES_WRITE),
    )

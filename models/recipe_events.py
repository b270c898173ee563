"""The domain events of recipes, in the exact JSON shape other systems consume.

``Device.ProvisioningRecipeCreated`` follows the seed document field for field: optional
payload keys are left out when absent, the owner's organization keys are null when
absent, status reads "Pending", ownershipType "organization", and payload.type repeats
the event type; the recipe's plain fields (``RecipeFields``) sit between the status and
the register attempt, in their declared order, under their names in camelCase.
``Device.ProvisioningRecipeStatusUpdated`` carries {uid, status, ...}.
"""

from typing import Any

from models.recipe_fields import RECIPE_FIELDS
from models.recipes import ProvisioningRecipe

CREATED = "Device.ProvisioningRecipeCreated"
STATUS_UPDATED = "Device.ProvisioningRecipeStatusUpdated"
KIND = "domain"


def event_id(seq: int) -> str:
    """Ids that sort as the events were emitted: the outbox sequence, zero-padded."""
    return f"{seq:020d}"


def _optional(payload: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        payload[key] = value


def created(recipe: ProvisioningRecipe, seq: int) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "owner": {
            "ownershipType": recipe.owner_ownership_type.value,
            "organizationUid": recipe.owner_organization_uid,
            "parentCompanyUid": recipe.owner_parent_company_uid,
        },
        "organizationUid": recipe.organization_uid,
        "status": recipe.status.value,
    }
    for field in RECIPE_FIELDS:
        value = getattr(recipe, field.name)
        if field.required:
            payload[field.key] = value
        else:
            _optional(payload, field.key, value)
    if recipe.warning_message is not None:
        payload["unsuccessfulRegisterAttemptStatus"] = {"warningMessage": recipe.warning_message}
    _optional(payload, "errorMessage", recipe.error_message)
    payload["uid"] = recipe.uid
    originator = _originator(recipe)
    if originator:
        payload["originator"] = originator
    payload["type"] = CREATED
    return {"id": event_id(seq), "kind": KIND, "type": CREATED, "payload": payload}


def field_values(payload: dict[str, Any]) -> dict[str, Any]:
    """The plain fields a created event's payload holds, by name; None where left out."""
    return {
        field.name: payload[field.key] if field.required else payload.get(field.key)
        for field in RECIPE_FIELDS
    }


def status_updated(recipe: ProvisioningRecipe, seq: int) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "uid": recipe.uid,
        "organizationUid": recipe.organization_uid,
        "status": recipe.status.value,
    }
    _optional(payload, "errorMessage", recipe.error_message)
    if recipe.warning_message is not None:
        payload["unsuccessfulRegisterAttemptStatus"] = {"warningMessage": recipe.warning_message}
    payload["type"] = STATUS_UPDATED
    return {"id": event_id(seq), "kind": KIND, "type": STATUS_UPDATED, "payload": payload}


def _originator(recipe: ProvisioningRecipe) -> dict[str, Any]:
    originator: dict[str, Any] = {}
    _optional(originator, "accountId", recipe.originator_account_id)
    _optional(originator, "organizationUid", recipe.originator_organization_uid)
    _optional(originator, "policyUid", recipe.originator_policy_uid)
    return originator

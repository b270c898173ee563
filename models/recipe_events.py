"""The domain events of recipes, in the exact JSON shape other systems consume.

``Device.ProvisioningRecipeCreated`` follows the seed document field for field: optional
payload keys are left out when absent, the owner's organization keys are null when
absent, status reads "Pending", ownershipType "organization", and payload.type repeats
the event type. ``Device.ProvisioningRecipeStatusUpdated`` carries {uid, status, ...}.
"""

from typing import Any

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
            "ownershipType": recipe.owner_ownership_type,
            "organizationUid": recipe.owner_organization_uid,
            "parentCompanyUid": recipe.owner_parent_company_uid,
        },
        "organizationUid": recipe.organization_uid,
        "status": recipe.status,
    }
    # Both loops below share these names, and their values differ in type.
    key: str
    value: object
    for key, value in (
        ("confirmedOwnership", recipe.confirmed_ownership),
        ("serialNumber", recipe.serial_number),
        ("macAddress", recipe.mac_address),
        ("model", recipe.model),
    ):
        _optional(payload, key, value)
    payload["brand"] = recipe.brand
    for key, value in (
        ("tagUids", recipe.tag_uids),
        ("deviceName", recipe.device_name),
        ("policyUid", recipe.policy_uid),
        ("locationUid", recipe.location_uid),
    ):
        _optional(payload, key, value)
    if recipe.warning_message is not None:
        payload["unsuccessfulRegisterAttemptStatus"] = {"warningMessage": recipe.warning_message}
    _optional(payload, "errorMessage", recipe.error_message)
    payload["uid"] = recipe.uid
    originator = _originator(recipe)
    if originator:
        payload["originator"] = originator
    payload["type"] = CREATED
    return {"id": event_id(seq), "kind": KIND, "type": CREATED, "payload": payload}


def status_updated(recipe: ProvisioningRecipe, seq: int) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "uid": recipe.uid,
        "organizationUid": recipe.organization_uid,
        "status": recipe.status,
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

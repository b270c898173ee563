"""Scopes, checked on the field that reads protected data, wherever it sits.

A root field is only one way in: a recipe links to its device, a device to its recipes, a
mutation's payload to what it wrote. So every field through which protected data of
another scope can be reached carries its own check (``needs``), and a refusal there is a
FORBIDDEN error on that field alone, before its resolver runs (so before any upstream
call). Which type holds which scope's data is said once, in ``TYPE_SCOPES``; the
authorization matrix test walks the schema with it and fails for any path that reaches
protected data without passing a check for its scope.

Organizations are enforced below, where the data is read (resolvers filter by the
principal), so that no path, whatever field it starts from, can skip them.
"""

import inspect
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions.field_extension import (
    AsyncExtensionResolver,
    FieldExtension,
    SyncExtensionResolver,
)

from graph.relay import parse_global_id
from models.errors import ErrorCode
from models.principal import (
    HISTORY_READ,
    RECIPES_READ,
    RECIPES_WRITE,
    REPORTS_READ,
    REPORTS_WRITE,
)

TYPE_SCOPES: dict[str, str | None] = {
    # Devices are the upstream's data: what it knows of a device is read with its history.
    "Device": HISTORY_READ,
    "DeviceConnection": HISTORY_READ,
    "DeviceEdge": HISTORY_READ,
    "ProvisioningEventConnection": HISTORY_READ,
    "ProvisioningEventEdge": HISTORY_READ,
    "ProvisioningEvent": HISTORY_READ,
    "ExtendedAttribute": HISTORY_READ,
    "ProvisioningRecipe": RECIPES_READ,
    "ProvisioningRecipeConnection": RECIPES_READ,
    "ProvisioningRecipeEdge": RECIPES_READ,
    "RecipeOwner": RECIPES_READ,
    "Originator": RECIPES_READ,
    "UnsuccessfulRegisterAttemptStatus": RECIPES_READ,
    "ProvisioningRecipeEvent": RECIPES_READ,
    "ProvisioningRecipeEventConnection": RECIPES_READ,
    "ProvisioningRecipeEventEdge": RECIPES_READ,
    "DeviceProvisioningRecipeCreated": RECIPES_READ,
    "DeviceProvisioningRecipeStatusUpdated": RECIPES_READ,
    "ProvisioningRecipeCreatedPayload": RECIPES_READ,
    "ProvisioningRecipeStatusUpdatedPayload": RECIPES_READ,
    "EventOwner": RECIPES_READ,
    "ProvisioningReport": REPORTS_READ,
    "ReportRow": REPORTS_READ,
    "ReportKey": REPORTS_READ,
    "ReportFailure": REPORTS_READ,
    "ProvisioningReportJob": REPORTS_READ,
    "ReportProgress": REPORTS_READ,
    # Nothing of their own: roots, wrappers and values the caller named itself.
    "Query": None,
    "Mutation": None,
    "Subscription": None,
    "CreateProvisioningRecipePayload": None,
    "UpdateProvisioningRecipeStatusPayload": None,
    "StartProvisioningReportPayload": None,
    "UserError": None,
    "PageInfo": None,
    "DeviceIdentifier": None,
}
"""The scope that reading each object, interface member or union of the schema needs.

Every such type of the schema is named here (the matrix test insists), so a new type is
classified by whoever adds it. ``Node`` is not: its scope is its implementation's."""

OBJECTS = frozenset(
    {
        "Device",
        "DeviceConnection",
        "ProvisioningEventConnection",
        "ProvisioningRecipe",
        "ProvisioningRecipeConnection",
        "ProvisioningRecipeEvent",
        "ProvisioningRecipeEventConnection",
        "DeviceProvisioningRecipeCreated",
        "DeviceProvisioningRecipeStatusUpdated",
        "ProvisioningReport",
        "ProvisioningReportJob",
    }
)
"""Protected types that are things of their own; the others are parts of the thing they
are read through (an edge, an owner, a report row).

This and ``WRITE_GRANTS`` are the policy the checks (``needs``) must implement, written
apart from them: the authorization matrix test walks the schema with the policy and
fails where the checks fall short of it or go beyond it."""

WRITE_GRANTS = {RECIPES_WRITE: RECIPES_READ, REPORTS_WRITE: REPORTS_READ}
"""What a mutation's scope lets its payload show: the object it has just written (a
recipe, its event, a report job) and that object's parts, but no other object, even of
the same scope: a job's result, another recipe, a device each need their own scope."""


def _message(scope: str) -> str:
    return f"This needs the {scope} scope."


class Scope(FieldExtension):
    """Refuses the field, before its resolver runs, to a caller without the scope."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def scope_for(self, arguments: dict[str, Any]) -> str | None:
        return self.scope

    def _check(self, info: strawberry.Info, arguments: dict[str, Any]) -> None:
        scope = self.scope_for(arguments)
        if scope is not None and scope not in info.context.principal.scopes:
            raise GraphQLError(_message(scope), extensions={"code": ErrorCode.FORBIDDEN})

    def resolve(
        self, next_: SyncExtensionResolver, source: Any, info: strawberry.Info, **kwargs: Any
    ) -> Any:
        self._check(info, kwargs)
        return next_(source, info, **kwargs)

    async def resolve_async(
        self, next_: AsyncExtensionResolver, source: Any, info: strawberry.Info, **kwargs: Any
    ) -> Any:
        self._check(info, kwargs)
        result = next_(source, info, **kwargs)
        # A subscription's resolver gives its stream, not something to await.
        return result if inspect.isasyncgen(result) else await result


class NodeScope(Scope):
    """``node``: the scope of the type its ``id`` names; none for an id of nothing."""

    def __init__(self) -> None:
        super().__init__("")

    def scope_for(self, arguments: dict[str, Any]) -> str | None:
        type_name, _ = parse_global_id(arguments["id"])
        return TYPE_SCOPES.get(type_name)


def needs(scope: str) -> list[FieldExtension]:
    """The field extensions of a field that needs ``scope``."""
    # An extension, not a directive: the scope is named in the field's description, so
    # the schema stays free of one directive per permission.
    return [Scope(scope)]


def needs_scope_of_node() -> list[FieldExtension]:
    return [NodeScope()]

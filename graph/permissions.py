"""Scopes checked per root field: a credential reaches only what its scopes grant.

Organizations are enforced below, where the data is read (resolvers filter by the
principal), so that no path, whatever field it starts from, can skip them.
"""

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension

from models.principal import Principal

FORBIDDEN = "FORBIDDEN"


def _message(scope: str) -> str:
    return f"This needs the {scope} scope."


def require(principal: Principal, scope: str) -> None:
    """For fields whose scope depends on what they return (``node``)."""
    if scope not in principal.scopes:
        raise GraphQLError(_message(scope), extensions={"code": FORBIDDEN})


class _Scope(BasePermission):
    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.message = _message(scope)
        self.error_extensions = {"code": FORBIDDEN}

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return self.scope in info.context.principal.scopes


def needs(scope: str) -> list[FieldExtension]:
    """The field extensions of a root field that needs ``scope``."""
    # Without directives: the scope is named in the field's description instead, so the
    # schema stays free of one directive per permission class.
    return [PermissionExtension(permissions=[_Scope(scope)], use_directives=False)]

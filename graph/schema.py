"""The schema: root fields of every domain, and the extensions every operation runs."""

import strawberry
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter
from strawberry.tools import merge_types

from graph.context import Info
from graph.devices import queries as devices
from graph.devices.identifiers import DeviceIdentifierInput
from graph.devices.types import Device
from graph.errors import ERROR_CODES, WARNING_CODES
from graph.execution import EventExecutor
from graph.observability import OperationHooks, Schema
from graph.permissions import needs_scope_of_node
from graph.recipes import mutations as recipe_mutations
from graph.recipes import queries as recipe_queries
from graph.recipes import subscriptions as recipe_subscriptions
from graph.recipes.types import ProvisioningRecipe
from graph.relay import Node, load_node, parse_global_id
from graph.reports import mutations as report_mutations
from graph.reports import queries as report_queries
from graph.reports import subscriptions as report_subscriptions
from graph.scalars import SCALARS
from graph.tracing import tracing


async def node(info: Info, id: strawberry.ID) -> Node | None:
    type_name, parts = parse_global_id(id)
    return await load_node(info, type_name, parts)


class Names(NameConverter):
    """Strawberry names each argument anew on every call of its resolver (nine camel-case
    conversions for a history page, ~6 us): each name is converted once here."""

    def __init__(self) -> None:
        super().__init__()
        self._converted: dict[str, str] = {}

    def apply_naming_config(self, name: str) -> str:
        converted = self._converted.get(name)
        if converted is None:
            converted = self._converted[name] = super().apply_naming_config(name)
        return converted


@strawberry.type
class NodeQuery:
    node: Node | None = strawberry.field(
        resolver=node,
        description="The object with this global id, or null when there is none or it is "
        "not the caller's to see. Needs the scope of its type: history:read for a Device, "
        "recipes:read for a ProvisioningRecipe, reports:read for a ProvisioningReportJob.",
        extensions=needs_scope_of_node(),
    )


# Each domain brings its own root fields; the order here is the order in the schema.
Query = merge_types("Query", (NodeQuery, devices.Query, recipe_queries.Query, report_queries.Query))
Mutation = merge_types("Mutation", (recipe_mutations.Mutation, report_mutations.Mutation))
Subscription = merge_types(
    "Subscription", (recipe_subscriptions.Subscription, report_subscriptions.Subscription)
)

schema = Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    types=[Device, DeviceIdentifierInput, ProvisioningRecipe, ERROR_CODES, WARNING_CODES],
    # Factories, not instances: Strawberry makes each request its own.
    extensions=[
        # First, so that its span holds the others' work: spans for the operation and
        # for the fields that read the upstream, only while tracing is on.
        tracing(
            {
                "Query.device",
                "Query.devices",
                "Query.node",
                "Device.provisioningHistory",
                "ProvisioningEventConnection.totalCount",
                "Query.provisioningReport",
            }
        ),
        # Limits, metrics, the response's extensions, and each document parsed and
        # validated once (frontends send the same few again and again).
        OperationHooks,
    ],
    config=StrawberryConfig(scalar_map=SCALARS, name_converter=Names()),
    execution_context_class=EventExecutor,
)

"""What one GraphQL operation may ask for, refused before anything runs.

Depth, tokens and aliases reuse Strawberry's limiters (their validation rules and its
parser's token budget), with limits read from the settings per request and errors that
say QUERY_TOO_COMPLEX (the parser's refusal is marked by graph.observability, the first
to see it). The cost bound is our own: it needs the variables, so it is checked once
validation has passed, just before execution.
"""

from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    get_named_type,
    get_operation_ast,
    value_from_ast_untyped,
)
from strawberry.extensions import SchemaExtension
from strawberry.extensions.max_aliases import create_validator as aliases_validator
from strawberry.extensions.query_depth_limiter import create_validator as depth_validator

from graph.context import Limits
from graph.relay import DEFAULT_PAGE, MAX_PAGE

QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
_REPORT_FIELD = "provisioningReport"  # reads every history of its devices in the request
_HISTORY = "ProvisioningEventConnection"
FULL_RANGE_READ = 10 * MAX_PAGE
"""What a read that may take a history's whole range costs: ten full pages, as many
events as ten upstream windows hold. Such reads are the history's ``totalCount`` (it
counts every event of the range) and a filtered page (it reads on until it has its
matches, to the end of the range where there are none). Their real price grows with the
history (a 30,000-event one takes 61 calls forward, and searching it backwards for a
match that is not there far more), which nothing knows before running: so at the
default MAX_QUERY_COST an operation holds at most ten of them, and the budget of
upstream calls per request (MAX_UPSTREAM_CALLS_PER_REQUEST) bounds what they spend."""


def too_complex(message: str, limit: str, **details: int) -> GraphQLError:
    return GraphQLError(message, extensions={"code": QUERY_TOO_COMPLEX, "limit": limit, **details})


def _replacing_errors(
    rule: type[ValidationRule], error: Callable[[], GraphQLError]
) -> type[ValidationRule]:
    """``rule``, reporting one typed error of ours instead of its own."""

    class Replacing(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            found: list[GraphQLError] = []
            report = context.on_error
            context.on_error = found.append  # type: ignore[method-assign]
            try:
                rule(context)  # Strawberry's limiters do all their work when constructed
            except KeyError:
                pass  # a spread of an unknown fragment: KnownFragmentNamesRule reports it
            finally:
                context.on_error = report  # type: ignore[method-assign]
            if found:
                context.report_error(error())

    return Replacing


# Cached, so that every request with the same limits has the same rules and the
# validation cache (keyed by the rules) keeps working.
@cache
def _depth_rule(max_depth: int) -> type[ValidationRule]:
    return _replacing_errors(
        depth_validator(max_depth, None),
        lambda: too_complex(
            f"The operation nests fields more than {max_depth} levels deep.",
            "depth",
            maximum=max_depth,
        ),
    )


@cache
def _aliases_rule(max_aliases: int) -> type[ValidationRule]:
    return _replacing_errors(
        aliases_validator(max_aliases),
        lambda: too_complex(
            f"The document has more than {max_aliases} aliases.", "aliases", maximum=max_aliases
        ),
    )


class _Cost:
    """An operation's cost: each connection counts its page size times the page sizes
    of the connections around it, each full-range read of a history FULL_RANGE_READ
    times them, and a report counts its devices.

    Left unpriced: a recipe connection's totalCount (a database count); a backward
    history page without filter (its search takes a bounded number of windows, about
    60 for 500 events); device lookups (a request walks the device list at most once,
    and probes each device it lacks once); a report's devices beyond one each (reports
    exist to read whole ranges, REPORT_MAX_DEVICES bounds them). The budget of upstream
    calls per request bounds all of these.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def _argument(self, field: FieldNode, name: str) -> Any:
        for argument in field.arguments or ():
            if argument.name.value == name:
                return value_from_ast_untyped(argument.value, self.variables)
        return None

    def _page(self, field: FieldNode) -> int:
        size = self._argument(field, "first")
        size = self._argument(field, "last") if size is None else size
        if not isinstance(size, int):
            return DEFAULT_PAGE
        return min(max(size, 0), MAX_PAGE)  # beyond that, the argument check says why

    def _full_reads(self, field: FieldNode, page: int) -> int:
        """How many reads of a history connection may take its whole range: its count,
        and a filtered page that must find a match (an empty page forwards stops after
        one window; backwards it still looks for one match, to tell hasPreviousPage)."""
        filter = self._argument(field, "filter")
        filtered = isinstance(filter, dict) and any(v is not None for v in filter.values())
        backward = self._argument(field, "last") is not None
        counted = field.selection_set is not None and self._selects(
            field.selection_set, "totalCount"
        )
        return int(filtered and (page > 0 or backward)) + int(counted)

    def _selects(self, selections: SelectionSetNode, name: str) -> bool:
        """Whether the selection set asks for field ``name`` itself, through fragments too."""
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                if selection.name.value == name:
                    return True
            elif isinstance(selection, FragmentSpreadNode):
                if self._selects(self.fragments[selection.name.value].selection_set, name):
                    return True
            elif self._selects(selection.selection_set, name):
                return True
        return False

    def _devices(self, field: FieldNode) -> int:
        report = self._argument(field, "input")
        devices = report.get("devices") if isinstance(report, dict) else None
        return len(devices) if isinstance(devices, list) else 0

    def of(self, selections: SelectionSetNode, parent: Any, multiplier: int) -> int:
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                definition = getattr(parent, "fields", {}).get(selection.name.value)
                if definition is None:
                    continue  # __typename and introspection
                inner = multiplier
                if "first" in definition.args or "last" in definition.args:
                    page = self._page(selection)
                    inner = multiplier * page
                    total += inner
                    if get_named_type(definition.type).name == _HISTORY:
                        reads = self._full_reads(selection, page)
                        total += multiplier * reads * FULL_RANGE_READ
                if selection.name.value == _REPORT_FIELD:
                    total += multiplier * self._devices(selection)
                if selection.selection_set is not None:
                    total += self.of(
                        selection.selection_set, get_named_type(definition.type), inner
                    )
            else:
                if isinstance(selection, FragmentSpreadNode):
                    fragment = self.fragments[selection.name.value]
                    condition, inner_set = fragment.type_condition, fragment.selection_set
                else:
                    assert isinstance(selection, InlineFragmentNode)
                    condition, inner_set = selection.type_condition, selection.selection_set
                typed = self.schema.get_type(condition.name.value) if condition else parent
                total += self.of(inner_set, typed, multiplier)
        return total


class QueryLimits(SchemaExtension):
    """Depth, tokens, aliases and cost, as the settings bound them."""

    def _settings(self) -> Limits:
        limits: Limits = self.execution_context.context.services.limits
        return limits

    def on_operation(self) -> Iterator[None]:
        settings = self._settings()
        context = self.execution_context
        context.parse_options["max_tokens"] = settings.max_query_tokens
        context.validation_rules = (
            *context.validation_rules,
            _depth_rule(settings.max_query_depth),
            _aliases_rule(settings.max_query_aliases),
        )
        yield

    def on_execute(self) -> Iterator[None]:
        maximum = self._settings().max_query_cost
        context = self.execution_context
        document = context.graphql_document
        operation = get_operation_ast(document, context.operation_name) if document else None
        if document is not None and operation is not None:
            fragments = {
                d.name.value: d
                for d in document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            # Declared defaults count too: `$first: Int = 500` pages by 500.
            variables = {
                d.variable.name.value: value_from_ast_untyped(d.default_value)
                for d in operation.variable_definitions or ()
                if d.default_value is not None
            }
            variables.update(context.variables or {})
            schema = context.schema._schema
            cost = _Cost(schema, fragments, variables).of(
                operation.selection_set, schema.get_root_type(operation.operation), 1
            )
            if cost > maximum:
                raise too_complex(
                    f"The operation could cost {cost} (page sizes times the page sizes "
                    f"around them, {FULL_RANGE_READ} for each history totalCount or "
                    f"filtered page, and report devices); at most {maximum} is allowed.",
                    "cost",
                    cost=cost,
                    maximum=maximum,
                )
        yield


def parse_refused(error: GraphQLSyntaxError) -> bool:
    """Whether the parser gave up on a size limit (MAX_QUERY_TOKENS) rather than on bad
    syntax: graphql-core ends all such messages this way."""
    return error.message.endswith("Parsing aborted.")

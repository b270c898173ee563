"""What one GraphQL operation may ask for, refused before anything runs; and whether it
may introspect the schema (INTROSPECTION).

Depth and aliases are validation rules of our own, tokens the parser's budget
(``ExecutionContext.parse_options``, as Strawberry's MaxTokensLimiter sets it), with limits
read from the settings per request and errors that say QUERY_TOO_COMPLEX (the parser's
refusal is marked by graph.observability, the first to see it). Strawberry's own
QueryDepthLimiter and MaxAliasesLimiter take their limits once, for every request of the
schema, where ours are each service's. The cost bound needs the variables, so it is
checked once validation has passed, just before execution; it is kept per document and
values of the variables it reads. Introspection is refused the
same way, with graphql-core's NoSchemaIntrospectionCustomRule added per request, where
Strawberry's DisableIntrospection would refuse it for every service of the schema.
"""

from collections.abc import Hashable, Iterator
from functools import cache, lru_cache
from typing import Any

import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    ListValueNode,
    NoSchemaIntrospectionCustomRule,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    ValidationContext,
    ValidationRule,
    ValueNode,
    VariableNode,
    build_schema,
    get_named_type,
    get_operation_ast,
    value_from_ast_untyped,
)
from strawberry.types import ExecutionContext

from graph.context import Limits
from graph.relay import DEFAULT_PAGE, MAX_PAGE
from models.errors import ErrorCode

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
    return GraphQLError(
        message, extensions={"code": ErrorCode.QUERY_TOO_COMPLEX, "limit": limit, **details}
    )


class _Measure:
    """How deep selections nest and how many aliases they hold, counted as Strawberry's
    limiters count them: root fields are level 0, introspection fields add no depth, and
    a fragment counts wherever it is spread. Each fragment is walked once, so a document
    that spreads fragments within fragments costs no more than its length to measure."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self._fragments = fragments
        self._measured: dict[str, tuple[int, int]] = {}
        self._walking: set[str] = set()

    def of(self, selections: SelectionSetNode) -> tuple[int, int]:
        """The levels nested below ``selections``, and the aliases they hold."""
        depth = aliases = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                aliases += selection.alias is not None
                if selection.selection_set is None:
                    continue
                below, inner = self.of(selection.selection_set)
                aliases += inner
                if not selection.name.value.startswith("__"):
                    depth = max(depth, 1 + below)
            else:
                if isinstance(selection, FragmentSpreadNode):
                    below, inner = self._fragment(selection.name.value)
                else:
                    assert isinstance(selection, InlineFragmentNode)
                    below, inner = self.of(selection.selection_set)
                depth, aliases = max(depth, below), aliases + inner
        return depth, aliases

    def _fragment(self, name: str) -> tuple[int, int]:
        measured = self._measured.get(name)
        if measured is not None:
            return measured
        fragment = self._fragments.get(name)
        if fragment is None or name in self._walking:
            # Unknown, or spread within itself: KnownFragmentNamesRule and
            # NoFragmentCyclesRule refuse the document.
            return 0, 0
        self._walking.add(name)
        measured = self._measured[name] = self.of(fragment.selection_set)
        self._walking.discard(name)
        return measured


def _measure(document: DocumentNode) -> tuple[int, int]:
    """How deep the document's deepest operation nests, and how many aliases all hold."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    measure = _Measure(fragments)
    measured = [
        measure.of(d.selection_set)
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
    ]
    return max((depth for depth, _ in measured), default=0), sum(a for _, a in measured)


# Cached, so that every request with the same limits has the same rule and the
# validation cache (keyed by the rules) keeps working.
@cache
def _bounds_rule(max_depth: int, max_aliases: int) -> type[ValidationRule]:
    class Bounds(ValidationRule):
        """Depth and aliases, one QUERY_TOO_COMPLEX error for each bound exceeded."""

        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            # Measured here rather than while visiting, so that these errors come first,
            # as the limiters' did: a document too large says so before anything else.
            depth, aliases = _measure(context.document)
            if depth > max_depth:
                context.report_error(
                    too_complex(
                        f"The operation nests fields more than {max_depth} levels deep.",
                        "depth",
                        maximum=max_depth,
                    )
                )
            if aliases > max_aliases:
                context.report_error(
                    too_complex(
                        f"The document has more than {max_aliases} aliases.",
                        "aliases",
                        maximum=max_aliases,
                    )
                )

    return Bounds


@cache
def _type_system(schema: strawberry.Schema) -> GraphQLSchema:
    """The schema's types as graphql-core builds them from its SDL (``Schema.as_str``),
    which is all the cost needs: fields, their arguments and their types."""
    return build_schema(schema.as_str())


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
        self._selected: dict[tuple[str, str], bool] = {}
        self._fragment_costs: dict[str, int] = {}

    def _argument(self, field: FieldNode, name: str) -> Any:
        for argument in field.arguments or ():
            if argument.name.value == name:
                value = value_from_ast_untyped(argument.value, self.variables)
                # A variable the request leaves out is no argument at all: `first: $first`
                # without $first must not hide `last: 500` behind the default page.
                return None if value is Undefined else value
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
                found = selection.name.value == name
            elif isinstance(selection, FragmentSpreadNode):
                found = self._fragment_selects(selection.name.value, name)
            else:
                assert isinstance(selection, InlineFragmentNode)
                found = self._selects(selection.selection_set, name)
            if found:
                return True
        return False

    def _fragment_selects(self, fragment: str, name: str) -> bool:
        # Looked at once however often it is spread: fragments spread twice within
        # fragments spread twice would otherwise take exponential time.
        key = (fragment, name)
        if key not in self._selected:
            self._selected[key] = self._selects(self.fragments[fragment].selection_set, name)
        return self._selected[key]

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
            elif isinstance(selection, FragmentSpreadNode):
                total += multiplier * self._fragment_cost(selection.name.value)
            else:
                assert isinstance(selection, InlineFragmentNode)
                condition = selection.type_condition
                typed = self.schema.get_type(condition.name.value) if condition else parent
                total += self.of(selection.selection_set, typed, multiplier)
        return total

    def _fragment_cost(self, name: str) -> int:
        """What one spread of the fragment costs outside any page. A cost is the pages
        around it times what lies within, so each fragment is walked once, however often
        it is spread (as for ``_selects``)."""
        cost = self._fragment_costs.get(name)
        if cost is None:
            fragment = self.fragments[name]
            typed = self.schema.get_type(fragment.type_condition.name.value)
            cost = self._fragment_costs[name] = self.of(fragment.selection_set, typed, 1)
        return cost


class _Same:
    """A key equal only to a key of the same object: AST nodes hash their whole tree."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.value is self.value


_ABSENT = object()
_PRICED_ARGUMENTS = frozenset({"first", "last", "filter", "input"})
"""The arguments a cost reads (``_Cost._argument``): its variables are all it depends on."""
COSTS_KEPT = 64
"""Costs kept for each operation, by the values of its priced variables."""


def _frozen(value: Any) -> Hashable:
    """A variable's value as a key: by type too, as the cost tells 1 from 1.0 and True."""
    if isinstance(value, dict):
        return (dict, tuple(sorted((key, _frozen(item)) for key, item in value.items())))
    if isinstance(value, list):
        return (list, tuple(_frozen(item) for item in value))
    return (type(value), value)


class _Priced:
    """An operation of a document, and what it costs for the priced variables' values."""

    def __init__(
        self, schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode
    ) -> None:
        self.schema = schema
        self.operation = operation
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        # Declared defaults count too: `$first: Int = 500` pages by 500.
        self.defaults = {
            d.variable.name.value: value_from_ast_untyped(d.default_value)
            for d in operation.variable_definitions or ()
            if d.default_value is not None
        }
        names: set[str] = set()
        for node in (operation, *self.fragments.values()):
            _priced_variables(node.selection_set, names)
        self.names = tuple(sorted(names))
        self.costs: dict[Hashable, int] = {}

    def cost(self, variables: dict[str, Any]) -> int:
        defaults = self.defaults
        key = tuple(_frozen(variables.get(n, defaults.get(n, _ABSENT))) for n in self.names)
        try:
            cost = self.costs.get(key)
        except TypeError:  # not JSON: priced every time
            return self._walk(variables)
        if cost is None:
            if len(self.costs) >= COSTS_KEPT:
                self.costs.clear()
            cost = self.costs[key] = self._walk(variables)
        return cost

    def _walk(self, variables: dict[str, Any]) -> int:
        merged = {**self.defaults, **variables}
        root = self.schema.get_root_type(self.operation.operation)
        return _Cost(self.schema, self.fragments, merged).of(self.operation.selection_set, root, 1)


def _priced_variables(selections: SelectionSetNode, names: set[str]) -> None:
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            for argument in selection.arguments or ():
                if argument.name.value in _PRICED_ARGUMENTS:
                    names.update(
                        node.name.value
                        for node in _walk_values(argument.value)
                        if isinstance(node, VariableNode)
                    )
            if selection.selection_set is not None:
                _priced_variables(selection.selection_set, names)
        elif isinstance(selection, InlineFragmentNode):
            _priced_variables(selection.selection_set, names)
        # A fragment spread: its definition is walked on its own.


def _walk_values(value: ValueNode) -> Iterator[ValueNode]:
    yield value
    if isinstance(value, ListValueNode):
        for item in value.values:
            yield from _walk_values(item)
    elif isinstance(value, ObjectValueNode):
        for field in value.fields:
            yield from _walk_values(field.value)


@lru_cache(maxsize=256)
def _priced(
    schema: strawberry.Schema, document: _Same, operation_name: str | None
) -> _Priced | None:
    # The key holds the document: its id is not reused while its costs are kept.
    assert isinstance(document.value, DocumentNode)
    operation = get_operation_ast(document.value, operation_name)
    if operation is None:
        return None
    return _Priced(_type_system(schema), document.value, operation)


def limit(context: ExecutionContext, settings: Limits) -> None:
    """Puts the settings' bounds on depth, tokens, aliases and introspection."""
    context.parse_options["max_tokens"] = settings.max_query_tokens
    rules = _bounds_rule(settings.max_query_depth, settings.max_query_aliases)
    if settings.introspection:
        context.validation_rules = (*context.validation_rules, rules)
    else:
        # __schema and __type refused (GRAPHQL_VALIDATION_FAILED); __typename stays.
        context.validation_rules = (
            *context.validation_rules,
            rules,
            NoSchemaIntrospectionCustomRule,
        )


def check_cost(context: ExecutionContext, maximum: int) -> None:
    """Refuses a valid operation that could cost more than ``maximum``. An operation's
    cost is kept for the values of the variables it reads (pages and filters, never a
    cursor), so a client paging with one document prices it once."""
    document = context.graphql_document
    if document is None:
        return
    priced = _priced(context.schema, _Same(document), context.operation_name)
    if priced is None:
        return
    cost = priced.cost(context.variables or {})
    if cost > maximum:
        raise too_complex(
            f"The operation could cost {cost} (page sizes times the page sizes "
            f"around them, {FULL_RANGE_READ} for each history totalCount or "
            f"filtered page, and report devices); at most {maximum} is allowed.",
            "cost",
            cost=cost,
            maximum=maximum,
        )


def parse_refused(error: GraphQLSyntaxError) -> bool:
    """Whether the parser gave up on a size limit (MAX_QUERY_TOKENS) rather than on bad
    syntax: graphql-core ends all such messages this way."""
    return error.message.endswith("Parsing aborted.")

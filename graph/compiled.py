"""Compiled plans for selections of plain fields: records straight into response dicts.

graphql-core completes every field of every object one call at a time (a resolve info,
a path, the resolver through the middleware, an awaitable check, then the completion of
the value: its issue #189): a warm 500-event page of history took 46 ms here, 8 ms with
plans. Most of a connection is fields that only read an attribute of a record, so the
executor (``graph.execution``) asks here for a plan of each object or list value it
completes: the selection below it compiled, once per document (the schema's parser cache
gives a document's text the same nodes every time) and values of the variables its
``@skip``/``@include`` read, into Python source that builds the response's dicts as
graphql-core would: aliases, ``__typename``, inline fragments and fragment spreads,
merged fields and their key order, nullability, each scalar's and enum's own output
coercion.

A plan decides nothing graphql-core might decide otherwise. Whatever it cannot complete
itself (a null where the schema says non-null, a value its scalar refuses or coerces to
null, an exception, an awaitable, an iterable other than a list or tuple) makes the whole
plan give up on the value it was given, and the executor completes that value by
graphql-core's route, where each child value may again take a plan of its own: errors,
their paths and their propagation are graphql-core's own.

A field is plain when Strawberry would read it with its default resolver (``getattr`` of
the Python name: no resolver, no arguments, no field extensions, hence no scope check of
``graph.permissions``, no permission classes) and no schema extension's ``resolve`` hook
wraps it. A type is plannable when it is an object type whose ``is_type_of``, if any, is
the one Strawberry generates for interface members. Not covered, so left to graphql-core:
abstract types, fields with resolvers, directives other than ``@skip``/``@include``,
fragment arguments, ``@defer``/``@stream``.

A record of a ``Remembered`` class keeps what the last plan to complete it made of it, and
that plan hands out the same dict again: its own fields, and everything below them, never
change. A warm page of history thus costs a lookup an edge (``graph.history.connection``).
"""

import keyword
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CoroutineType, GeneratorType
from typing import Any, Protocol, runtime_checkable

from graphql import (
    Executor,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLBoolean,
    GraphQLField,
    GraphQLID,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLString,
    InlineFragmentNode,
    MiddlewareManager,
    SelectionSetNode,
    Undefined,
    VariableNode,
    is_leaf_type,
)
from graphql.execution.collect_fields import FieldDetailsList, FragmentDetails
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.field import StrawberryField

SELECTIONS = 8192
"""Selections (a type and the field nodes of one document that select it) kept planned
at most. Each goes with its document; this bounds documents kept alive elsewhere (the
parser and validation caches keep 256 each)."""
VARIANTS = 64
"""Plans kept for one selection, one for each values of the variables it reads."""

_DIRECTIVES = frozenset({"skip", "include"})
_NOTHING: frozenset[str] = frozenset()
_MISSING = object()
_GENERIC_GETATTRIBUTE: tuple[object, ...] = (object.__getattribute__, tuple.__getattribute__)


class Remembered:
    """A record whose completion a plan may keep on it, and hand out again.

    For records that never change, nor anything a plan reads of them (attributes,
    properties, their values down to the leaves), and whose completions nobody changes:
    a response's dicts are only ever encoded. One completion is kept, the last plan's,
    with that plan's key, in one attribute (a thread sees the pair whole): a dict of
    them would cost a record more than its completion.
    """

    __slots__ = ("completion",)

    def __init__(self) -> None:
        self.completion: tuple[object, dict[str, Any]] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _remembered_classes.add(cls)


_remembered_classes: set[type] = set()


class Unplanned(Exception):
    """A plan met a value it leaves to graphql-core."""


class _NotPlain(Exception):
    """The selection has a field or type no plan completes as graphql-core would."""


@runtime_checkable
class SelectiveMiddleware(Protocol):
    """A resolve hook that passes every field but the ones it names straight through,
    unchanged: plans may complete the others themselves."""

    @property
    def wrapped_fields(self) -> frozenset[str]:
        """``Type.field`` coordinates of the fields the hook does more for."""
        ...


def unplannable_fields(middleware: MiddlewareManager | None) -> frozenset[str] | None:
    """The fields no plan may complete under these middlewares; None when a middleware
    may touch any field, so that no plan may run at all."""
    if middleware is None or not middleware.middlewares:
        return _NOTHING
    wrapped: set[str] = set()
    for hook in middleware.middlewares:
        if not isinstance(hook, SelectiveMiddleware):
            return None
        wrapped |= hook.wrapped_fields
    return frozenset(wrapped)


@dataclass(eq=False)
class Plan:
    """One selection of one type, compiled; how often it completed a value itself, and
    how often it left one to graphql-core."""

    type_name: str
    run: Callable[[Any], Any]
    hits: int = 0
    fallbacks: int = 0


@dataclass(eq=False)
class _Selection:
    anchors: tuple[weakref.ref[Any], ...]
    """The field nodes whose ids (with the return type's) key this entry: when one goes,
    with its document, so does the entry, before another object can take its id."""
    fragments: tuple[tuple[str, weakref.ref[FragmentDefinitionNode]], ...]
    """The fragment definitions the selection spreads: the document's own."""
    variables: tuple[str, ...] | None
    """The variables its ``@skip`` and ``@include`` read; None if it uses a directive or
    fragment feature that no plan follows."""
    plans: dict[tuple[object, ...], Plan | None] = field(default_factory=dict)


# Single dict operations only, atomic under the GIL: the entries' weakref callbacks run
# whenever a document is collected, in whatever thread, even inside another operation.
_selections: dict[tuple[object, ...], _Selection] = {}


def plans() -> list[Plan]:
    """The plans held now (for tests and diagnostics)."""
    variants = [list(s.plans.values()) for s in list(_selections.values())]
    return [plan for plans in variants for plan in plans if plan is not None]


def plan_for(
    executor: Executor[Any],
    return_type: GraphQLList[Any] | GraphQLObjectType,
    field_details_list: FieldDetailsList,
    unplannable: frozenset[str],
) -> Plan | None:
    """The plan completing values of ``return_type`` selected by these fields, or None."""
    for entry in field_details_list:
        if entry.defer_usage is not None or entry.fragment_variable_values is not None:
            return None
    nodes = tuple(entry.node for entry in field_details_list)
    key = (id(return_type), *map(id, nodes), unplannable, executor.is_awaitable)
    selection = _selections.get(key)
    if selection is None:
        selection = _remember(key, nodes, executor.fragments)
    if selection.variables is None:
        return None
    for name, definition in selection.fragments:
        fragment = executor.fragments.get(name)
        if fragment is None or fragment.definition is not definition():
            return None  # the same nodes in another document: never in practice, not planned
    coerced = executor.variable_values.coerced
    values = tuple(coerced.get(name, _MISSING) for name in selection.variables)
    plan = selection.plans.get(values, _MISSING)
    if isinstance(plan, Plan) or plan is None:
        return plan
    try:
        plan = _Compiler(executor, unplannable).plan(return_type, field_details_list)
    except _NotPlain:
        plan = None
    except Exception:  # e.g. a directive's variable graphql-core refuses: its route says so
        return None
    if len(selection.plans) >= VARIANTS:
        selection.plans.clear()
    selection.plans[values] = plan
    return plan


def _remember(
    key: tuple[object, ...], nodes: tuple[FieldNode, ...], fragments: dict[str, FragmentDetails]
) -> _Selection:
    def forget(_: object) -> None:
        _selections.pop(key, None)

    variables, spread = _scan(nodes, fragments)
    selection = _Selection(
        tuple(weakref.ref(node, forget) for node in nodes),
        tuple((name, weakref.ref(definition, forget)) for name, definition in spread.items()),
        variables,
    )
    while len(_selections) >= SELECTIONS:  # documents kept alive elsewhere: the oldest go
        _selections.pop(next(iter(_selections)), None)
    _selections[key] = selection
    return selection


def _scan(
    nodes: tuple[FieldNode, ...], fragments: dict[str, FragmentDetails]
) -> tuple[tuple[str, ...] | None, dict[str, FragmentDefinitionNode]]:
    """What decides the selection's plans: the variables its directives read (None if it
    uses a directive or fragment feature no plan follows), and the fragments it spreads."""
    variables: dict[str, None] = {}
    spread: dict[str, FragmentDefinitionNode] = {}

    def follows(node: Any) -> bool:
        for directive in node.directives or ():
            if directive.name.value not in _DIRECTIVES:
                return False
            for argument in directive.arguments or ():
                if isinstance(argument.value, VariableNode):
                    variables[argument.value.name.value] = None
        return True

    pending: list[SelectionSetNode] = []
    for node in nodes:
        if not follows(node):
            return None, {}
        if node.selection_set is not None:
            pending.append(node.selection_set)
    while pending:
        for selection in pending.pop().selections:
            if not follows(selection):
                return None, {}
            if isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                details = fragments.get(name)
                if (
                    selection.arguments
                    or details is None
                    or details.variable_signatures
                    or details.definition.directives
                ):
                    return None, {}
                if name not in spread:
                    spread[name] = details.definition
                    pending.append(details.definition.selection_set)
            elif isinstance(selection, FieldNode | InlineFragmentNode) and selection.selection_set:
                pending.append(selection.selection_set)
    return tuple(variables), spread


def _attribute(parent: GraphQLObjectType, name: str, unplannable: frozenset[str]) -> str:
    """The Python attribute that Strawberry's default resolver reads for a plain field."""
    graphql_field: GraphQLField | None = parent.fields.get(name)
    if graphql_field is None or graphql_field.args or f"{parent.name}.{name}" in unplannable:
        raise _NotPlain
    definition = (graphql_field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if (
        not isinstance(definition, StrawberryField)
        or type(definition).get_result is not StrawberryField.get_result
        or definition.base_resolver is not None
        or definition.extensions
        or definition.permission_classes
        or definition.is_subscription
        or definition.default_resolver is not getattr
    ):
        raise _NotPlain
    return definition.python_name


def _exact_class(type_: GraphQLLeafType) -> str | None:
    """The class whose instances the type's output coercion returns as they are."""
    if isinstance(type_, GraphQLScalarType):
        coerce = type_.coerce_output_value
        if coerce is GraphQLString.coerce_output_value or coerce is GraphQLID.coerce_output_value:
            return "str"
        if coerce is GraphQLBoolean.coerce_output_value:
            return "bool"
    return None


def _alike(kind: type) -> bool:
    """Whether every instance of ``kind`` is, to graphql-core, what one of them is: no
    instance attributes, no dynamic lookups, no way to be awaitable or an exception."""
    return (
        kind.__dictoffset__ == 0
        and kind.__getattribute__ in _GENERIC_GETATTRIBUTE
        and not hasattr(kind, "__getattr__")
        and not hasattr(kind, "__await__")
        and not issubclass(kind, (BaseException, CoroutineType, GeneratorType))
        and not any("__class__" in vars(base) for base in kind.__mro__[:-1])
    )


_BUILTIN = frozenset({str, int, float, bool})
_plain_classes: set[type] = set()
"""Classes whose instances graphql-core would complete as objects, unawaited."""
_MAX_CLASSES = 1024


def _helpers(is_awaitable: Callable[[Any], bool]) -> dict[str, object]:
    """The checks a plan's code calls, with the executor's awaitable predicate."""

    def unusual(value: Any) -> bool:
        return (
            value is None
            or value is Undefined
            or isinstance(value, Exception)
            or bool(is_awaitable(value))
        )

    def leaf(coerce: Callable[[Any], Any], value: Any) -> Any:
        # graphql-core's complete_leaf_value, and what execute_field checks before it
        if unusual(value):
            raise Unplanned
        coerced = coerce(value)
        if coerced is None or coerced is Undefined:
            raise Unplanned
        return coerced

    def admit(value: Any) -> None:
        if unusual(value):
            raise Unplanned
        kind = type(value)
        if len(_plain_classes) < _MAX_CLASSES and _alike(kind):
            _plain_classes.add(kind)

    return {
        "leaf": leaf,
        "admit": admit,
        "REMEMBERED": _remembered_classes,
        "PLAIN": _plain_classes,
        "BUILTIN": _BUILTIN,
        "Undefined": Undefined,
        "Unplanned": Unplanned,
    }


class _Compiler:
    """Writes one plan's source: a function per object selection, one for the entry."""

    def __init__(self, executor: Executor[Any], unplannable: frozenset[str]) -> None:
        self.executor = executor
        self.unplannable = unplannable
        self.names: dict[str, object] = _helpers(executor.is_awaitable)
        self.source: list[str] = []
        self.count = 0

    def plan(self, type_: GraphQLList[Any] | GraphQLObjectType, fields: FieldDetailsList) -> Plan:
        if isinstance(type_, GraphQLObjectType):
            entry = self.object_function(type_, fields)
        else:
            body: list[str] = []
            self.present(type_, fields, "v", body, 1)
            entry = self.function("entry", [*body, "    return v"])
        code = compile("\n".join(self.source), f"<plan of {type_}>", "exec")
        exec(code, self.names)
        run = self.names[entry]
        assert callable(run)
        return Plan(str(type_), run)

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def constant(self, value: object) -> str:
        name = self.fresh("c")
        self.names[name] = value
        return name

    def function(self, prefix: str, body: list[str]) -> str:
        name = self.fresh(prefix)
        self.source += [f"def {name}(v):", *body, ""]
        return name

    def object_function(self, type_: GraphQLObjectType, fields: FieldDetailsList) -> str:
        """A function completing a value of ``type_`` (graphql-core's
        complete_object_value and execute_fields, for plain fields)."""
        # This function's own key to what it made of a Remembered record.
        memo = self.constant(object())
        body = [
            "    k = type(v)",
            "    if k not in PLAIN: admit(v)",
            "    if k in REMEMBERED:",
            "        r = v.completion",
            f"        if r is not None and r[0] is {memo}: return r[1]",
        ]
        if type_.is_type_of is not None:
            definition = (type_.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
            if not isinstance(definition, StrawberryObjectDefinition) or definition.is_type_of:
                raise _NotPlain
            # Strawberry's own check for interface members, which never reads its info.
            body.append(f"    if not {self.constant(type_.is_type_of)}(v, None): raise Unplanned")
        grouped, defers, _ = self.executor.collect_subfields(type_, fields)
        if defers:
            raise _NotPlain
        entries: list[str] = []
        for key, details in grouped.items():
            if any(d.defer_usage or d.fragment_variable_values for d in details):
                raise _NotPlain
            value = self.fresh("a")
            entries.append(f"{key!r}: {value}")
            name = details[0].node.name.value
            if name == "__typename":
                body.append(f"    {value} = {type_.name!r}")
                continue
            attribute = _attribute(type_, name, self.unplannable)
            body.append(f"    {value} = {self.read(attribute)}")
            self.complete(type_.fields[name].type, details, value, body, 1)
        body += [
            "    r = {" + ", ".join(entries) + "}",
            f"    if k in REMEMBERED: v.completion = ({memo}, r)",
            "    return r",
        ]
        return self.function("o", body)

    def read(self, attribute: str) -> str:
        if attribute.isidentifier() and not keyword.iskeyword(attribute):
            return f"v.{attribute}"
        return f"getattr(v, {self.constant(attribute)})"

    def complete(
        self,
        type_: GraphQLOutputType,
        fields: FieldDetailsList,
        value: str,
        body: list[str],
        depth: int,
    ) -> None:
        """Code turning ``value`` into its completion (graphql-core's complete_value)."""
        if isinstance(type_, GraphQLNonNull):
            # No test for None: each completion below refuses it (leaf, admit, the list's
            # type), as graphql-core's null check for a non-null type would.
            self.present(type_.of_type, fields, value, body, depth)
            return
        pad = "    " * depth
        inner: list[str] = []
        self.present(type_, fields, value, inner, depth + 1)
        body += [f"{pad}if {value} is not None:", *inner]

    def present(
        self,
        type_: GraphQLOutputType,
        fields: FieldDetailsList,
        value: str,
        body: list[str],
        depth: int,
    ) -> None:
        """The same for a value of a nullable type known not to be None, or of a non-null
        type (where None is refused)."""
        pad = "    " * depth
        if is_leaf_type(type_) and _exact_class(type_) is None:
            # A builtin value is never awaitable nor an exception: straight to coercion.
            coerce = self.constant(type_.coerce_output_value)
            body += [
                f"{pad}{value} = {coerce}({value}) if type({value}) in BUILTIN "
                f"else leaf({coerce}, {value})",
                f"{pad}if {value} is None or {value} is Undefined: raise Unplanned",
            ]
        elif is_leaf_type(type_):
            body.append(f"{pad}{value} = {self.leaf(type_, value)}")
        elif isinstance(type_, GraphQLList):
            # Lists and tuples only: another iterable may be consumed as it is read.
            body.append(
                f"{pad}if type({value}) is not list and type({value}) is not tuple: raise Unplanned"
            )
            body.append(f"{pad}{value} = [{self.item(type_.of_type, fields)} for i in {value}]")
        elif isinstance(type_, GraphQLObjectType):
            body.append(f"{pad}{value} = {self.object_function(type_, fields)}({value})")
        else:
            raise _NotPlain  # an interface or union: its runtime type is graphql-core's call

    def leaf(self, type_: GraphQLLeafType, value: str) -> str:
        coerce = self.constant(type_.coerce_output_value)
        exact = _exact_class(type_)
        if exact is None:
            return f"leaf({coerce}, {value})"
        return f"{value} if type({value}) is {exact} else leaf({coerce}, {value})"

    def item(self, type_: GraphQLOutputType, fields: FieldDetailsList) -> str:
        """An expression completing the list item ``i``."""
        required = isinstance(type_, GraphQLNonNull)
        inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
        if isinstance(inner, GraphQLObjectType):
            # Its function refuses None itself (admit).
            expression = f"{self.object_function(inner, fields)}(i)"
        elif is_leaf_type(inner):
            # leaf() refuses None itself.
            expression = self.leaf(inner, "i")
        else:
            body: list[str] = []
            self.complete(type_, fields, "v", body, 1)
            return f"{self.function('g', [*body, '    return v'])}(i)"
        return expression if required else f"None if i is None else ({expression})"

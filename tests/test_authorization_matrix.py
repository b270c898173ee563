"""The authorization matrix, generated from the schema: no field can slip by.

graph/permissions.py says which scope reading each type needs (``TYPE_SCOPES``); the
fields carry their checks as extensions. From the schema alone, this file

- walks every path from the roots (queries, mutations and their payloads, subscriptions,
  ``node``) and fails for any field through which protected data is reached without a
  check for its scope on the way;
- finds every field that carries a check, builds a request that reaches it with a token
  holding every scope but that one, sends it, and asserts FORBIDDEN on that field, no
  data there, and no upstream call made for it.

A new field or type therefore needs no new line here unless it takes required arguments
(``ARGUMENTS``), and cannot be added without its check.
"""

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from gql import Client, GraphQLRequest
from graphql import (
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLUnionType,
    build_schema,
    get_named_type,
)
from support import ORG, Api
from test_authorization import WAIT_S, caller, filled, fixtures, recipe_count

from graph.permissions import OBJECTS, TYPE_SCOPES, WRITE_GRANTS, NodeScope, Scope
from graph.schema import schema as strawberry_schema
from models.principal import SCOPES

SCHEMA = build_schema(strawberry_schema.as_str())
ROOTS = ("Query", "Mutation", "Subscription")

SEED_DEVICE = 'kind: MEID, identifier: "54689785258599"'
REPORT_INPUT = (
    f'input: {{devices: [{{{SEED_DEVICE}}}], occurredAfter: "2017-01-01T00:00:00Z", '
    'occurredBefore: "2018-01-01T00:00:00Z", groupBy: [EVENT_TYPE]}'
)
# Arguments for the fields that require some; ``{uid}``, ``{recipe}``, ``{job}`` and
# ``{device}`` stand for what ``fixtures`` makes.
ARGUMENTS = {
    "Query.device": SEED_DEVICE,
    "Query.provisioningRecipe": 'uid: "{uid}"',
    "Query.provisioningReport": REPORT_INPUT,
    "Query.provisioningReportJob": 'id: "{job}"',
    "Mutation.createProvisioningRecipe": (
        f'input: {{organizationUid: "{ORG}", owner: {{}}, brand: "probe", '
        f"device: {{{SEED_DEVICE}}}}}"
    ),
    "Mutation.updateProvisioningRecipeStatus": 'input: {uid: "{uid}", status: APPLIED}',
    "Mutation.startProvisioningReport": REPORT_INPUT,
    "Mutation.cancelProvisioningReport": 'id: "{job}"',
    "Subscription.provisioningReportProgress": 'jobId: "{job}"',
}
NODE_IDS = {
    "Device": "{device}",
    "ProvisioningRecipe": "{recipe}",
    "ProvisioningReportJob": "{job}",
}


@dataclass(frozen=True)
class Step:
    """Reading ``field`` of ``parent`` gives a ``target``, named in a fragment when the
    field's type is an interface or a union."""

    parent: str
    field: str
    target: str
    abstract: bool


def steps_from(type_name: str) -> Iterator[Step]:
    parent = SCHEMA.type_map[type_name]
    assert isinstance(parent, GraphQLObjectType)
    for name, field in parent.fields.items():
        named: GraphQLNamedType = get_named_type(field.type)
        if isinstance(named, GraphQLInterfaceType | GraphQLUnionType):
            for member in SCHEMA.get_possible_types(named):
                yield Step(type_name, name, member.name, True)
        elif isinstance(named, GraphQLObjectType):
            yield Step(type_name, name, named.name, False)


def check_of(step: Step) -> Scope | None:
    field = strawberry_schema.get_field_for_type(step.field, step.parent)
    assert field is not None
    checks = [e for e in field.extensions if isinstance(e, Scope)]
    assert len(checks) <= 1, f"{step.parent}.{step.field} has more than one scope check"
    return checks[0] if checks else None


def checked_scope(step: Step) -> str | None:
    """The scope the step's field refuses to read its target without."""
    check = check_of(step)
    if isinstance(check, NodeScope):
        return TYPE_SCOPES[step.target]
    return check.scope if check is not None else None


@dataclass(frozen=True)
class State:
    """Where a read stands: the type, the read scopes checks on the way proved, and a
    mutation's write grant (which covers the first object it returns and its parts)."""

    type: str
    held: frozenset[str] = frozenset()
    grant: str | None = None
    entered: bool = False


def advance(state: State, step: Step) -> State | str:
    """The state after the step, or the scope it reads without any check for it."""
    scope = checked_scope(step)
    held, grant, entered = state.held, state.grant, state.entered
    if scope in WRITE_GRANTS:
        grant, entered = WRITE_GRANTS[scope], False
    elif scope is not None:
        held = held | {scope}
    needed = TYPE_SCOPES[step.target]
    if needed is None or needed in held:
        return State(step.target, held, grant, entered)
    if grant == needed and not (entered and step.target in OBJECTS):
        return State(step.target, held, grant, entered or step.target in OBJECTS)
    return needed


def unguarded() -> dict[str, str]:
    """``Parent.field -> scope`` for every field that some path reads unchecked."""
    found: dict[str, str] = {}
    seen: set[State] = set()
    pending = deque(State(root) for root in ROOTS if root in SCHEMA.type_map)
    while pending:
        state = pending.popleft()
        if state in seen:
            continue
        seen.add(state)
        for step in steps_from(state.type):
            after = advance(state, step)
            if isinstance(after, str):
                found[f"{step.parent}.{step.field} ({step.target})"] = after
            else:
                pending.append(after)
    return found


def every_step() -> Iterator[Step]:
    for name, named in SCHEMA.type_map.items():
        if isinstance(named, GraphQLObjectType) and not name.startswith("__"):
            yield from steps_from(name)


def test_every_type_is_classified():
    composite = {
        name
        for name, named in SCHEMA.type_map.items()
        if isinstance(named, GraphQLObjectType | GraphQLUnionType) and not name.startswith("__")
    }
    assert composite - set(TYPE_SCOPES) == set(), "say in TYPE_SCOPES who may read these"
    assert set(TYPE_SCOPES) - composite == set(), "TYPE_SCOPES names types the schema lacks"
    assert OBJECTS - {name for name, scope in TYPE_SCOPES.items() if scope is not None} == set()
    node = SCHEMA.type_map["Node"]
    assert isinstance(node, GraphQLInterfaceType)
    for implementation in SCHEMA.get_possible_types(node):
        assert TYPE_SCOPES[implementation.name] is not None, implementation.name


def test_no_path_reads_protected_data_without_a_check_for_its_scope():
    assert unguarded() == {}


def test_every_root_field_is_checked_and_every_check_names_what_it_guards():
    for step in every_step():
        check = check_of(step)
        if step.parent in ROOTS:
            assert check is not None, f"{step.parent}.{step.field} checks no scope"
        if check is None or isinstance(check, NodeScope):
            continue
        guarded = TYPE_SCOPES[step.target]
        where = f"{step.parent}.{step.field}"
        if check.scope in WRITE_GRANTS:
            assert step.parent == "Mutation", f"{where}: a write scope guards no read"
            assert guarded in (None, WRITE_GRANTS[check.scope]), where
        else:
            assert check.scope == guarded, f"{where} checks {check.scope}, reads {guarded}"


# --- Each check, executed -----------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A request that reaches a checked field with every scope but the one it checks."""

    scope: str
    path: tuple[Step, ...]

    @property
    def target(self) -> Step:
        return self.path[-1]

    @property
    def name(self) -> str:
        target = self.target
        suffix = f"({target.target})" if isinstance(check_of(target), NodeScope) else ""
        return f"{target.parent}.{target.field}{suffix}"


def path_to(target: Step, scope: str) -> tuple[Step, ...] | None:
    """The shortest path from a root to the target passing no other check for ``scope``;
    through a subscription only when the target is one."""
    if target.parent in ROOTS:
        return (target,)
    roots = [root for root in ROOTS if root != "Subscription" and root in SCHEMA.type_map]
    came: dict[str, tuple[Step, ...]] = {root: () for root in roots}
    pending = deque(roots)
    while pending:
        type_name = pending.popleft()
        if type_name == target.parent:
            return (*came[type_name], target)
        for step in steps_from(type_name):
            if step.target not in came and checked_scope(step) != scope:
                came[step.target] = (*came[type_name], step)
                pending.append(step.target)
    return None


def probes() -> list[Probe]:
    found: dict[tuple[str, str, str], Probe] = {}
    for step in every_step():
        scope = checked_scope(step)
        key = (step.parent, step.field, scope or "")
        if scope is None or key in found:
            continue
        path = path_to(step, scope)
        assert path is not None, (
            f"{step.parent}.{step.field}: no request reaches it without {scope}, so its "
            "check never decides anything"
        )
        found[key] = Probe(scope, path)
    return list(found.values())


PROBES = {probe.name: probe for probe in probes()}


def arguments(step: Step) -> str:
    coordinate = f"{step.parent}.{step.field}"
    if isinstance(check_of(step), NodeScope):
        return f'(id: "{NODE_IDS[step.target]}")'
    field = SCHEMA.type_map[step.parent].fields[step.field]  # type: ignore[attr-defined]
    required = [
        name
        for name, argument in field.args.items()
        if isinstance(argument.type, GraphQLNonNull) and argument.default_value is None
    ]
    if coordinate not in ARGUMENTS:
        assert not required, f"name arguments for {coordinate} in ARGUMENTS"
        return ""
    return f"({ARGUMENTS[coordinate]})"


def request(probe: Probe, with_target: bool = True) -> str:
    """The probe's document, or without the target (its parent selects __typename)."""
    steps = probe.path if with_target else probe.path[:-1]
    selection = "__typename"
    for step in reversed(steps):
        inner = selection
        if step.abstract and step is not probe.target:
            inner = f"... on {step.target} {{ {inner} }}"
        selection = f"{step.field}{arguments(step)} {{ {inner} }}"
    operation = {"Query": "query", "Mutation": "mutation", "Subscription": "subscription"}
    return f"{operation[probe.path[0].parent]} {{ {selection} }}"


def upstream_calls(body: dict) -> int:
    return body["extensions"]["cost"]["upstreamCalls"]


def value_at(data: dict | None, path: tuple[Step, ...]) -> object:
    """The target's value, or None where null came up to an ancestor."""
    value: object = data
    for step in path:
        if value is None:
            return None
        assert isinstance(value, dict), f"the probe's path crosses a list at {step.field}"
        value = value.get(step.field)
    return value


@pytest.mark.parametrize("name", PROBES)
async def test_each_check_refuses_a_token_without_its_scope(api: Api, name: str):
    probe = PROBES[name]
    ids = await fixtures(api)
    lacking = caller(api, scopes=[s for s in SCOPES if s != probe.scope])
    recipes, calls = await recipe_count(api), api.calls()
    if probe.path[0].parent == "Subscription":
        async with Client(transport=lacking.websocket()) as session:
            stream = session.subscribe(GraphQLRequest(filled(request(probe), ids)))
            with pytest.raises(Exception, match=f"needs the {probe.scope} scope"):
                await asyncio.wait_for(anext(stream), WAIT_S)
        assert (await recipe_count(api), api.calls()) == (recipes, calls)
        return
    nested = len(probe.path) > 1
    if nested:  # what the way there costs, with every cache it fills filled already
        await lacking.query(filled(request(probe, with_target=False), ids))
    body = await lacking.query(filled(request(probe), ids), expect_errors=True)
    errors = [
        (e["extensions"]["code"], [p for p in e["path"] if isinstance(p, str)])
        for e in body["errors"]
    ]
    assert errors == [("FORBIDDEN", [step.field for step in probe.path])], body
    assert f"needs the {probe.scope} scope" in body["errors"][0]["message"]
    assert value_at(body["data"], probe.path) is None
    if nested:
        again = await lacking.query(filled(request(probe, with_target=False), ids))
        assert upstream_calls(body) == upstream_calls(again)
    else:
        assert upstream_calls(body) == 0
        assert (await recipe_count(api), api.calls()) == (recipes, calls)

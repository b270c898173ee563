"""Compiled plans (graph/compiled.py) against graphql-core's own route.

A schema of the history's real types (and a type of every other kind of leaf) is built
twice: once with the service's executor, once with a subclass that has plans turned off.
Random documents (aliases, fragments, __typename, @skip/@include with literals and
variables, repeated and merged fields) over random records (nulls where the schema
allows them and where it does not, values no scalar takes, exceptions, awaitables,
iterables that are not lists, attributes that raise) must give the same data, key order
and types included, and the same errors, message, path and locations, both ways.

Then that plans are taken at all: for a document with every feature, and for the
frontend's documents (tests/queries) on the service's schema, counted by the plans' hits.

Bounded for CI: a fixed number of examples from a fixed seed; COMPILED_EXAMPLES widens it.
"""

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from functools import partial
from pathlib import Path
from typing import Any, NewType

import pytest
import strawberry
from graphql import GraphQLObjectType, build_schema, get_named_type, is_leaf_type
from graphql.pyutils import Undefined
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from strawberry.extensions import ParserCache, SchemaExtension
from strawberry.relay import PageInfo
from strawberry.schema.config import StrawberryConfig
from support import RANGE, FastTier, InProcess, document, fast_tier, in_process

from graph import compiled
from graph.execution import EventExecutor
from graph.history.types import ProvisioningEventConnection, ProvisioningEventEdge
from graph.scalars import SCALARS, DateTime
from graph.tracing import OperationTracing
from models.events import ExtendedAttribute, ProvisioningEvent

pytestmark = pytest.mark.fast

EXAMPLES = int(os.environ.get("COMPILED_EXAMPLES", "300"))


class Uncompiled(EventExecutor):
    compiled = False


@strawberry.enum
class Colour(Enum):
    RED = "red"
    GREEN = "green"


class Status(StrEnum):
    OK = "ok"


def shout(value: Any) -> Any:
    """A scalar's output coercion that may give no value at all."""
    if value == "":
        return None
    if value == "undefined":
        return Undefined
    return value.upper()


Note = NewType("Note", str)


@strawberry.type
class Sample:
    """A leaf of every other kind, and lists of lists."""

    count: int
    maybe_count: int | None
    ratio: float
    flag: bool | None
    ident: strawberry.ID
    colour: Colour
    colours: list[Colour | None] | None
    grid: list[list[int | None]] | None
    at: DateTime | None
    note: Note | None
    notes: list[Note] | None


@dataclass
class Records:
    history: Any
    samples: Any


@strawberry.type
class Query:
    @strawberry.field
    def history(self, info: strawberry.Info) -> ProvisioningEventConnection | None:
        return info.context.history

    @strawberry.field
    def samples(self, info: strawberry.Info) -> list[Sample | None] | None:
        return info.context.samples


class Schema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:
        pass  # compared, not logged


def build(
    executor: type[EventExecutor],
    *extensions: Callable[[], SchemaExtension],
    parser_cache: bool = True,
):
    # The parser cache, as the service's schema has it: plans are kept per document.
    cache = [partial(ParserCache, maxsize=256)] if parser_cache else []
    return Schema(
        query=Query,
        config=StrawberryConfig(
            scalar_map={
                **SCALARS,
                Note: strawberry.scalar(name="Note", serialize=shout, parse_value=str),
            }
        ),
        execution_context_class=executor,
        extensions=[*extensions, *cache],
    )


COMPILED = build(EventExecutor)
PLAIN = build(Uncompiled)


# Records: makers, so that each run gets objects of its own (an awaitable is awaited once,
# an iterator read once), built the same way both times.

Maker = Callable[[], Any]


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


class Exploding:
    """A record whose every attribute raises."""

    def __getattr__(self, name: str) -> Any:
        raise ValueError(f"no {name} here")


class SlotEdge:
    __slots__ = ("cursor", "node")

    def __init__(self, cursor: Any, node: Any) -> None:
        self.cursor, self.node = cursor, node


def resolved(value: Any) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def constant(value: Any) -> Maker:
    return lambda: value


def odd(usual: st.SearchStrategy[Maker]) -> st.SearchStrategy[Maker]:
    """A usual value mostly; else one graphql-core must complete its own way."""
    return st.one_of(
        usual,
        usual,
        usual,
        st.just(constant(None)),
        st.sampled_from(["boom", "bang"]).map(lambda m: lambda: ValueError(m)),
        usual.map(lambda make: lambda: resolved(make())),
        st.just(Opaque),
        st.just(constant(Undefined)),
        st.just(Exploding),
    )


# Leaves: what each scalar takes, and values it refuses (or coerces to no value).
TEXT = (
    st.one_of(
        st.text("ab\u00e9", max_size=3),
        st.just(Status.OK),
        st.integers(-3, 3),
        st.booleans(),
        st.floats(allow_nan=False, width=16),
    ),
    [float("inf"), b"x", [1]],
)
TICKS = (st.integers(0, 3 * 10**17), [-(10**19), 10**19, "2020", 1.5, True])
FLAGS = (st.one_of(st.booleans(), st.sampled_from([0, 2, 0.5])), ["yes", ""])
INTS = (st.integers(-(2**31), 2**31 - 1), [2**31, 1.0, 1.5, "7", True])
FLOATS = (
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**6), 10**6)),
    ["x", float("nan")],
)
COLOURS = (st.sampled_from([Colour.RED, Colour.GREEN]), ["red", "GREEN", 3])
NOTES = (st.sampled_from(["a", "b"]), ["", "undefined", 3])
IDS = (st.one_of(st.text("ab", max_size=2), st.integers(0, 9)), [Opaque(), 1.5, True])

Vary = Callable[[st.SearchStrategy[Maker]], st.SearchStrategy[Maker]]


def usual(strategy: st.SearchStrategy[Maker]) -> st.SearchStrategy[Maker]:
    return strategy


def lists(item: st.SearchStrategy[Maker], vary: Vary) -> st.SearchStrategy[Maker]:
    """A list as a record may hold it: a list or a tuple; or, varied, a generator or no
    list at all."""
    items = st.lists(item, max_size=3)
    listed = st.one_of(
        items.map(lambda makers: lambda: [make() for make in makers]),
        items.map(lambda makers: lambda: tuple(make() for make in makers)),
    )
    if vary is usual:
        return listed
    return vary(
        st.one_of(
            listed,
            items.map(lambda makers: lambda: (make() for make in makers)),
            st.sampled_from([{"a": 1}, "ab"]).map(constant),
        )
    )


@st.composite
def record(draw: st.DrawFn, kind: Callable[..., Any], **fields: st.SearchStrategy[Maker]) -> Maker:
    makers = {name: draw(strategy) for name, strategy in fields.items()}
    return lambda: kind(**{name: make() for name, make in makers.items()})


def counter(total: int | None) -> Maker:
    async def count() -> int:
        if total is None:
            raise ValueError("no count")
        return total

    return lambda: count


def records(vary: Vary) -> tuple[st.SearchStrategy[Maker], st.SearchStrategy[Maker]]:
    """Connections and lists of samples, with ``vary`` applied to every value."""

    def value(leaf: tuple[st.SearchStrategy[Any], list[Any]]) -> st.SearchStrategy[Maker]:
        taken, refused = leaf
        if vary is usual:
            values = taken
        else:
            share = 12 if vary is rarely else 1  # how many taken values to one refused
            values = st.one_of(*[taken] * share, st.sampled_from(refused))
        return vary(values.map(constant))

    attributes = vary(record(ExtendedAttribute, key=value(TEXT), value=value(TEXT)))
    events = vary(
        record(
            ProvisioningEvent,
            occurred_at=value(TICKS),
            status=value(TEXT),
            event_by=value(TEXT),
            event_type=value(TEXT),
            service_plan=value(TEXT),
            mdn=value(TEXT),
            msisdn=value(TEXT),
            extended_attributes=lists(attributes, vary),
        )
    )
    edges = vary(
        st.one_of(
            record(SlotEdge, cursor=value(TEXT), node=events),
            record(ProvisioningEventEdge, cursor=value(TEXT), node=events),
        )
    )
    pages = vary(
        record(
            PageInfo,
            has_next_page=value(FLAGS),
            has_previous_page=value(FLAGS),
            start_cursor=value(TEXT),
            end_cursor=value(TEXT),
        )
    )
    connections = vary(
        record(
            ProvisioningEventConnection,
            edges=lists(edges, vary),
            page_info=pages,
            count_events=st.one_of(st.none(), st.integers(0, 9)).map(counter),
        )
    )
    samples = lists(
        vary(
            record(
                Sample,
                count=value(INTS),
                maybe_count=value(INTS),
                ratio=value(FLOATS),
                flag=value(FLAGS),
                ident=value(IDS),
                colour=value(COLOURS),
                colours=lists(value(COLOURS), vary),
                grid=lists(lists(value(INTS), vary), vary),
                at=value(TICKS),
                note=value(NOTES),
                notes=lists(value(NOTES), vary),
            )
        ),
        vary,
    )
    return connections, samples


def rarely(usual: st.SearchStrategy[Maker]) -> st.SearchStrategy[Maker]:
    """Now and then an odd value: one among usual ones, which a plan must not miss."""
    return st.one_of(*[usual] * 12, odd(usual))


USUAL, RARELY, ODD = records(usual), records(rarely), records(odd)


# Documents: random selections of the test schema's fields.

TYPES = build_schema(COMPILED.as_str()).type_map
VARIABLES = ("v1", "v2")


class Document:
    def __init__(self) -> None:
        self.fragments: dict[str, list[str]] = {}  # type name -> fragments defined on it
        self.definitions: list[str] = []


DIRECTIVES = st.sampled_from(
    [
        "",
        "",
        "",
        " @skip(if: true)",
        " @skip(if: false)",
        " @include(if: true)",
        " @include(if: false)",
        " @skip(if: $v1)",
        " @include(if: $v2)",
        " @skip(if: $v2) @include(if: $v1)",
    ]
)


@st.composite
def selections(draw: st.DrawFn, doc: Document, type_name: str, depth: int = 0) -> str:
    parent = TYPES[type_name]
    assert isinstance(parent, GraphQLObjectType)
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "field", "field", "typename", "inline", "spread"]))
        directive = draw(DIRECTIVES)
        if kind == "typename":
            alias = draw(st.sampled_from(["", "kind: "]))
            parts.append(f"{alias}__typename{directive}")
        elif kind == "inline" and depth < 3:
            condition = draw(st.sampled_from(["", f" on {type_name}"]))
            inner = draw(selections(doc, type_name, depth + 1))
            parts.append(f"...{condition}{directive} {{ {inner} }}")
        elif kind == "spread" and depth < 3:
            known = doc.fragments.setdefault(type_name, [])
            if known and draw(st.booleans()):
                name = draw(st.sampled_from(known))  # spread again
            else:
                inner = draw(selections(doc, type_name, depth + 1))
                name = f"F{len(doc.definitions)}"
                doc.definitions.append(f"fragment {name} on {type_name} {{ {inner} }}")
                known.append(name)
            parts.append(f"...{name}{directive}")
        else:
            name = draw(st.sampled_from(sorted(parent.fields)))
            alias = draw(st.sampled_from(["", f"{name}A: ", f"{name}B: "]))
            field_type = get_named_type(parent.fields[name].type)
            if is_leaf_type(field_type):
                parts.append(f"{alias}{name}{directive}")
            else:
                inner = draw(selections(doc, field_type.name, depth + 1))
                parts.append(f"{alias}{name}{directive} {{ {inner} }}")
    return " ".join(parts)


@st.composite
def documents(draw: st.DrawFn) -> str:
    doc = Document()
    body = draw(selections(doc, "Query"))
    text = " ".join([body, *doc.definitions])
    used = [name for name in VARIABLES if f"${name}" in text]
    declared = f"({', '.join(f'${name}: Boolean!' for name in used)})" if used else ""
    return " ".join([f"query{declared} {{ {body} }}", *doc.definitions])


def canonical(value: Any) -> Any:
    """The value with its dicts' key order and its leaves' types made comparable."""
    if isinstance(value, dict):
        return [(key, canonical(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return (type(value).__qualname__, repr(value))


async def answer(schema: strawberry.Schema, text: str, variables: dict, make: Records) -> Any:
    context = Records(make.history(), make.samples())
    return await schema.execute(text, variable_values=variables, context_value=context)


async def run(schema: strawberry.Schema, text: str, variables: dict, make: Records) -> tuple:
    result = await answer(schema, text, variables, make)
    errors = [(e.message, e.path, e.locations) for e in result.errors or []]
    return canonical(result.data), errors


async def both(text: str, variables: dict, make: Records, compiled_schema=COMPILED) -> tuple:
    return await run(compiled_schema, text, variables, make), await run(
        PLAIN, text, variables, make
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("COMPILED_EXAMPLES"),
    suppress_health_check=list(HealthCheck),
)
@given(
    text=documents(),
    variables=st.fixed_dictionaries({name: st.booleans() for name in VARIABLES}),
    history=st.one_of(USUAL[0], RARELY[0], ODD[0]),
    samples=st.one_of(USUAL[1], RARELY[1], ODD[1]),
)
def test_plans_answer_as_graphql_core_does(text, variables, history, samples):
    used = {name: value for name, value in variables.items() if f"${name}" in text}
    before = hits()
    # A loop of its own, leaving the tests' loop alone.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        ours, theirs = runner.run(both(text, used, Records(history, samples)))
    assert ours == theirs
    # How far examples get: --hypothesis-show-statistics lists these.
    taken = change(before, hits()).values()
    note(f"plans: {'hit' if any(h for h, _ in taken) else 'no hit'}")
    note(f"plans: {'fell back' if any(f for _, f in taken) else 'never fell back'}")
    note(f"errors: {'some' if ours[1] else 'none'}")


def hits() -> dict[str, tuple[int, int]]:
    """Hits and fallbacks of every plan, by the type it completes (summed)."""
    totals: dict[str, tuple[int, int]] = {}
    for plan in compiled.plans():
        hit, fell = totals.get(plan.type_name, (0, 0))
        totals[plan.type_name] = (hit + plan.hits, fell + plan.fallbacks)
    return totals


def change(before: dict, after: dict) -> dict[str, tuple[int, int]]:
    return {
        name: (hit - before.get(name, (0, 0))[0], fell - before.get(name, (0, 0))[1])
        for name, (hit, fell) in after.items()
        if (hit, fell) != before.get(name, (0, 0))
    }


EVERYTHING = """
query Everything($skipped: Boolean!, $kept: Boolean!) {
  history {
    kind: __typename
    edges {
      cursor
      again: cursor
      node { ...Event status @skip(if: $skipped) eventBy @include(if: $kept)
             ... on ProvisioningEvent { mdn extendedAttributes { value } } }
      ... { node { msisdn } }
    }
    pageInfo { hasNextPage endCursor @include(if: false) }
  }
  samples { count ratio flag ident colour colours grid at maybe: maybeCount note notes }
}
fragment Event on ProvisioningEvent {
  __typename occurredAt eventType extendedAttributes { key key }
}
"""


def event(n: int, status: Any = "Success") -> ProvisioningEvent:
    attributes = (ExtendedAttribute("k", f"v{n}"), ExtendedAttribute("k2", None))
    return ProvisioningEvent(10**16 + n, status, None, "Activate", None, "555", None, attributes)


def well_formed(status: Any = "Success") -> Records:
    def history() -> ProvisioningEventConnection:
        edges = [SlotEdge(f"c{n}", event(n, status if n == 2 else "Success")) for n in range(4)]
        page = PageInfo(
            has_next_page=True, has_previous_page=False, start_cursor="c0", end_cursor="c3"
        )
        return ProvisioningEventConnection(edges=edges, page_info=page, count_events=None)

    def samples() -> list[Sample]:
        return [
            Sample(
                count=n,
                maybe_count=None,
                ratio=n / 2,
                flag=True,
                ident=f"s{n}",
                colour=Colour.GREEN,
                colours=[Colour.RED, None],
                grid=[[1, None], []],
                at=DateTime(10**16),
                note="n",
                notes=["a", "b"],
            )
            for n in range(3)
        ]

    return Records(history, samples)


@pytest.mark.parametrize(
    "variables", [{"skipped": False, "kept": True}, {"skipped": True, "kept": False}]
)
async def test_a_document_with_every_feature_takes_its_plans(variables):
    before = hits()

    ours, theirs = await both(EVERYTHING, variables, well_formed())

    assert ours == theirs
    assert change(before, hits()) == {"ProvisioningEventConnection": (1, 0), "[Sample]": (1, 0)}


async def test_a_null_where_the_schema_says_non_null_takes_graphql_cores_route():
    before = hits()

    ours, theirs = await both(EVERYTHING, {"skipped": False, "kept": True}, well_formed(None))

    assert ours == theirs
    _, errors = ours
    assert [(message, path) for message, path, _ in errors] == [
        (
            "Cannot return null for non-nullable field ProvisioningEvent.status.",
            ["history", "edges", 2, "node", "status"],
        )
    ]
    # The connection's plan gave up on the page, and so did the edges' list's; graphql-core
    # completed them, the first two edges by their plan again, the third field by field
    # (its attributes by their plan) up to the null, whose error ended the page.
    assert change(before, hits()) == {
        "ProvisioningEventConnection": (0, 1),
        "[ProvisioningEventEdge!]": (0, 1),
        "ProvisioningEventEdge": (2, 1),
        "ProvisioningEvent": (0, 1),
        "[ExtendedAttribute!]": (1, 0),
        "[Sample]": (1, 0),
    }


async def test_a_scalar_that_gives_no_value_takes_graphql_cores_route():
    def samples() -> list[Sample]:
        listed = well_formed().samples()
        listed[1].note = ""  # coerced to None
        listed[2].notes = ["a", "undefined"]  # coerced to Undefined
        return listed

    before = hits()

    ours, theirs = await both("{ samples { note notes count } }", {}, Records(list, samples))

    assert ours == theirs
    assert [path for _, path, _ in ours[1]] == [["samples", 1, "note"], ["samples", 2, "notes", 1]]
    # The list's plan gave up; so did the plans of the samples with such a value, after
    # which graphql-core completed those two field by field (their lists by their plan).
    assert change(before, hits()) == {"[Sample]": (0, 1), "Sample": (1, 2), "[Note!]": (1, 1)}


class Shouting(SchemaExtension):
    """A resolve hook that changes what every field gives."""

    def resolve(self, _next, root, info, *args, **kwargs):
        value = _next(root, info, *args, **kwargs)
        return value.upper() if isinstance(value, str) else value


async def test_a_resolve_hook_that_may_touch_any_field_turns_plans_off():
    shouting, plain_shouting = build(EventExecutor, Shouting), build(Uncompiled, Shouting)
    make = well_formed()
    before = hits()

    ours = await answer(shouting, EVERYTHING, {"skipped": False, "kept": True}, make)
    theirs = await answer(plain_shouting, EVERYTHING, {"skipped": False, "kept": True}, make)

    assert ours.errors is None
    assert canonical(ours.data) == canonical(theirs.data)
    assert ours.data["history"]["edges"][0]["cursor"] == "C0"  # the hook ran for every field
    assert change(before, hits()) == {}


async def test_fields_a_tracing_hook_wraps_are_left_to_graphql_core():
    traced = frozenset({"ProvisioningEvent.status"})
    tracing = build(EventExecutor, lambda: OperationTracing(traced))
    make = well_formed()
    before = hits()

    ours = await run(tracing, EVERYTHING, {"skipped": False, "kept": True}, make)

    assert ours == await run(PLAIN, EVERYTHING, {"skipped": False, "kept": True}, make)
    # Nothing holding an event's status is planned; all else is.
    assert change(before, hits()) == {
        "[ExtendedAttribute!]": (4, 0),
        "PageInfo": (1, 0),
        "[Sample]": (1, 0),
    }


# The frontend's documents on the service's own schema.

SEED_MEID = {"kind": "MEID", "identifier": "54689785258599"}
SEED_ESN = {"kind": "ESN", "identifier": "09123456123"}


@pytest.fixture(scope="module")
async def tier(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastTier]:
    async with fast_tier(tmp_path_factory.mktemp("compiled")) as shared:
        yield shared


@pytest.fixture
async def api(tier: FastTier, tmp_path: Path) -> AsyncIterator[InProcess]:
    async with in_process(tier, tmp_path) as executed:
        yield executed


@pytest.mark.parametrize(
    ("name", "variables", "planned"),
    [
        (
            "DeviceHistory",
            {**SEED_MEID, "first": 5},
            {"ProvisioningEventConnection": (1, 0), "DeviceIdentifier": (1, 0)},
        ),
        ("LatestEvents", {**SEED_MEID, "last": 4}, {"ProvisioningEventConnection": (1, 0)}),
        (
            "DeviceOverview",
            SEED_ESN,
            {
                "ProvisioningEventConnection": (1, 0),
                "DeviceIdentifier": (1, 0),
                "[DeviceIdentifier!]": (1, 0),
            },
        ),
        (
            "DeviceList",
            {"first": 3},
            {"PageInfo": (1, 0), "DeviceIdentifier": (3, 0), "[DeviceIdentifier!]": (3, 0)},
        ),
        (
            "FleetReport",
            {"input": {"devices": [SEED_MEID, SEED_ESN], **RANGE, "groupBy": ["STATUS"]}},
            {"ProvisioningReport": (1, 0)},
        ),
    ],
)
async def test_the_frontends_documents_take_plans(api, name, variables, planned):
    before = hits()

    await api.query(document(name), variables)

    assert change(before, hits()) == planned


async def test_plans_are_kept_per_document_not_per_request():
    await run(COMPILED, EVERYTHING, {"skipped": False, "kept": True}, well_formed())
    kept = {id(plan) for plan in compiled.plans()}

    await run(COMPILED, EVERYTHING, {"skipped": False, "kept": True}, well_formed())

    assert {id(plan) for plan in compiled.plans()} == kept


async def test_plans_go_with_their_documents():
    uncached = build(EventExecutor, parser_cache=False)
    gc.collect()
    kept = len(compiled.plans())

    for _ in range(3):  # each request parses its document anew, and plans it
        await run(uncached, EVERYTHING, {"skipped": False, "kept": True}, well_formed())
    gc.collect()

    assert len(compiled.plans()) == kept


async def test_an_iterator_is_left_unread_for_graphql_core():
    def history() -> ProvisioningEventConnection:
        # The second edge's null cursor sends the page to graphql-core, which must find
        # every edge still there to read.
        edges = (SlotEdge(cursor, event(n)) for n, cursor in enumerate(["c0", None]))
        page = PageInfo(
            has_next_page=False, has_previous_page=False, start_cursor=None, end_cursor=None
        )
        return ProvisioningEventConnection(edges=edges, page_info=page, count_events=None)

    ours, theirs = await both("{ history { edges { cursor } } }", {}, Records(history, list))

    assert ours == theirs
    assert [path for _, path, _ in ours[1]] == [["history", "edges", 1, "cursor"]]

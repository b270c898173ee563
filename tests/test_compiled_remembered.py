"""Plans that keep their completions on ``Remembered`` records (graph/compiled.py).

The property of tests/test_compiled.py again, over connections whose edges are of a
``Remembered`` class, each list holding each of its edges twice: the compiled schema
answers twice over the very same records (its first answer keeps completions, its second
takes them again) and both answers must be graphql-core's, errors included.

Records here never change once made, as ``Remembered`` asks: lists are lists or tuples,
never iterators, which graphql-core would read once.
"""

import asyncio
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from strawberry.relay import PageInfo
from test_compiled import (
    COMPILED,
    EVERYTHING,
    EXAMPLES,
    FLAGS,
    PLAIN,
    TEXT,
    TICKS,
    VARIABLES,
    Maker,
    Records,
    Vary,
    answer,
    canonical,
    constant,
    counter,
    documents,
    event,
    odd,
    rarely,
    record,
    usual,
)

from graph.compiled import Remembered
from graph.history.types import ProvisioningEventConnection
from models.events import ExtendedAttribute, ProvisioningEvent

pytestmark = pytest.mark.fast


class KeptEdge(Remembered):
    __slots__ = ("cursor", "node")

    def __init__(self, cursor: Any, node: Any) -> None:
        super().__init__()
        self.cursor, self.node = cursor, node


def leaves(leaf: tuple[st.SearchStrategy[Any], list[Any]], vary: Vary) -> st.SearchStrategy[Maker]:
    taken, refused = leaf
    if vary is usual:
        return taken.map(constant)
    share = 12 if vary is rarely else 1  # how many taken values to one refused
    return vary(st.one_of(*[taken] * share, st.sampled_from(refused)).map(constant))


def twice(item: st.SearchStrategy[Maker], vary: Vary, least: int = 0) -> st.SearchStrategy[Maker]:
    """A list or a tuple holding each of its (at least ``least``) items twice, or, varied,
    no list at all."""

    def doubled(makers: list[Maker], kind: type) -> Maker:
        def make() -> Any:
            made = [make() for make in makers]
            return kind(made + made)

        return make

    items = st.lists(item, min_size=least, max_size=3)
    listed = st.one_of(
        items.map(lambda m: doubled(m, list)), items.map(lambda m: doubled(m, tuple))
    )
    return listed if vary is usual else vary(st.one_of(listed, st.just(constant("ab"))))


def connections(vary: Vary) -> st.SearchStrategy[Maker]:
    attributes = vary(record(ExtendedAttribute, key=leaves(TEXT, vary), value=leaves(TEXT, vary)))
    events = vary(
        record(
            ProvisioningEvent,
            occurred_at=leaves(TICKS, vary),
            status=leaves(TEXT, vary),
            event_by=leaves(TEXT, vary),
            event_type=leaves(TEXT, vary),
            service_plan=leaves(TEXT, vary),
            mdn=leaves(TEXT, vary),
            msisdn=leaves(TEXT, vary),
            extended_attributes=twice(attributes, vary),
        )
    )
    edges = vary(record(KeptEdge, cursor=leaves(TEXT, vary), node=events))
    pages = vary(
        record(
            PageInfo,
            has_next_page=leaves(FLAGS, vary),
            has_previous_page=leaves(FLAGS, vary),
            start_cursor=leaves(TEXT, vary),
            end_cursor=leaves(TEXT, vary),
        )
    )
    return vary(
        record(
            ProvisioningEventConnection,
            edges=twice(edges, vary, least=1),
            page_info=pages,
            count_events=st.one_of(st.none(), st.integers(0, 9)).map(counter),
        )
    )


# Mostly usual records, whose completions plans keep; now and then odd ones.
CONNECTIONS = [*[connections(usual)] * 4, connections(rarely), connections(odd)]


async def answers(text: str, variables: dict, make: Maker) -> tuple[list[Any], Any]:
    """The compiled schema's two answers over the same records, and graphql-core's."""
    history = make()
    kept = Records(lambda: history, lambda: None)
    ours = [await answer(COMPILED, text, variables, kept) for _ in range(2)]
    theirs = await answer(PLAIN, text, variables, Records(make, lambda: None))
    return ours, theirs


def comparable(result: Any) -> tuple[Any, list[Any]]:
    return canonical(result.data), [(e.message, e.path, e.locations) for e in result.errors or []]


def edges_of(result: Any) -> list[Any]:
    found: list[Any] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key.startswith("edges") and isinstance(item, list):
                    found.extend(item)
                walk(item)

    walk(result.data)
    return found


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("COMPILED_EXAMPLES"),
    suppress_health_check=list(HealthCheck),
)
@given(
    text=documents().filter(lambda text: "edges" in text),
    variables=st.fixed_dictionaries({name: st.booleans() for name in VARIABLES}),
    make=st.sampled_from(CONNECTIONS).flatmap(lambda connection: connection),
)
def test_plans_answer_from_what_they_kept_as_graphql_core_does(text, variables, make):
    used = {name: value for name, value in variables.items() if f"${name}" in text}
    # A loop of its own, leaving the tests' loop alone.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        (first, second), theirs = runner.run(answers(text, used, make))
    assert comparable(first) == comparable(theirs)
    assert comparable(second) == comparable(theirs)
    again = [a is b for a, b in zip(edges_of(first), edges_of(second), strict=False)]
    note(f"completions: {'taken again' if any(again) else 'never taken again'}")


def kept_history() -> Records:
    edges = [KeptEdge(f"c{n}", event(n)) for n in range(3)]
    page = PageInfo(has_next_page=True, has_previous_page=False, start_cursor="c0", end_cursor="c2")
    history = ProvisioningEventConnection(edges=edges, page_info=page, count_events=None)
    return Records(lambda: history, list)


async def test_a_plan_completes_a_remembered_record_once():
    kept = kept_history()
    variables = {"skipped": False, "kept": True}

    first = await answer(COMPILED, EVERYTHING, variables, kept)
    second = await answer(COMPILED, EVERYTHING, variables, kept)

    assert first.errors is None
    assert comparable(second) == comparable(first)
    assert all(a is b for a, b in zip(edges_of(first), edges_of(second), strict=True))
    assert len(edges_of(first)) == 3


async def test_plans_taking_turns_on_the_same_records_each_answer_their_own():
    kept = kept_history()
    variants = [{"skipped": False, "kept": True}, {"skipped": True, "kept": False}]
    results = []

    for variables in [*variants, *variants]:
        ours = await answer(COMPILED, EVERYTHING, variables, kept)
        assert comparable(ours) == comparable(await answer(PLAIN, EVERYTHING, variables, kept))
        results.append(ours)

    assert comparable(results[0]) != comparable(results[1])

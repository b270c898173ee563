"""What every operation runs around it (graph.observability.OperationHooks) keeps what it
can between requests: a valid document, parsed and validated once, is kept only for the
schema and limits it passed; an operation's cost only for the values of the variables it
reads."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import strawberry
from graphql import DocumentNode
from strawberry.extensions import SchemaExtension
from support import FastTier, in_process

from graph.context import Context
from graph.observability import OperationHooks, Schema
from graph.schema import schema
from models.principal import LOCAL_DEVELOPER

SEED_ESN = '(kind: ESN, identifier: "09123456123")'
DEEP = (
    f"{{ device{SEED_ESN} {{ provisioningHistory(first: 1) "
    "{ edges { node { extendedAttributes { key } } } } } }"
)
ALIASES = "{ " + " ".join(f"a{i}: __typename" for i in range(4)) + " }"


@pytest.mark.parametrize(
    ("strict", "document", "refusal"),
    [
        ({"max_query_depth": 4}, DEEP, {"code": "QUERY_TOO_COMPLEX", "limit": "depth"}),
        (
            {"max_query_tokens": 50},
            "{ " + "__typename " * 60 + "}",
            {"code": "QUERY_TOO_COMPLEX", "limit": "tokens"},
        ),
        ({"max_query_aliases": 3}, ALIASES, {"code": "QUERY_TOO_COMPLEX", "limit": "aliases"}),
        (
            {"introspection": False},
            "{ __schema { queryType { name } } }",
            {"code": "GRAPHQL_VALIDATION_FAILED"},
        ),
    ],
)
async def test_a_document_kept_valid_is_refused_where_the_limits_refuse_it(
    tier: FastTier, tmp_path: Path, strict: dict, document: str, refusal: dict
):
    (tmp_path / "loose").mkdir()
    async with in_process(tier, tmp_path / "loose") as loose:
        for _ in range(2):  # the second time, from what the first kept
            await loose.query(document)
    (tmp_path / "strict").mkdir()
    async with in_process(tier, tmp_path / "strict", **strict) as limited:
        body = await limited.query(document, expect_errors=True)
    assert body.get("data") is None, body
    assert {key: body["errors"][0]["extensions"][key] for key in refusal} == refusal


@strawberry.type
class Query:
    hello: str = "world"


async def test_a_valid_document_is_parsed_once_and_kept_for_its_schema_alone(api):
    seen: list[DocumentNode | None] = []

    class Probe(SchemaExtension):
        def on_execute(self) -> Iterator[None]:
            seen.append(self.execution_context.graphql_document)
            yield

    probed = Schema(query=Query, extensions=[OperationHooks, Probe])

    async def run(schema: strawberry.Schema, document: str) -> strawberry.types.ExecutionResult:
        context = Context(services=api.services, principal=LOCAL_DEVELOPER)
        return await schema.execute(document, context_value=context, root_value=Query())

    for _ in range(2):
        assert (await run(probed, "{ hello }")).data == {"hello": "world"}
    first, again = seen
    assert first is not None
    assert again is first

    # The service's schema, where Query has no hello.
    (error,) = (await run(schema, "{ hello }")).errors or []
    assert error.extensions == {"code": "GRAPHQL_VALIDATION_FAILED"}


PAGES = "query ($first: Int) { devices(first: $first) { edges { cursor } } }"
FILTERED = f"""query ($filter: ProvisioningEventFilter) {{ device{SEED_ESN} {{
    provisioningHistory(first: 5, filter: $filter) {{ edges {{ cursor }} }} }} }}"""


@pytest.mark.parametrize(
    ("document", "cheap", "dear", "cost"),
    [
        # A page size must be an integer: 1.0 is no page size, so the default (50).
        (PAGES, {"first": 1}, {"first": 1.0}, 50),
        (FILTERED, {"filter": {"eventBy": None}}, {"filter": {"eventBy": ["nobody"]}}, 5 + 5_000),
    ],
)
async def test_a_cost_is_kept_for_the_values_it_was_priced_with_alone(
    tier: FastTier, tmp_path: Path, document: str, cheap: dict, dear: dict, cost: int
):
    async with in_process(tier, tmp_path, max_query_cost=20) as api:
        for _ in range(2):  # the second time, from what the first kept
            await api.query(document, cheap)
        body = await api.query(document, dear, expect_errors=True)
    assert body.get("data") is None, body
    (error,) = body["errors"]
    assert error["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "cost",
        "cost": cost,
        "maximum": 20,
    }

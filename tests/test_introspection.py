"""INTROSPECTION: on by default; off, __schema and __type are refused with a typed
validation error, per service, while __typename still answers."""

from collections.abc import Iterator

import pytest
from support import Api, api_server

SCHEMA = "{ __schema { queryType { name } } }"
TYPE = '{ __type(name: "Device") { name } }'


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from api_server(tmp_path_factory.mktemp("introspection"), introspection=False)


@pytest.mark.parametrize(("document", "field"), [(SCHEMA, "__schema"), (TYPE, "__type")])
async def test_introspection_switched_off_is_refused(closed, document, field):
    body = await closed.query(document, expect_errors=True)
    assert body.get("data") is None
    # One error for each field of an introspection type, graphql-core's rule says.
    errors = body["errors"]
    assert {e["extensions"]["code"] for e in errors} == {"GRAPHQL_VALIDATION_FAILED"}
    assert "introspection has been disabled" in errors[0]["message"]
    assert f"'{field}'" in errors[0]["message"]


async def test_typename_answers_with_introspection_off(closed):
    assert (await closed.query("{ __typename }"))["data"] == {"__typename": "Query"}


async def test_introspection_is_on_by_default_whatever_another_service_says(api, closed):
    # The same document just refused by the other service, in this process: the
    # validation cache keeps the two apart.
    await closed.query(SCHEMA, expect_errors=True)
    body = await api.query(SCHEMA)
    assert body["data"] == {"__schema": {"queryType": {"name": "Query"}}}
    body = await api.query(TYPE)
    assert body["data"] == {"__type": {"name": "Device"}}

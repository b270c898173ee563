"""A recipe's plain fields are declared once (``RecipeFields``) and every derivation agrees
with the declaration: the table's column, the input record and its validation, the event
JSON, the GraphQL type, input and event payload. A field added to the declaration is
checked everywhere here; one written out by hand beside it fails."""

import dataclasses
from datetime import UTC, datetime
from types import NoneType
from typing import Any, get_args

import pytest
from graphql import (
    GraphQLInputObjectType,
    GraphQLNonNull,
    GraphQLObjectType,
    NullValueNode,
    build_schema,
    print_type,
)
from pydantic.alias_generators import to_camel
from sqlalchemy import JSON, String

from graph.recipes.types import CreateProvisioningRecipeInput, RecipeOwnerInput
from graph.schema import schema
from models import recipe_events
from models.recipe_fields import RECIPE_FIELDS, Check, RecipeField, values_of
from models.recipes import ProvisioningRecipe
from resolvers.recipes import NewRecipe, validate

ORG = "624c9c670000000000000000ad7cd727"
SDL = build_schema(schema.as_str())
COLUMNS = ProvisioningRecipe.__table__.columns
FIELD_NAMES = [field.name for field in RECIPE_FIELDS]
KEYS = [field.key for field in RECIPE_FIELDS]
SAMPLES: dict[Check | None, Any] = {
    Check.UID: "abcdef0123456789abcdef0123456789",
    Check.MAC_ADDRESS: "29:9F:66:C8:0A:1B",
    Check.TAGS: ["87e4600400000000000000004bea2712"],
}
FLAGS = {bool: True, int: 7}


def sample(field: RecipeField) -> Any:
    """A valid value, already in canonical form."""
    if field.check is Check.TEXT:
        assert field.max_length is not None
        return "T" * field.max_length
    if field.check is None:
        return FLAGS[next(t for t in (*get_args(field.annotation), field.annotation) if t in FLAGS)]
    return SAMPLES[field.check]


def full_row(**changes: Any) -> ProvisioningRecipe:
    now = datetime.now(UTC)
    values = {field.name: sample(field) for field in RECIPE_FIELDS} | changes
    return ProvisioningRecipe(
        **values, uid="f" * 32, organization_uid=ORG, created_at=now, updated_at=now
    )


def graphql_type(name: str) -> GraphQLObjectType | GraphQLInputObjectType:
    found = SDL.get_type(name)
    assert isinstance(found, GraphQLObjectType | GraphQLInputObjectType)
    return found


def test_the_declaration_is_not_empty_and_its_keys_are_unique():
    assert "brand" in FIELD_NAMES
    assert len(set(KEYS)) == len(KEYS)


@pytest.mark.parametrize("field", RECIPE_FIELDS, ids=FIELD_NAMES)
def test_each_field_is_a_column(field):
    column = COLUMNS[field.name]
    assert column.nullable is not field.required
    if field.check is Check.TAGS:
        assert isinstance(column.type, JSON)
    elif isinstance(column.type, String):
        assert column.type.length == field.max_length


@pytest.mark.parametrize("field", RECIPE_FIELDS, ids=FIELD_NAMES)
def test_each_field_is_a_field_of_the_input_record(field):
    declared = {f.name: f for f in dataclasses.fields(NewRecipe)}[field.name]
    has_default = declared.default is not dataclasses.MISSING
    assert has_default is not field.required
    if has_default:
        assert declared.default is None


@pytest.mark.parametrize("type_name", ["ProvisioningRecipe", "ProvisioningRecipeCreatedPayload"])
def test_the_output_types_have_every_field_right_after_the_status(type_name):
    fields = graphql_type(type_name).fields
    names = list(fields)
    start = names.index("status") + 1
    assert names[start : start + len(KEYS)] == KEYS, print_type(graphql_type(type_name))
    for field in RECIPE_FIELDS:
        assert isinstance(fields[field.key].type, GraphQLNonNull) is field.required, field.key
        assert fields[field.key].description == field.description, field.key


def test_the_create_input_has_every_field_right_after_the_organization():
    fields = graphql_type("CreateProvisioningRecipeInput").fields
    names = list(fields)
    start = names.index("organizationUid") + 1
    assert names[start : start + len(KEYS)] == KEYS
    for field in RECIPE_FIELDS:
        wanted = fields[field.key]
        assert isinstance(wanted.type, GraphQLNonNull) is field.required, field.key
        assert wanted.description == field.description, field.key
        assert wanted.ast_node is not None
        default = wanted.ast_node.default_value
        assert isinstance(default, NullValueNode) is not field.required, field.key


def test_the_create_input_maps_onto_the_input_record_field_for_field():
    values = {field.name: sample(field) for field in RECIPE_FIELDS}
    given = CreateProvisioningRecipeInput(**values, owner=RecipeOwnerInput(), organization_uid=ORG)
    assert values_of(given) == values
    new = NewRecipe(**values_of(given), organization_uid=ORG)
    assert values_of(new) == values


def test_no_plain_field_is_written_out_beside_the_declaration():
    """What the table, the GraphQL type and the create input all hold by hand: only the
    organization, the recipe's tenant, whose checks and uses are its own."""
    stored = {to_camel(column.name) for column in COLUMNS}
    typed = set(graphql_type("ProvisioningRecipe").fields)
    given = set(graphql_type("CreateProvisioningRecipeInput").fields)
    assert (stored & typed & given) - set(KEYS) == {"organizationUid"}


def test_the_created_event_holds_every_field_in_order_and_reads_back():
    row = full_row()
    payload = recipe_events.created(row, 1)["payload"]
    keys = list(payload)
    start = keys.index("status") + 1
    assert keys[start : start + len(KEYS)] == KEYS
    for field in RECIPE_FIELDS:
        assert payload[field.key] == getattr(row, field.name), field.key
    assert recipe_events.field_values(payload) == values_of(row)


def test_the_created_event_leaves_out_absent_optional_fields_only():
    absent = {field.name: None for field in RECIPE_FIELDS if not field.required}
    payload = recipe_events.created(full_row(**absent), 1)["payload"]
    for field in RECIPE_FIELDS:
        assert (field.key in payload) is field.required, field.key
    assert recipe_events.field_values(payload) == values_of(full_row(**absent))


@pytest.mark.parametrize("field", RECIPE_FIELDS, ids=FIELD_NAMES)
def test_each_field_is_validated_under_its_own_key(field):
    base = {f.name: sample(f) for f in RECIPE_FIELDS}
    accepted, errors = validate(NewRecipe(**base, organization_uid=ORG))
    assert errors == []
    assert values_of(accepted) == base
    wrong = {
        Check.TEXT: "T" * ((field.max_length or 0) + 1),
        Check.UID: "not a uid",
        Check.MAC_ADDRESS: "29:9F:66",
        Check.TAGS: [SAMPLES[Check.UID]] * ((field.max_length or 0) + 1),
    }
    if field.check is not None:
        changed = base | {field.name: wrong[field.check]}
        _, errors = validate(NewRecipe(**changed, organization_uid=ORG))
        assert [e.field for e in errors] == [["input", field.key]]
    if field.required:
        _, errors = validate(NewRecipe(**base | {field.name: None}, organization_uid=ORG))
        assert [(e.field, e.code) for e in errors] == [(["input", field.key], "REQUIRED")]


def test_each_field_is_typed_alike_in_the_table_and_the_graphql_type():
    """A flag is a Boolean, text a String, tags a list of Strings, whatever surface."""
    fields = graphql_type("ProvisioningRecipe").fields
    scalars = {bool: "Boolean", str: "String", int: "Int"}
    for field in RECIPE_FIELDS:
        kinds = [t for t in (*get_args(field.annotation), field.annotation) if t in scalars]
        shown = str(fields[field.key].type).strip("!")
        if kinds:
            assert shown == scalars[kinds[0]], field.key
        else:
            element = get_args(next(a for a in get_args(field.annotation) if a is not NoneType))
            assert shown == f"[{scalars[element[0]]}!]", field.key

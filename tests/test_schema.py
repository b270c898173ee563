"""schema.graphql is generated from the code and covers the public contract."""

from pathlib import Path

from graphql import build_schema

from graph.schema import schema

ROOT = Path(__file__).parent.parent


def test_schema_graphql_is_up_to_date():
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == schema.as_str() + "\n", "schema.graphql is stale: run `make schema`"


def test_schema_graphql_is_valid_sdl():
    built = build_schema((ROOT / "schema.graphql").read_text())
    assert built.query_type is not None
    assert "provisioningHistory" in built.get_type("Device").fields


def test_the_contract_is_covered_in_full():
    contract = build_schema((ROOT / "tests" / "data" / "contract.graphql").read_text())
    ours = build_schema((ROOT / "schema.graphql").read_text())
    missing = []
    for name, wanted in contract.type_map.items():
        if name.startswith("__"):
            continue
        have = ours.get_type(name)
        if have is None:
            missing.append(name)
            continue
        for field, definition in getattr(wanted, "fields", {}).items():
            if field not in have.fields:
                missing.append(f"{name}.{field}")
                continue
            for argument in getattr(definition, "args", {}):
                if argument not in have.fields[field].args:
                    missing.append(f"{name}.{field}({argument})")
        for value in getattr(wanted, "values", {}):
            if value not in have.values:
                missing.append(f"{name}.{value}")
        for member in getattr(wanted, "types", ()):
            if member.name not in {t.name for t in have.types}:
                missing.append(f"{name} | {member.name}")
    assert missing == []

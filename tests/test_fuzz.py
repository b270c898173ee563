"""Property-based fuzzing of /graphql with schemathesis: whatever a client sends that the
schema allows, the service answers without a server error and without an error that
has no code (an unexpected exception would surface as INTERNAL_SERVER_ERROR).

Bounded for CI: a fixed number of examples per root field, from a fixed seed so that a
run is repeatable; FUZZ_EXAMPLES widens it for a longer local hunt.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from support import Api, api_server

SCHEMA = schemathesis.graphql.from_path(Path(__file__).parents[1] / "schema.graphql")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
# Text that only an unmasked exception would put into a response.
LEAKS = ("Traceback", 'File "', "sqlalchemy", "lxml", "soap:Envelope", "Exception")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from api_server(tmp_path_factory.mktemp("fuzz"))


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("FUZZ_EXAMPLES"),
    suppress_health_check=list(HealthCheck),
)
def test_any_valid_operation_gets_a_typed_answer(case, live: Api) -> None:
    response = case.call(base_url=f"{live.base_url}/graphql", headers=live.headers, timeout=60)
    assert response.status_code < 500, response.text
    body = response.json()
    for error in body.get("errors") or []:
        assert not any(leak in error["message"] for leak in LEAKS), error
        if "path" in error:  # raised while executing: every such error is typed
            code = (error.get("extensions") or {}).get("code")
            assert code, error
            assert code != "INTERNAL_SERVER_ERROR", error

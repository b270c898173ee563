"""The service driven by the JavaScript clients frontends use, from npm (tests/clients/):
Apollo Client over HTTP (multipart subscriptions, persisted queries), graphql-sse in both
connection modes and graphql-ws. Each script prints one JSON line per check."""

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import OTHER_ORG, Api, assert_seed_shape, bearer, full_input

from server.testing import authorization

CLIENTS = Path(__file__).parent / "clients"
Check = dict[str, Any]


async def run_client(api: Api, script: str, *args: str, **environment: str) -> dict[str, Check]:
    """The checks a client script made against ``api``, by name."""
    node = shutil.which("node")
    assert node, "the client tests need Node.js (make test installs their packages)"
    assert (CLIENTS / "node_modules").is_dir(), (
        "tests/clients/node_modules is missing: run `make test`, or `npm ci --prefix tests/clients`"
    )
    completed = await asyncio.to_thread(
        subprocess.run,
        [node, str(CLIENTS / script), api.base_url, *args],
        capture_output=True,
        text=True,
        # The script bounds each step and itself (100 s): this only backs that up.
        timeout=150,
        check=False,
        env={
            **os.environ,
            "CLIENT_AUTHORIZATION": api.headers["Authorization"],
            "CLIENT_RECIPE_INPUT": json.dumps(full_input()),
            **environment,
        },
    )
    assert completed.returncode == 0, completed.stderr
    checks = [json.loads(line) for line in completed.stdout.splitlines()]
    failed = [f"{c['name']}: {c['detail']}" for c in checks if c["status"] != "ok"]
    assert failed == []
    return {c["name"]: c for c in checks}


def assert_delivered(check: Check) -> None:
    """The subscriber got the events the mutations created, as the mutations returned them."""
    created, received = check["detail"]["created"], check["detail"]["received"]
    assert [r["id"] for r in received] == [c["id"] for c in created]
    assert [r["json"] for r in received] == [c["json"] for c in created]
    for event in received:
        assert_seed_shape(event["json"])


def assert_history_read(check: Check) -> None:
    assert check["detail"]["edges"] == 2


async def test_graphql_ws_queries_and_subscribes(api):
    checks = await run_client(api, "ws.mjs")
    assert_history_read(checks["graphql-ws query"])
    assert_delivered(checks["graphql-ws subscription"])


async def test_apollo_client_queries_and_subscribes_over_http_multipart(api):
    checks = await run_client(api, "apollo.mjs", "subscription")
    assert_history_read(checks["apollo query"])
    assert_delivered(checks["apollo multipart subscription"])


@pytest.mark.parametrize("connection", ["distinct", "single"])
async def test_graphql_sse_queries_and_subscribes(api, connection):
    checks = await run_client(api, "sse.mjs", connection, "subscription")
    assert_history_read(checks[f"graphql-sse {connection} query"])
    assert_delivered(checks[f"graphql-sse {connection} subscription"])


async def test_apollo_persisted_queries_go_by_hash_first(api):
    checks = await run_client(api, "apollo.mjs", "apq")
    registers = checks["apollo persisted query registers"]["detail"]
    by_hash = checks["apollo persisted query by hash"]["detail"]
    over_get = checks["apollo persisted query by hash over GET"]["detail"]
    # Unknown, the hash alone is refused and the document follows; known, the hash suffices.
    assert [(r["method"], r["document"]) for r in registers["requests"]] == [
        ("POST", False),
        ("POST", True),
    ]
    assert registers["withDocument"] == 1
    assert [(r["method"], r["document"]) for r in by_hash["requests"]] == [("POST", False)]
    assert [(r["method"], r["document"]) for r in over_get["requests"]] == [("GET", False)]
    assert by_hash["withDocument"] == over_get["withDocument"] == 0
    requests = registers["requests"] + by_hash["requests"] + over_get["requests"]
    hashes = {r["hash"] for r in requests}
    assert len(hashes) == 1
    assert re.fullmatch("[0-9a-f]{64}", str(*hashes))
    assert registers["edges"] == by_hash["edges"] == over_get["edges"] == 2


@pytest.mark.parametrize(
    ("script", "arguments", "name"),
    [
        ("apollo.mjs", ["filtered"], "apollo multipart"),
        ("sse.mjs", ["distinct", "filtered"], "graphql-sse distinct"),
        ("sse.mjs", ["single", "filtered"], "graphql-sse single"),
    ],
)
async def test_a_subscriber_over_http_gets_only_its_organizations_events(
    api, script, arguments, name
):
    narrow = authorization(bearer(organizations=[OTHER_ORG]))
    checks = await run_client(
        api,
        script,
        *arguments,
        CLIENT_NARROW_AUTHORIZATION=narrow["Authorization"],
        CLIENT_OTHER_ORGANIZATION=OTHER_ORG,
    )
    detail = checks[f"{name} subscription sees only its organizations"]["detail"]
    # Ours was created first: receiving theirs first means ours was never sent.
    assert detail["received"] == detail["theirs"] != detail["ours"]

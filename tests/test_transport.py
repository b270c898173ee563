"""GraphQL over HTTP and WebSocket, checked by clients that are not this project's code."""

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport
from support import document

AUDIT = Path(__file__).parent / "http_audit"
LATEST = document("LatestEvents")
SEED_ESN = {"kind": "ESN", "identifier": "09123456123"}
LATEST_TWO = GraphQLRequest(LATEST, variable_values={**SEED_ESN, "last": 2})


async def test_the_graphql_over_http_audit_passes_in_full(api):
    node = shutil.which("node")
    assert node, "the graphql-http audit needs Node.js (make test installs its package)"
    completed = await asyncio.to_thread(
        subprocess.run,
        [node, str(AUDIT / "audit.mjs"), f"{api.base_url}/graphql"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "AUDIT_AUTHORIZATION": api.headers["Authorization"]},
    )
    assert completed.returncode == 0, completed.stderr
    results = [json.loads(line) for line in completed.stdout.splitlines()]
    failed = [f"{r['status']}: {r['name']} ({r['reason']})" for r in results if r["status"] != "ok"]
    assert len(results) >= 50
    assert failed == []


async def test_graphql_response_json_is_used_when_accepted(api):
    accept = {"accept": "application/graphql-response+json, application/json;q=0.9"}
    ok = await api.query("{ __typename }", headers=accept)
    assert ok == {
        "data": {"__typename": "Query"},
        "extensions": {"cost": {"upstreamCalls": 0, "cacheHits": 0}},
    }
    async with httpx.AsyncClient(headers=api.headers) as http:
        invalid = await http.post(
            f"{api.base_url}/graphql", json={"query": "{ nope }"}, headers=accept
        )
        legacy = await http.post(f"{api.base_url}/graphql", json={"query": "{ nope }"})
    assert invalid.status_code == 400
    assert invalid.headers["content-type"] == "application/graphql-response+json"
    assert "data" not in invalid.json()
    assert legacy.status_code == 200
    assert legacy.headers["content-type"] == "application/json"


async def test_queries_work_over_get(api):
    async with httpx.AsyncClient(headers=api.headers) as http:
        response = await http.get(f"{api.base_url}/graphql", params={"query": "{ __typename }"})
    assert response.json()["data"] == {"__typename": "Query"}


async def test_a_browser_gets_graphiql(api):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{api.base_url}/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_gql_runs_a_history_query_over_http(api):
    transport = HTTPXAsyncTransport(url=f"{api.base_url}/graphql", headers=api.headers)
    async with Client(transport=transport) as session:
        result = await session.execute(LATEST_TWO)
    edges = result["device"]["provisioningHistory"]["edges"]
    assert len(edges) == 2


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
async def test_gql_runs_a_history_query_over_websocket(api, subprotocol):
    transport = api.websocket(subprotocol)
    async with Client(transport=transport) as session:
        result = await session.execute(LATEST_TWO)
    assert len(result["device"]["provisioningHistory"]["edges"]) == 2

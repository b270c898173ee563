"""Persisted queries, read off the wire: Apollo's automatic persisted queries (a hash alone
is PersistedQueryNotFound until the document is sent with it, the hash checked; kept
where the cache is, so replicas share them), trusted documents (PERSISTED_QUERIES=only:
only the manifest's documents run, over HTTP, streams and WebSockets), ``off``, and the
manifest generated from tests/queries. Hashes here are computed by the tests themselves.
Apollo's PersistedQueryLink itself is run in tests/test_clients.py."""

import hashlib
import json
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from support import QUERIES, WAIT_S, Api, api_server, document, full_input
from test_sockets import LEGACY, TRANSPORT, error_of, socket
from test_startup import assert_refused_in_one_line, serve

from resolvers.documents import DOCUMENT_TTL_S, MAX_DOCUMENT_BYTES, MemoryDocuments, RedisDocuments
from server.app import create_app
from server.cli import main
from server.settings import Settings

ROOT = Path(__file__).parent.parent
MANIFEST = ROOT / "server" / "persisted-documents.json"
RECIPES = document("Recipes")
CREATE = document("CreateRecipe")
GRAPHQL_RESPONSE = "application/graphql-response+json"
SSE = "text/event-stream"
MULTIPART = 'multipart/mixed;subscriptionSpec="1.0",application/json'

NOT_FOUND = {
    "message": "PersistedQueryNotFound",
    "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
}
NOT_SUPPORTED = {
    "message": "PersistedQueryNotSupported",
    "extensions": {"code": "PERSISTED_QUERY_NOT_SUPPORTED"},
}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unique(text: str) -> str:
    """The document with a comment of its own: no earlier run (nor replica) registered it,
    and no manifest holds it."""
    return f"{text}# {uuid.uuid4()}\n"


def apq(hash_: str, version: object = 1) -> dict:
    return {"persistedQuery": {"version": version, "sha256Hash": hash_}}


async def post(api: Api, body: dict, accept: str = "application/json") -> httpx.Response:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        return await http.post(
            f"{api.base_url}/graphql", json=body, headers={**api.headers, "accept": accept}
        )


async def get(api: Api, **params: object) -> httpx.Response:
    """A GET as Apollo Client sends one (a GET without ``query`` that accepts */* or
    text/html is answered with GraphiQL)."""
    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
    headers = {**api.headers, "accept": f"{GRAPHQL_RESPONSE},application/json;q=0.9"}
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        return await http.get(f"{api.base_url}/graphql", params=encoded, headers=headers)


def recipe_count(body: dict) -> int:
    assert "errors" not in body, body["errors"]
    return body["data"]["provisioningRecipes"]["totalCount"]


async def recipes(api: Api) -> int:
    return recipe_count(await api.query(RECIPES))


def refused(response: httpx.Response, code: str) -> dict:
    """The one error of a refusal as JSON answers it (200, ``data`` null)."""
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code, error
    return error


def sse_events(response: httpx.Response) -> list[tuple[str, str]]:
    """(event, data) of each event of a complete SSE response."""
    assert response.headers["content-type"].startswith(SSE)
    events = []
    for block in response.text.split("\r\n\r\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\r\n") if ": " in line)
        if "event" in fields:
            events.append((fields["event"], fields.get("data", "")))
    return events


# --- Automatic persisted queries ------------------------------------------------------


async def test_a_hash_alone_runs_once_the_document_was_sent_with_it(api: Api):
    text = unique(RECIPES)
    named = {"extensions": apq(sha256(text)), "variables": {"first": 5}}

    assert (await post(api, named)).json() == {"data": None, "errors": [NOT_FOUND]}
    registered = await post(api, {**named, "query": text})
    assert recipe_count(registered.json()) == 0
    await api.query(CREATE, {"input": full_input()})
    # The hash alone now runs the stored document, with this request's variables.
    again = (await post(api, named)).json()
    assert recipe_count(again) == 1
    assert len(again["data"]["provisioningRecipes"]["edges"]) == 1


@pytest.mark.parametrize(
    "name", [{"documentId": sha256(RECIPES)}, {"extensions": apq(sha256(RECIPES))}]
)
async def test_the_manifests_documents_need_no_registering(api: Api, name: dict):
    # A client built with persisted documents (GraphQL Code Generator) sends ids only.
    assert recipe_count((await post(api, {**name, "variables": {"first": 1}})).json()) == 0


async def test_not_found_is_a_request_error_for_graphql_response_json(api: Api):
    response = await post(api, {"extensions": apq(sha256(unique(RECIPES)))}, GRAPHQL_RESPONSE)
    assert response.status_code == 400
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert response.json() == {"errors": [NOT_FOUND]}


async def test_a_hash_that_is_not_the_documents_runs_nothing_and_stores_nothing(api: Api):
    text, other = unique(CREATE), unique(CREATE)
    response = await post(
        api,
        {"query": text, "variables": {"input": full_input()}, "extensions": apq(sha256(other))},
    )
    error = refused(response, "BAD_USER_INPUT")
    assert "sha256Hash is not the hash of the document sent" in error["message"]
    assert await recipes(api) == 0  # the mutation did not run
    for hash_ in (sha256(text), sha256(other)):
        assert (await post(api, {"extensions": apq(hash_)})).json()["errors"] == [NOT_FOUND]


async def test_a_get_naming_a_document_runs_it_whatever_it_accepts(api: Api):
    # curl's Accept: */* would otherwise get GraphiQL's page, unauthenticated.
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        response = await http.get(
            f"{api.base_url}/graphql",
            params={"documentId": sha256(RECIPES), "variables": '{"first": 1}'},
            headers={**api.headers, "accept": "*/*"},
        )
        page = await http.get(f"{api.base_url}/graphql", headers={"accept": "*/*"})
    assert recipe_count(response.json()) == 0
    assert page.headers["content-type"].startswith("text/html")


async def test_a_registered_document_runs_by_get(api: Api):
    text = unique(RECIPES)
    unknown = await get(api, extensions=apq(sha256(text)), variables={"first": 1})
    assert unknown.status_code == 400
    assert unknown.json() == {"errors": [NOT_FOUND]}
    await post(api, {"query": text, "extensions": apq(sha256(text))})
    found = await get(api, extensions=apq(sha256(text)), variables={"first": 1})
    assert recipe_count(found.json()) == 0
    by_id = await get(api, documentId=f"sha256:{sha256(text)}")
    assert recipe_count(by_id.json()) == 0


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"extensions": apq(sha256(RECIPES), version=2)}, "version 2 is not supported"),
        ({"extensions": apq(sha256(RECIPES), version="1")}, 'version "1" is not supported'),
        ({"extensions": apq(sha256(RECIPES), version=True)}, "version true is not supported"),
        ({"extensions": apq(sha256(RECIPES).upper())}, "sha256Hash must be 64 lowercase"),
        ({"extensions": apq(sha256(RECIPES)[:63])}, "sha256Hash must be 64 lowercase"),
        ({"extensions": {"persistedQuery": sha256(RECIPES)}}, "must be an object"),
        ({"documentId": f"md5:{sha256(RECIPES)}"}, "documentId must be sha256:<hash>"),
        ({"documentId": 12}, "documentId must be sha256:<hash>"),
        (
            {"query": RECIPES, "extensions": apq(sha256(RECIPES), version=2)},
            "version 2 is not supported",
        ),
        (
            {"documentId": sha256(RECIPES), "extensions": apq(sha256(CREATE))},
            "name different documents",
        ),
    ],
)
async def test_a_malformed_name_is_bad_user_input(api: Api, body: dict, words: str):
    assert words in refused(await post(api, body), "BAD_USER_INPUT")["message"]


async def test_replicas_share_registered_documents(tmp_path: Path, redis_url: str):
    text = unique(RECIPES)
    named = {"extensions": apq(sha256(text))}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    replicas = [api_server(tmp_path / name, cache_url=redis_url) for name in ("a", "b")]
    first, second = next(replicas[0]), next(replicas[1])
    redis = Redis.from_url(redis_url)
    try:
        assert (await post(second, named)).json()["errors"] == [NOT_FOUND]
        await post(first, {**named, "query": text})
        # Kept for a while, not for ever: a document nobody uses goes.
        key = f"{RedisDocuments.PREFIX}{sha256(text)}"
        assert 0 < await redis.pttl(key) <= DOCUMENT_TTL_S * 1000
        await redis.pexpire(key, 60_000)  # as if most of its time had passed
        assert recipe_count((await post(second, named)).json()) == 0
        assert await redis.pttl(key) > 60_000  # used: its time starts again
    finally:
        await redis.aclose()
        for replica in replicas:
            replica.close()


async def test_streams_name_their_document_by_hash(api: Api):
    text = unique(RECIPES)
    named = {"extensions": apq(sha256(text))}
    (unknown,) = [e for e in sse_events(await post(api, named, SSE)) if e[0] == "next"]
    assert json.loads(unknown[1]) == {"data": None, "errors": [NOT_FOUND]}
    multipart = await post(api, named, MULTIPART)
    assert json.dumps(NOT_FOUND, separators=(",", ":")) in multipart.text
    await post(api, {**named, "query": text})
    events = sse_events(await post(api, named, SSE))
    assert [event for event, _ in events] == ["next", "complete"]
    assert recipe_count(json.loads(events[0][1])) == 0


async def test_the_memory_store_is_bounded_and_forgets_unused_documents():
    now = [0.0]
    store = MemoryDocuments(max_bytes=64 * 1024, ttl_s=60, timer=lambda: now[0])
    await store.put("a" * 64, RECIPES)
    now[0] = 59
    assert await store.get("a" * 64) == RECIPES  # used: kept another minute
    now[0] = 118
    assert await store.get("a" * 64) == RECIPES
    now[0] = 179
    assert await store.get("a" * 64) is None
    # Beyond its bytes, the least recently used go; a document over the size kept, at once.
    for n in range(100):
        await store.put(f"{n:064x}", f"{n}".ljust(1024))
    assert await store.get(f"{99:064x}") is not None
    assert await store.get(f"{0:064x}") is None
    await store.put("b" * 64, "x" * (MAX_DOCUMENT_BYTES + 1))
    assert await store.get("b" * 64) is None


# --- Trusted documents ----------------------------------------------------------------


@pytest.fixture
def trusted(tmp_path: Path):
    yield from api_server(tmp_path, persisted_queries="only")


@pytest.mark.parametrize(
    "name",
    [
        {"documentId": f"sha256:{sha256(RECIPES)}"},
        {"documentId": sha256(RECIPES)},
        {"extensions": apq(sha256(RECIPES))},
        {"query": RECIPES},
        {"query": RECIPES, "extensions": apq(sha256(RECIPES))},
    ],
)
async def test_only_a_manifest_document_runs(trusted: Api, name: dict):
    assert recipe_count((await post(trusted, {**name, "variables": {"first": 1}})).json()) == 0


async def test_an_unknown_document_is_refused_and_runs_nothing(trusted: Api):
    text = unique(CREATE)
    variables = {"input": full_input()}
    for body in (
        {"query": text, "variables": variables},
        {"query": text, "variables": variables, "extensions": apq(sha256(text))},
    ):
        error = refused(await post(trusted, body), "PERSISTED_QUERY_NOT_ALLOWED")
        assert error["message"].startswith("This server runs only trusted documents")
    for body in (
        {"documentId": f"sha256:{sha256(text)}"},
        {"extensions": apq(sha256(text))},  # not registered by the request before
    ):
        error = refused(await post(trusted, body), "PERSISTED_QUERY_NOT_ALLOWED")
        assert sha256(text) in error["message"]
    assert await recipes(trusted) == 0
    # The manifest's own mutation does run.
    created = await post(trusted, {"documentId": sha256(CREATE), "variables": variables})
    assert "errors" not in created.json()
    assert await recipes(trusted) == 1


async def test_a_refusal_is_a_request_error_for_graphql_response_json(trusted: Api):
    response = await post(trusted, {"query": unique(RECIPES)}, GRAPHQL_RESPONSE)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"
    assert "data" not in response.json()


async def test_trusted_documents_hold_on_streams(trusted: Api):
    events = sse_events(await post(trusted, {"query": unique(RECIPES)}, SSE))
    assert [event for event, _ in events] == ["next", "complete"]
    (error,) = json.loads(events[0][1])["errors"]
    assert error["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"
    events = sse_events(await post(trusted, {"documentId": sha256(RECIPES)}, SSE))
    assert recipe_count(json.loads(events[0][1])) == 0


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_trusted_documents_hold_on_websockets(trusted: Api, protocol: str):
    async with socket(trusted, protocol) as opened:
        await opened.start("1", unique(RECIPES))
        error = error_of(await opened.answer("1"))
        assert error["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"
        await opened.start("2", RECIPES)
        answer = await opened.answer("2")
        assert answer["type"] in ("next", "data"), answer
        assert recipe_count(answer["payload"]) == 0


async def test_a_manifest_of_ones_own(tmp_path: Path):
    mine = "query Mine { provisioningRecipes { totalCount } }"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({sha256(mine): mine}))
    for api in api_server(tmp_path, persisted_queries="only", persisted_documents=manifest):
        assert recipe_count((await post(api, {"documentId": sha256(mine)})).json()) == 0
        refused(await post(api, {"query": RECIPES}), "PERSISTED_QUERY_NOT_ALLOWED")


# --- Off ------------------------------------------------------------------------------


async def test_off_refuses_names_and_runs_documents(tmp_path: Path):
    for api in api_server(tmp_path, persisted_queries="off"):
        for name in ({"extensions": apq(sha256(RECIPES))}, {"documentId": sha256(RECIPES)}):
            assert (await post(api, name)).json() == {"data": None, "errors": [NOT_SUPPORTED]}
        # What Apollo's link sends next: the document alone; a hash beside it is ignored.
        assert recipe_count((await post(api, {"query": RECIPES})).json()) == 0
        ignored = {"query": RECIPES, "extensions": apq(sha256(CREATE))}
        assert recipe_count((await post(api, ignored)).json()) == 0


# --- Settings and the manifest --------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot be read"),
        ("{", "is not JSON"),
        ("[]", "is not a JSON object of documents"),
        ('{"a": 1}', "is not a JSON object of documents"),
        ("{}", "lists no documents"),
        (json.dumps({sha256(RECIPES): CREATE}), "does not have that hash"),
    ],
)
def test_only_with_a_manifest_that_cannot_be_used_does_not_start(
    tmp_path: Path, content: str | None, words: str
):
    manifest = tmp_path / "manifest.json"
    if content is not None:
        manifest.write_text(content)
    settings = Settings(_env_file=None, persisted_queries="only", persisted_documents=manifest)
    with pytest.raises(ValueError, match="PERSISTED_DOCUMENTS") as refusal:
        create_app(settings)
    assert words in str(refusal.value)


def test_a_bad_persisted_queries_setting_is_refused():
    with pytest.raises(ValidationError, match="persisted_queries"):
        Settings(_env_file=None, persisted_queries="sometimes")


def test_serve_says_in_one_line_why_the_manifest_cannot_be_used(tmp_path: Path):
    missing = tmp_path / "missing.json"
    result = serve(tmp_path, PERSISTED_QUERIES="only", PERSISTED_DOCUMENTS=str(missing))
    assert_refused_in_one_line(result, f"PERSISTED_DOCUMENTS: {missing} cannot be read")
    assert_refused_in_one_line(
        serve(tmp_path, PERSISTED_QUERIES="sometimes"), "bad setting PERSISTED_QUERIES"
    )


def test_the_committed_manifest_is_the_frontends_documents(capsys):
    committed = MANIFEST.read_text(encoding="utf-8")
    texts = [path.read_text(encoding="utf-8") for path in sorted(QUERIES.glob("*.graphql"))]
    assert json.loads(committed) == {sha256(text): text for text in texts}
    main(["documents", str(QUERIES)])
    assert capsys.readouterr().out == committed, "run `make documents`"

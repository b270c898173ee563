"""Authentication: API tokens and identity-provider JWTs, over HTTP and WebSocket, against
the running service; the development token of `make serve`; the switch that turns it off."""

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from support import (
    AUDIENCE,
    CREATE,
    ISSUER,
    ORG,
    OTHER_ORG,
    PUBLIC_KEY,
    SIGNING_KEY,
    Api,
    api_server,
    bearer,
    full_input,
)

from models.principal import SCOPES
from models.tokens import ApiToken
from resolvers.auth import Unauthenticated
from resolvers.database import create_engine, migrate, sessions
from resolvers.identity import JwtVerifier
from resolvers.tokens import InvalidTokenRequest, TokenStore
from server.app import create_app
from server.settings import Settings
from soap.simulator.background import serving

WAIT_S = 30  # an upper bound for an answer, never a synchronisation
RECIPES = "{ provisioningRecipes(first: 1) { totalCount } }"
PROVGRAPH = Path(sys.executable).parent / "provgraph"


@asynccontextmanager
async def token_store(tmp_path: Path) -> AsyncIterator[TokenStore]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/provgraph.db")
    await migrate(engine)
    try:
        yield TokenStore(sessions(engine))
    finally:
        await engine.dispose()


@pytest.fixture
async def tokens(api: Api, tmp_path: Path) -> AsyncIterator[TokenStore]:
    """The store of the service's own database (the service has migrated it by then)."""
    await api.query("{ __typename }")
    async with token_store(tmp_path) as store:
        yield store


async def expire(store: TokenStore, token_id: int) -> None:
    """Moves a token's expiry into the past, as time would."""
    async with store._sessions() as session, session.begin():
        token = await session.get(ApiToken, token_id)
        assert token is not None
        token.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.add(token)


async def post(api: Api, authorization: str | None, query: str = RECIPES) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        return await http.post(f"{api.base_url}/graphql", json={"query": query}, headers=headers)


def assert_unauthenticated(response: httpx.Response, secret: str = "") -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["message"]
    if secret:
        assert secret not in response.text


# --- API tokens: the store ---------------------------------------------------------


async def test_a_token_is_shown_once_and_stored_only_as_a_digest(tmp_path):
    async with token_store(tmp_path) as store:
        issued = await store.create("ci", [ORG.upper()], ["history:read", "recipes:read"])
        principal = await store.verify(issued.secret)
        (listed,) = await store.all()
    assert re.fullmatch(r"pgr_[A-Za-z0-9_-]{43}", issued.secret)
    assert issued.secret not in listed.model_dump_json()
    assert principal.subject == f"token:{listed.id}"
    assert principal.organizations == {ORG}
    assert principal.scopes == {"history:read", "recipes:read"}
    assert not principal.all_organizations


@pytest.mark.parametrize(
    ("organizations", "scopes", "message"),
    [
        ([ORG], ["recipes:delete"], "Unknown scope recipes:delete"),
        ([ORG], [], "at least one scope"),
        ([], ["history:read"], "at least one organization"),
        (["acme"], ["history:read"], "32 hexadecimal characters"),
    ],
)
async def test_a_token_request_with_unknown_scopes_or_organizations_is_refused(
    tmp_path, organizations, scopes, message
):
    async with token_store(tmp_path) as store:
        with pytest.raises(InvalidTokenRequest, match=message):
            await store.create("ci", organizations, scopes)
        assert await store.all() == []


async def test_revoked_and_expired_tokens_stop_working(tmp_path):
    async with token_store(tmp_path) as store:
        revoked = await store.create("a", ["*"], ["history:read"])
        expiring = await store.create("b", ["*"], ["history:read"], expires_in=timedelta(days=1))
        assert (await store.verify(expiring.secret)).all_organizations
        await store.revoke(revoked.token.id)
        await expire(store, expiring.token.id)
        with pytest.raises(Unauthenticated, match="revoked"):
            await store.verify(revoked.secret)
        with pytest.raises(Unauthenticated, match="expired"):
            await store.verify(expiring.secret)
        with pytest.raises(Unauthenticated, match="not valid"):
            await store.verify(revoked.secret + "x")


async def test_last_use_is_written_at_most_once_a_minute(tmp_path):
    async with token_store(tmp_path) as store:
        issued = await store.create("ci", ["*"], ["history:read"])
        assert (await store.all())[0].last_used_at is None
        await store.verify(issued.secret)
        first = (await store.all())[0].last_used_at
        await store.verify(issued.secret)
        assert (await store.all())[0].last_used_at == first  # no write within the minute
        eager = TokenStore(store._sessions, touch_every=timedelta(0))
        await eager.verify(issued.secret)
        assert (await store.all())[0].last_used_at > first


# --- API tokens: the command line, then the service --------------------------------


def provgraph(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PROVGRAPH), "tokens", *args],
        env={**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/provgraph.db"},
        cwd=tmp_path,  # no .env of the working tree
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_tokens_from_the_command_line_work_until_revoked(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    run = asyncio.to_thread
    created = await run(
        provgraph, tmp_path, "create", "--name", "ci", "--org", ORG, "--scope", "recipes:read"
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("pgr_")
    assert "shown this once" in created.stderr

    listed = await run(provgraph, tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout
    (row,) = listed.stdout.splitlines()[1:]
    assert row.split()[:4] == ["1", "ci", "active", ORG]
    assert row.split()[-1] == "-"  # never used

    for api in api_server(tmp_path):
        ok = await post(api, f"Bearer {secret}")
        assert ok.status_code == 200
        assert ok.json()["data"] == {"provisioningRecipes": {"totalCount": 0}}
        used = await run(provgraph, tmp_path, "list")
        assert used.stdout.splitlines()[1].split()[-1] != "-"  # last use recorded

        revoked = await run(provgraph, tmp_path, "revoke", "1")
        assert revoked.returncode == 0, revoked.stderr
        assert_unauthenticated(await post(api, f"Bearer {secret}"), secret)
    assert "revoked" in (await run(provgraph, tmp_path, "list")).stdout
    assert secret not in caplog.text


def test_the_command_line_refuses_unknown_scopes_and_missing_tokens(tmp_path):
    unknown = provgraph(tmp_path, "create", "--name", "x", "--org", "*", "--scope", "admin")
    assert unknown.returncode == 2
    assert "invalid choice: 'admin'" in unknown.stderr
    assert unknown.stdout == ""
    no_lifetime = provgraph(tmp_path, "create", "--name", "x", "--org", "*", "--expires-in", "0")
    assert no_lifetime.returncode == 1
    assert "lifetime must be positive" in no_lifetime.stderr
    missing = provgraph(tmp_path, "revoke", "7")
    assert missing.returncode == 1
    assert "there is no token 7" in missing.stderr


async def test_a_token_acts_for_its_organizations_and_account_only(api, tokens):
    issued = await tokens.create("writer", [ORG], ["recipes:write"], account_id=42)
    api = Api(api.base_url, api.simulator, token=issued.secret)
    mine = await api.query(CREATE, {"input": full_input()})
    created = mine["data"]["createProvisioningRecipe"]
    assert created["userErrors"] == []
    assert created["event"]["json"]["payload"]["originator"]["accountId"] == 42
    theirs = await api.query(CREATE, {"input": full_input(organizationUid=OTHER_ORG)})
    assert theirs["data"]["createProvisioningRecipe"]["userErrors"][0]["code"] == "FORBIDDEN"
    reading = await api.query(RECIPES, expect_errors=True)
    assert reading["errors"][0]["extensions"]["code"] == "FORBIDDEN"  # no recipes:read


# --- HTTP without valid credentials ------------------------------------------------


OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**changes: object) -> dict:
    """Valid claims for an hour from now, but for ``changes``."""
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 3600, **changes}


BAD_JWTS: dict[str, Callable[[], str]] = {
    "wrong issuer": lambda: bearer(iss="https://other-idp.test/"),
    "wrong audience": lambda: bearer(aud="another-service"),
    "expired": lambda: bearer(exp=int(time.time()) - 3600),
    "not yet valid": lambda: bearer(nbf=int(time.time()) + 3600),
    "no subject": lambda: jwt.encode(
        {k: v for k, v in claims().items() if k != "sub"}, SIGNING_KEY, "RS256"
    ),
    "signed by another key": lambda: jwt.encode(claims(), OTHER_KEY, "RS256"),
    "unsigned": lambda: jwt.encode(claims(), None, "none"),
    "another algorithm family": lambda: jwt.encode(
        claims(),
        ec.generate_private_key(ec.SECP256R1()),
        "ES256",
    ),
    "tampered": lambda: bearer()[:-4] + "AAAA",
}


@pytest.mark.parametrize("case", list(BAD_JWTS))
async def test_a_bad_jwt_is_401_unauthenticated(api, case, caplog):
    caplog.set_level(logging.DEBUG)
    token = BAD_JWTS[case]()
    response = await post(api, f"Bearer {token}")
    assert_unauthenticated(response, token)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert token not in caplog.text


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer garbage", "Bearer pgr_not-a-token"],
)
async def test_missing_or_garbage_credentials_are_401_unauthenticated(api, authorization, caplog):
    caplog.set_level(logging.DEBUG)
    response = await post(api, authorization)
    credential = (authorization or "").partition(" ")[2]
    assert_unauthenticated(response, credential)
    if credential:
        assert credential not in caplog.text
    if not authorization:
        assert response.headers["www-authenticate"] == "Bearer"


async def test_revoked_and_expired_tokens_are_401_unauthenticated(api, tokens, caplog):
    caplog.set_level(logging.DEBUG)
    revoked = await tokens.create("revoked", ["*"], list(SCOPES))
    expired = await tokens.create("expired", ["*"], list(SCOPES), expires_in=timedelta(days=1))
    assert (await post(api, f"Bearer {expired.secret}")).status_code == 200
    await tokens.revoke(revoked.token.id)
    await expire(tokens, expired.token.id)
    for issued, reason in ((revoked, "revoked"), (expired, "expired")):
        response = await post(api, f"Bearer {issued.secret}")
        assert_unauthenticated(response, issued.secret)
        assert reason in response.json()["errors"][0]["message"]
        assert issued.secret not in caplog.text


async def test_exports_need_credentials_too(api):
    url = f"{api.base_url}/exports/provisioning-history.csv"
    params = {"kind": "ESN", "identifier": "09123456123"}
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        refused = await http.get(url, params=params)
        allowed = await http.get(url, params=params, headers=api.headers)
    assert_unauthenticated(refused)
    assert allowed.status_code == 200


async def test_graphiql_and_health_checks_stay_open(api):
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        page = await http.get(f"{api.base_url}/graphql", headers={"accept": "text/html"})
        healthz = await http.get(f"{api.base_url}/healthz")
        readyz = await http.get(f"{api.base_url}/readyz")
        query = await http.get(
            f"{api.base_url}/graphql",
            params={"query": "{ __typename }"},
            headers={"accept": "text/html"},
        )
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    assert "Authorization" not in page.text  # no development token to prefill here
    assert healthz.status_code == 200
    assert readyz.status_code == 200
    assert_unauthenticated(query)  # a query over GET is no page


async def test_jwt_claims_make_the_principal(api):
    history_only = Api(api.base_url, api.simulator, token=bearer(scopes=["history:read"]))
    body = await history_only.query(RECIPES, expect_errors=True)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    one_org = Api(api.base_url, api.simulator, token=bearer(organizations=[ORG]))
    theirs = await one_org.query(CREATE, {"input": full_input(organizationUid=OTHER_ORG)})
    assert theirs["data"]["createProvisioningRecipe"]["userErrors"][0]["code"] == "FORBIDDEN"


# --- JWT verification itself -------------------------------------------------------


def verifier(**options: object) -> JwtVerifier:
    settings = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "algorithms": ["RS256"],
        "public_key": PUBLIC_KEY,
        **options,
    }
    return JwtVerifier(**settings)  # type: ignore[arg-type]


async def test_claims_are_read_from_the_configured_names():
    token = bearer(
        subject="alice",
        orgs=f"{ORG} {OTHER_ORG}",
        roles=["recipes:read", "openid", "reports:write"],
        acct=7,
    )
    principal = await verifier(
        organizations_claim="orgs", scopes_claim="roles", account_id_claim="acct"
    ).verify(token)
    assert principal.subject == f"jwt:{ISSUER}|alice"
    assert principal.organizations == {ORG, OTHER_ORG}
    assert principal.scopes == {"recipes:read", "reports:write"}  # openid is not ours
    assert principal.account_id == 7
    assert not principal.all_organizations
    everything = await verifier().verify(bearer(organizations=["*"]))
    assert everything.all_organizations
    assert len((await verifier().verify(bearer(subject="s" * 200))).subject) <= 128


async def test_a_verified_token_is_remembered_until_it_expires():
    now = time.time()
    clock = [now]
    checker = verifier(wall_clock=lambda: clock[0], leeway_s=0)
    token = bearer(exp=int(now) + 600)
    first = await checker.verify(token)

    assert await checker.verify(token) is first  # remembered: not decoded again
    clock[0] = now + 59  # still within VERIFIED_FOR_S and before exp
    assert await checker.verify(token) is first
    clock[0] = now + 61  # past VERIFIED_FOR_S: checked again, and still valid
    again = await checker.verify(token)
    assert again == first
    assert again is not first

    clock[0] = now
    short = bearer(exp=int(now) + 40)
    await checker.verify(short)
    clock[0] = int(now) + 40  # its exp: remembered or not, it has expired
    with pytest.raises(Unauthenticated, match="expired"):
        await checker.verify(short)
    with pytest.raises(Unauthenticated, match="not valid"):
        await checker.verify(token[:-4] + "AAAA")  # a forged signature is never remembered


def test_unsafe_jwt_configurations_are_refused():
    with pytest.raises(ValueError, match="asymmetric"):
        verifier(algorithms=["HS256"])
    with pytest.raises(ValueError, match="fits the public key"):
        verifier(algorithms=["ES256"])
    with pytest.raises(ValueError, match="exactly one"):
        verifier(public_key=None)
    with pytest.raises(ValueError, match="AUTH_JWT_AUDIENCE"):
        create_app(Settings(_env_file=None, auth_jwt_issuer=ISSUER, auth_jwt_public_key=PUBLIC_KEY))


async def test_keys_come_from_the_identity_providers_jwks():
    jwk = {**RSAAlgorithm.to_jwk(SIGNING_KEY.public_key(), as_dict=True), "kid": "k1"}
    jwks = {"keys": [{**jwk, "alg": "RS256", "use": "sig"}]}

    async def keys(request):
        return JSONResponse(jwks)

    with serving(Starlette(routes=[Route("/jwks.json", keys)])) as base:
        from_jwks = verifier(public_key=None, jwks_url=f"{base}/jwks.json")
        signed = jwt.encode(
            claims(sub="bob"),
            SIGNING_KEY,
            "RS256",
            headers={"kid": "k1"},
        )
        assert (await from_jwks.verify(signed)).subject == f"jwt:{ISSUER}|bob"
        unknown_kid = jwt.encode(
            claims(sub="bob"),
            OTHER_KEY,
            "RS256",
            headers={"kid": "k2"},
        )
        with pytest.raises(Unauthenticated, match="No key"):
            await from_jwks.verify(unknown_kid)


# --- WebSocket ---------------------------------------------------------------------


async def connection_init(
    api: Api, protocol: str, payload: dict | None = None, headers: dict | None = None
) -> tuple[list[dict], int | None]:
    """What the server answers a connection_init: its messages, and its close code."""
    message: dict = {"type": "connection_init"}
    if payload is not None:
        message["payload"] = payload
    received: list[dict] = []
    async with websockets.connect(
        api.ws_url, subprotocols=[protocol], additional_headers=headers or {}
    ) as socket:
        await socket.send(json.dumps(message))
        try:
            async with asyncio.timeout(WAIT_S):
                while True:
                    received.append(json.loads(await socket.recv()))
                    if received[-1]["type"] == "connection_ack":
                        return received, None
        except websockets.ConnectionClosed:
            pass
    return received, socket.close_code


REJECTIONS = [
    None,
    {"Authorization": "Bearer pgr_garbage"},
    {"authorization": f"Bearer {BAD_JWTS['expired']()}"},
    {"authToken": BAD_JWTS["wrong audience"]()},
]


@pytest.mark.parametrize("payload", REJECTIONS)
async def test_graphql_transport_ws_closes_4403_without_valid_credentials(api, payload):
    received, code = await connection_init(api, "graphql-transport-ws", payload)
    assert received == []
    assert code == 4403


@pytest.mark.parametrize("payload", REJECTIONS)
async def test_graphql_ws_answers_connection_error_then_closes(api, payload):
    received, code = await connection_init(api, "graphql-ws", payload)
    (error,) = received
    assert error["type"] == "connection_error"
    assert error["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
    assert code == 1011


async def test_a_bad_header_is_refused_and_connection_init_wins_over_it(api):
    bad = {"Authorization": "Bearer pgr_garbage"}
    _, code = await connection_init(api, "graphql-transport-ws", headers=bad)
    assert code == 4403
    received, code = await connection_init(api, "graphql-transport-ws", api.headers, bad)
    assert code is None
    assert received[-1]["type"] == "connection_ack"


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
@pytest.mark.parametrize("where", ["connection_init", "upgrade header", "authToken"])
async def test_valid_credentials_open_the_socket(api, protocol, where):
    options: dict = {
        "connection_init": {"init_payload": api.headers},
        "upgrade header": {"headers": api.headers},
        "authToken": {"init_payload": {"authToken": api.token}},
    }[where]
    transport = WebsocketsTransport(url=api.ws_url, subprotocols=[protocol], **options)
    async with Client(transport=transport) as session:
        result = await session.execute(GraphQLRequest(RECIPES))
    assert result == {"provisioningRecipes": {"totalCount": 0}}


# --- make serve: the development token; switching authentication off --------------


def printed_token(output: str) -> str:
    (secret,) = re.findall(r"Authorization: Bearer (pgr_\S+)", output)
    return secret


async def test_make_serve_prints_a_development_token_and_prefills_graphiql(
    tmp_path, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    for api in api_server(tmp_path, auth_dev_token=True):
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            page = await http.get(f"{api.base_url}/graphql", headers={"accept": "text/html"})
        secret = printed_token(capsys.readouterr().out)
        assert secret in page.text
        developer = Api(api.base_url, api.simulator, token=secret)
        assert (await developer.query(RECIPES))["data"]["provisioningRecipes"]["totalCount"] == 0
    assert secret not in caplog.text
    # Kept in the process's memory only: no file, no row of the database holds it.
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert files  # the database, at least
    assert not any(secret.encode() in path.read_bytes() for path in files)
    async with token_store(tmp_path) as store:
        assert await store.all() == []

    for api in api_server(tmp_path, auth_dev_token=True):  # the next start makes another
        assert_unauthenticated(await post(api, f"Bearer {secret}"))
        assert printed_token(capsys.readouterr().out) != secret


async def test_no_development_token_on_a_non_loopback_bind(tmp_path, capsys):
    for api in api_server(tmp_path, auth_dev_token=True, host="0.0.0.0"):
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            page = await http.get(f"{api.base_url}/graphql", headers={"accept": "text/html"})
    assert "pgr_" not in page.text
    assert "pgr_" not in capsys.readouterr().out


async def test_authentication_switched_off_on_loopback(tmp_path):
    for api in api_server(tmp_path, auth_disabled=True):
        response = await post(api, None)
        assert response.status_code == 200
        assert response.json()["data"] == {"provisioningRecipes": {"totalCount": 0}}
        received, code = await connection_init(api, "graphql-transport-ws")
        assert code is None
        assert received[-1]["type"] == "connection_ack"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_authentication_cannot_be_switched_off_beyond_loopback(host):
    settings = Settings(_env_file=None, auth_disabled=True, host=host)
    with pytest.raises(ValueError, match="AUTH_DISABLED is only allowed with a loopback HOST"):
        create_app(settings)

"""The identity provider's keys: one fetch at a time, a floor between fetches, a timeout,
and no thread of the pool that SOAP parsing shares."""

import asyncio
import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support import AUDIENCE, ISSUER, SIGNING_KEY, api_server, bearer

from resolvers.auth import Unauthenticated
from resolvers.identity import JwtVerifier
from soap.simulator.background import serving

OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS = {
    "keys": [
        {
            **RSAAlgorithm.to_jwk(SIGNING_KEY.public_key(), as_dict=True),
            "kid": "k1",
            "alg": "RS256",
            "use": "sig",
        }
    ]
}
BOUND_S = 60  # an upper bound for an answer, never a synchronisation


class IdentityProvider:
    """A JWKS endpoint that counts its fetches and, while ``held``, answers none."""

    def __init__(self) -> None:
        self.fetches = 0
        self.failing = False
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.released.set()

    def hold(self) -> None:
        self.released.clear()

    async def keys(self, request: Request) -> JSONResponse:
        self.fetches += 1
        self.arrived.set()
        await asyncio.to_thread(self.released.wait, BOUND_S)
        if self.failing:
            return JSONResponse({"error": "down"}, 503)
        return JSONResponse(JWKS)


@contextmanager
def identity_provider() -> Iterator[tuple[IdentityProvider, str]]:
    provider = IdentityProvider()
    with serving(Starlette(routes=[Route("/jwks.json", provider.keys)])) as base:
        try:
            yield provider, f"{base}/jwks.json"
        finally:
            provider.released.set()


_TOKEN_IDS = itertools.count()


def signed(kid: str, key: rsa.RSAPrivateKey = SIGNING_KEY) -> str:
    """A new token each call (its own jti): a token verified once is remembered, and
    these tests are about finding its key."""
    payload = jwt.decode(bearer(), options={"verify_signature": False})
    payload["jti"] = str(next(_TOKEN_IDS))
    return jwt.encode(payload, key, "RS256", headers={"kid": kid})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier(url: str, clock: Clock | None = None, **options: float) -> JwtVerifier:
    return JwtVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=["RS256"],
        jwks_url=url,
        clock=clock or Clock(),
        **options,
    )


async def test_unknown_key_ids_share_one_fetch_while_the_provider_is_slow(tmp_path: Path):
    with identity_provider() as (provider, url):
        served = contextmanager(api_server)(
            tmp_path, auth_jwt_public_key=None, auth_jwt_jwks_url=url, auth_jwt_jwks_timeout_s=2
        )
        with served as api:
            provider.hold()
            async with httpx.AsyncClient(timeout=BOUND_S) as http:
                answers = await asyncio.gather(
                    *(
                        http.post(
                            f"{api.base_url}/graphql",
                            json={"query": "{ __typename }"},
                            headers={
                                "Authorization": f"Bearer {signed(f'unknown-{n}', OTHER_KEY)}"
                            },
                        )
                        for n in range(10)
                    )
                )
    assert [a.status_code for a in answers] == [401] * 10
    assert {a.json()["errors"][0]["message"] for a in answers} == {
        "The identity provider's keys are unavailable."
    }
    assert provider.fetches == 1


async def test_unknown_key_ids_within_the_floor_are_refused_without_a_fetch():
    clock = Clock()
    with identity_provider() as (provider, url):
        keys = verifier(url, clock, jwks_refetch_floor_s=60)
        assert (await keys.verify(signed("k1"))).subject == f"jwt:{ISSUER}|tester"
        for n in range(5):
            with pytest.raises(Unauthenticated, match="No key"):
                await keys.verify(signed(f"unknown-{n}", OTHER_KEY))
        assert provider.fetches == 1
        clock.now += 60
        with pytest.raises(Unauthenticated, match="No key"):
            await keys.verify(signed("unknown-late", OTHER_KEY))
        assert provider.fetches == 2
        await keys.aclose()


async def test_known_keys_stay_in_use_while_the_provider_is_down():
    clock = Clock()
    with identity_provider() as (provider, url):
        keys = verifier(url, clock, jwks_max_age_s=300, jwks_timeout_s=1)
        await keys.verify(signed("k1"))
        clock.now += 301  # stale: refreshed behind the caller's back
        provider.hold()
        provider.arrived.clear()
        assert (await keys.verify(signed("k1"))).subject == f"jwt:{ISSUER}|tester"
        assert await asyncio.to_thread(provider.arrived.wait, BOUND_S)
        assert provider.fetches == 2
        await keys.aclose()


async def test_a_failing_provider_is_asked_at_most_once_per_floor():
    clock = Clock()
    with identity_provider() as (provider, url):
        keys = verifier(url, clock, jwks_refetch_floor_s=60, jwks_max_age_s=300)
        await keys.verify(signed("k1"))
        provider.failing = True
        clock.now += 301  # stale, and every refresh fails at once
        for n in range(10):
            assert (await keys.verify(signed("k1"))).subject == f"jwt:{ISSUER}|tester"
            with pytest.raises(Unauthenticated, match="No key"):
                await keys.verify(signed(f"unknown-{n}", OTHER_KEY))
        await keys.aclose()
        assert provider.fetches == 2  # the first load, then one refresh for the floor
        clock.now += 60
        provider.arrived.clear()
        await keys.verify(signed("k1"))
        assert await asyncio.to_thread(provider.arrived.wait, BOUND_S)
        await keys.aclose()
        assert provider.fetches == 3


def test_a_jwks_url_that_is_not_http_is_refused_at_start():
    with pytest.raises(ValueError, match="http"):
        verifier("file:///etc/passwd")


def test_a_jwks_fetch_takes_no_thread_of_the_default_pool():
    """SOAP replies are parsed in the default pool: a slow identity provider holding its
    threads once made an API-token user's history read wait 13.8 s."""

    async def verify_with_the_pool_taken(url: str) -> str:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(max_workers=1)
        loop.set_default_executor(pool)
        gate = threading.Event()
        occupant = loop.run_in_executor(None, gate.wait, BOUND_S)
        try:
            keys = verifier(url)
            principal = await asyncio.wait_for(keys.verify(signed("k1")), BOUND_S)
            await keys.aclose()
            return principal.subject
        finally:
            gate.set()
            await occupant

    with identity_provider() as (_, url):
        assert asyncio.run(verify_with_the_pool_taken(url)) == f"jwt:{ISSUER}|tester"

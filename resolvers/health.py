"""Readiness: can this process reach the upstream and its stores right now?"""

import asyncio
from collections.abc import Awaitable

import httpx
import redis.asyncio as redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soap.contract import DEVICE_PATH

PROBE_TIMEOUT_S = 3.0


async def _upstream(base_url: str) -> None:
    # Any HTTP answer below 500 shows the service is there; no call is spent on it.
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as http:
        response = await http.get(f"{base_url}/{DEVICE_PATH}", params={"wsdl": ""})
    if response.status_code >= 500:
        raise RuntimeError(f"HTTP {response.status_code}")


async def _database(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _redis(url: str) -> None:
    client = redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_S)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _check(probe: Awaitable[None]) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await probe
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


async def readiness(
    upstream_url: str, engine: AsyncEngine, cache_url: str, broker_url: str
) -> dict[str, str]:
    """Each dependency's state: "ok", or "unreachable (<error type>)"."""
    checks: dict[str, Awaitable[None] | None] = {
        "upstream": _upstream(upstream_url),
        "database": _database(engine),
        "cache": _redis(cache_url) if cache_url.startswith("redis") else None,
        "broker": _redis(broker_url) if broker_url.startswith("redis") else None,
    }
    probes = {name: probe for name, probe in checks.items() if probe is not None}
    results = await asyncio.gather(*(_check(probe) for probe in probes.values()))
    status = dict(zip(probes, results, strict=True))
    status.update({name: "ok (in process)" for name, probe in checks.items() if probe is None})
    return status


def is_ready(checks: dict[str, str], circuit: str) -> bool:
    """Every dependency answers, and the upstream circuit is not open.

    With the circuit open every upstream read fails at once, so traffic is better sent
    to other replicas. After its cool-down it reads half-open, which counts as ready:
    the traffic that comes back makes the probe call that can close it.
    """
    return all(state.startswith("ok") for state in checks.values()) and circuit != "open"

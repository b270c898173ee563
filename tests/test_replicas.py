"""Several replicas on one Redis: a window read by one is not read again by another."""

import random
from pathlib import Path

from support import api_server, document

from models.instants import format_api_instant, parse_instant

HISTORY = document("DeviceHistory")


async def test_replicas_share_windows_through_redis(tmp_path: Path, redis_url: str):
    # A range end of its own, so that windows cached by earlier runs cannot answer.
    end = parse_instant("2026-03-01") + random.randrange(10**14)
    variables = {
        "kind": "ESN",
        "identifier": "09123456123",
        "first": 10,
        "occurredBefore": format_api_instant(end),
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    replicas = [api_server(tmp_path / name, cache_url=redis_url) for name in ("a", "b")]
    first, second = next(replicas[0]), next(replicas[1])
    try:
        # The device's lookup, a fixed empty window, may be in Redis from earlier runs:
        # made here, so that only the window counts below.
        await first.query('{ device(kind: ESN, identifier: "09123456123") { id } }')
        lookups = first.calls()
        a = await first.query(HISTORY, variables)
        b = await second.query(HISTORY, variables)
        assert a["data"] == b["data"]
        assert first.calls() == lookups + 1
        assert second.calls() == 0
        assert b["extensions"]["cost"]["upstreamCalls"] == 0
        # Paging on from a cursor handed out by the other replica works as well.
        after = a["data"]["device"]["provisioningHistory"]["pageInfo"]["endCursor"]
        page = await second.query(HISTORY, {**variables, "after": after})
        assert page["data"]["device"]["provisioningHistory"]["edges"]
    finally:
        for replica in replicas:
            replica.close()

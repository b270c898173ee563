"""The history API end to end: upstream calls per query, and the engine's overhead.

    .venv/bin/python -m bench.graphql

1. Paging a 12,000-event device (one year) end to end over HTTP with first 50, 100 and
   500: upstream calls cold and warm, against the pager's lossless floor plus the one
   call that finds the device.
2. ``last: 20`` on it, cold: calls.
3. 100 concurrent identical cold queries: calls, against one query's.

Calls count every upstream operation that reads (history and the device list): the
device lookup is a call like any other.
4. Warm 50- and 500-event pages executed in process (``schema.execute``, resolvers,
   cache and cursors included) against plain graphql-core executing the same document,
   variables and selection over the same events already in memory (cursors
   precomputed): the engine's floor. Median ratio of one run for each size.
Exits 1 if a figure misses its bar.
"""

import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections import Counter
from inspect import isawaitable
from math import ceil
from pathlib import Path
from typing import Any

import httpx
from graphql import GraphQLScalarType, build_schema, execute, parse, validate

from bench.auth import IDENTITY, headers
from graph.context import Context
from graph.schema import schema
from models.instants import format_api_instant, parse_instant
from models.principal import LOCAL_DEVELOPER
from server.testing import post_graphql, serving_service
from soap.simulator.fleet import Fleet
from soap.simulator.server import Simulator

AUTH = headers()
PAGE_BAR = 0.5
"""A warm 50-event page against the floor."""
LONG_PAGE_BAR = 0.25
"""A warm 500-event page against the floor."""
LAST_BAR = 16
LOOKUP = 1
"""What finding the device costs a cold query: one history probe (or a device list page)."""
END = "2026-06-01T00:00:00Z"
QUERY = """
query ($identifier: String!, $first: Int, $after: String, $end: DateTime) {
  device(kind: ICCID, identifier: $identifier) {
    provisioningHistory(first: $first, after: $after, occurredBefore: $end) {
      edges { cursor node { occurredAt status eventBy eventType servicePlan mdn msisdn
              extendedAttributes { key value } } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}
"""
LAST = """
query ($identifier: String!) {
  device(kind: ICCID, identifier: $identifier) {
    provisioningHistory(last: 20) { edges { node { occurredAt } } }
  }
}
"""
FLOOR_SDL = """
scalar DateTime
type ExtendedAttribute { key: String! value: String }
type ProvisioningEvent { occurredAt: DateTime! status: String! eventBy: String
  eventType: String! servicePlan: String mdn: String msisdn: String
  extendedAttributes: [ExtendedAttribute!]! }
type Edge { cursor: String! node: ProvisioningEvent! }
type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String
  endCursor: String }
type Connection { edges: [Edge!]! pageInfo: PageInfo! }
type Device {
  provisioningHistory(first: Int, after: String, occurredBefore: DateTime): Connection!
}
enum DeviceIdentifierKind { ESN ICCID IMEI MDN MEID MSISDN MIN EID }
type Query { device(kind: DeviceIdentifierKind!, identifier: String!): Device }
"""


def floor(n: int, m: int) -> int:
    return 1 if n <= 500 else 1 + ceil((n - 500) / (500 - m))


async def post(http: httpx.AsyncClient, base: str, query: str, variables: dict) -> dict:
    body = await post_graphql(http, f"{base}/graphql", query, variables, AUTH)
    assert "errors" not in body, body["errors"]
    return body


async def read_everything(http, base, identifier: str, first: int) -> int:
    after, events = None, 0
    while True:
        body = await post(
            http,
            base,
            QUERY,
            {"identifier": identifier, "first": first, "after": after, "end": END},
        )
        connection = body["data"]["device"]["provisioningHistory"]
        events += len(connection["edges"])
        if not connection["pageInfo"]["hasNextPage"]:
            return events
        after = connection["pageInfo"]["endCursor"]


def serve(tmp: Path):
    simulator = Simulator(Fleet())
    server = serving_service(
        simulator,
        database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
        cursor_secret="bench-cursor-secret",  # as production sets one
        **IDENTITY.settings(),
    )
    return simulator, server


def reads(simulator: Simulator) -> int:
    calls = simulator.state.calls
    return calls["GetDeviceProvisioningHistory"] + calls["GetDeviceList"]


async def upstream_calls(tmp: Path) -> bool:
    ok = True
    print(f"{'query':<44}{'cold calls':>11}{'warm calls':>11}{'bar':>14}")
    for first in (50, 100, 500):
        simulator, server = serve(tmp)
        device = simulator.fleet.by_name("twelve-thousand")
        truth = simulator.fleet.history(device)
        bar = floor(len(truth), max(Counter(e.occurred_at for e in truth).values()))
        with server as (base, _):
            async with httpx.AsyncClient(timeout=120) as http:
                events = await read_everything(http, base, device.primary.identifier, first)
                cold = reads(simulator)
                await read_everything(http, base, device.primary.identifier, first)
                warm = reads(simulator) - cold
        ok &= events == len(truth) and cold <= bar + LOOKUP and warm == 0
        print(
            f"{f'all {events} events, first: {first}':<44}{cold:>11}{warm:>11}"
            f"{f'<= {bar}+{LOOKUP}, 0':>14}"
        )

    simulator, server = serve(tmp)
    device = simulator.fleet.by_name("twelve-thousand")
    with server as (base, _):
        async with httpx.AsyncClient(timeout=120) as http:
            await post(http, base, LAST, {"identifier": device.primary.identifier})
    last = reads(simulator)
    ok &= last <= LAST_BAR
    print(f"{'last: 20 (one year, 12,000 events)':<44}{last:>11}{'':>11}{f'<= {LAST_BAR}':>14}")

    simulator, server = serve(tmp)
    variables = {"identifier": device.primary.identifier, "first": 500, "end": END}
    with server as (base, _):
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as http:
            await asyncio.gather(*(post(http, base, QUERY, variables) for _ in range(100)))
    crowd = reads(simulator)
    ok &= crowd == 1 + LOOKUP
    print(f"{'100 concurrent identical cold queries':<44}{crowd:>11}{'':>11}{f'== 1+{LOOKUP}':>14}")
    return ok


def as_fields(event: Any) -> dict:
    """An event keyed by its GraphQL field names, for graphql-core's default resolver."""
    return {
        "occurredAt": event.occurred_at,
        "status": event.status,
        "eventBy": event.event_by,
        "eventType": event.event_type,
        "servicePlan": event.service_plan,
        "mdn": event.mdn,
        "msisdn": event.msisdn,
        "extendedAttributes": [{"key": a.key, "value": a.value} for a in event.extended_attributes],
    }


def floor_schema() -> Any:
    sdl = build_schema(FLOOR_SDL)
    date_time = sdl.type_map["DateTime"]
    assert isinstance(date_time, GraphQLScalarType)
    # The same scalar work as the API does (graphql-core 3.3 calls the coerce_* names).
    date_time.serialize = date_time.coerce_output_value = format_api_instant
    date_time.parse_value = date_time.coerce_input_value = parse_instant
    return sdl


async def engine_overhead(tmp: Path) -> bool:
    simulator, server = serve(tmp)
    device = simulator.fleet.by_name("twelve-thousand")
    ok = True
    with server as (base, app):
        print("\nwarm pages, in process; medians of one run")
        for size, bar, rounds in ((50, PAGE_BAR, 300), (500, LONG_PAGE_BAR, 60)):
            ok &= await page_overhead(base, app, simulator, device, size, bar, rounds)
    return ok


async def page_overhead(base, app, simulator, device, size: int, bar: float, rounds: int) -> bool:
    async with httpx.AsyncClient(timeout=120) as http:
        variables = {"identifier": device.primary.identifier, "first": size, "end": END}
        page = await post(http, base, QUERY, variables)  # warms the cache
    services = app.state.services
    connection = page["data"]["device"]["provisioningHistory"]
    events = [as_fields(e) for e in simulator.fleet.history(device)[:size]]
    root = {
        "device": {
            "provisioningHistory": {
                "edges": [
                    {"cursor": e["cursor"], "node": event}
                    for e, event in zip(connection["edges"], events, strict=True)
                ],
                "pageInfo": connection["pageInfo"],
            }
        }
    }
    plain = floor_schema()

    async def ours() -> None:
        context = Context(services=services, principal=LOCAL_DEVELOPER)
        result = await schema.execute(QUERY, variable_values=variables, context_value=context)
        assert result.errors is None, result.errors

    # The floor runs the very same document and variables, parsed and validated once
    # as our schema's caches do, with graphql-core's default resolvers.
    floor_document = parse(QUERY)
    assert not validate(plain, floor_document)

    async def bare() -> None:
        result = execute(plain, floor_document, root_value=root, variable_values=variables)
        if isawaitable(result):
            result = await result
        assert result.errors is None, result.errors

    # Both run on this thread's loop; the server thread sits idle meanwhile.
    ratios, ours_s, bare_s = [], [], []
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            await bare()
            middle = time.perf_counter()
            await ours()
            end = time.perf_counter()
            bare_s.append(middle - start)
            ours_s.append(end - middle)
            ratios.append((end - middle) / (middle - start))
    finally:
        gc.enable()
    ratio = statistics.median(ratios)
    print(
        f"  {size:>3} events: plain graphql-core over the events in memory "
        f"{statistics.median(bare_s) * 1e3:7.2f} ms   1.00x (floor)"
    )
    print(
        f"  {size:>3} events: schema.execute (resolvers, cache, cursors)   "
        f"{statistics.median(ours_s) * 1e3:7.2f} ms  {ratio:5.2f}x (bar <= {bar}x)"
    )
    return ratio <= bar


def main() -> int:
    print("service settings: the defaults and a CURSOR_SECRET, in process with its simulator\n")
    with tempfile.TemporaryDirectory() as tmp:
        ok = asyncio.run(upstream_calls(Path(tmp)))
        ok &= asyncio.run(engine_overhead(Path(tmp)))
    print("\nall figures within their bars" if ok else "\nSOME FIGURES MISS THEIR BARS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

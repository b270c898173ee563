"""A device's whole history through the API, against a client that talks SOAP itself.

    .venv/bin/python -m bench.whole_history [--rounds 5]

The simulator (no added latency) and the service run as processes of their own, as in
production; this process is only the client. One year of one device, 12,000 events:

1. The floor: a hand-written httpx + lxml loop over the UWS, paging as its documentation
   says (Earliest moved to the last event's OccurredAt plus 1 ms until IsComplete), every
   field of every event read into dicts.
2. The API, cold: a fresh service process (nothing cached), ``first: 500`` pages with
   every event field, until ``hasNextPage`` is false.
3. The API, warm: the same read again, every window cached (no upstream call).
Each round runs the three back to back; the ratios are medians of the rounds' own ratios
to the floor. Bars: cold <= 1.5x, warm <= 0.5x.
4. Memory: the service's resident growth per cached event after the cold read (the
   cache's windows, and what pages keep of them for the next read: items, edges, cursors,
   response dicts, ``resolvers.history.KnownWindow``), and its growth over 10 more full
   reads (bar: at most 2 MiB, allocator noise).
Exits 1 if a figure misses its bar.
"""

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import httpx
import orjson
from lxml import etree

from bench.auth import IDENTITY, headers
from bench.environment import settings_line
from bench.graphql import END, QUERY
from bench.history import REQUEST
from bench.reports import memory_mib
from models.instants import TICKS_PER_MILLISECOND, format_instant, parse_instant
from soap.contract import DEVICE, soap_action
from soap.simulator import MOUNT
from soap.simulator.background import Served, serving_process
from soap.simulator.fleet import SEED_TOKEN, Fleet

COLD_BAR = 1.5
WARM_BAR = 0.5
GROWTH_BAR_MIB = 2.0
DEVICE_NAME = "twelve-thousand"
_EVENT = f"{{{DEVICE}}}ProvisioningEvent"
_OCCURRED_AT = f"{{{DEVICE}}}OccurredAt"
_IS_COMPLETE = f"{{{DEVICE}}}IsComplete"
_ACTION = soap_action("IDeviceService", "GetDeviceProvisioningHistory")


async def raw_read(upstream: str, kind: str, identifier: str, latest: str) -> int:
    """The documented paging loop, as a client would write it by hand; its event count."""
    url = f"{upstream}/DeviceService.svc"
    soap_headers = {"SOAPAction": f'"{_ACTION}"', "Content-Type": "text/xml"}
    earliest = "2000-01-01T00:00:00Z"
    events: list[dict[str, str | None]] = []
    async with httpx.AsyncClient(timeout=120) as http:
        while True:
            body = REQUEST.format(
                device=DEVICE,
                token=SEED_TOKEN,
                kind=kind,
                identifier=identifier,
                earliest=earliest,
                latest=latest,
            )
            reply = (await http.post(url, content=body, headers=soap_headers)).content
            root = etree.fromstring(reply)
            page = [{child.tag: child.text for child in event} for event in root.iter(_EVENT)]
            events.extend(page)
            complete = root.findtext(f".//{_IS_COMPLETE}") == "true"
            if complete or not page:
                return len(events)
            last = page[-1][_OCCURRED_AT]
            assert last is not None
            earliest = format_instant(parse_instant(last) + TICKS_PER_MILLISECOND)


async def api_read(http: httpx.AsyncClient, identifier: str) -> int:
    """Every event through ``first: 500`` pages; their count."""
    after, events = None, 0
    while True:
        response = await http.post(
            "/graphql",
            json={
                "query": QUERY,
                "variables": {"identifier": identifier, "first": 500, "after": after, "end": END},
            },
        )
        # Read as a client that cares reads JSON, as the floor reads XML with lxml (C).
        body = orjson.loads(response.content)
        assert "errors" not in body, body["errors"]
        connection = body["data"]["device"]["provisioningHistory"]
        events += len(connection["edges"])
        if not connection["pageInfo"]["hasNextPage"]:
            return events
        after = connection["pageInfo"]["endCursor"]


def environment(upstream: Served, database: Path) -> dict[str, str]:
    return {
        "UWS_BASE_URL": upstream.url + MOUNT,
        "UWS_USERNAME": "demo",
        "UWS_PASSWORD": "demo",
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "CURSOR_SECRET": "bench-cursor-secret",  # as production sets one
        "LOG_LEVEL": "warning",
        **IDENTITY.environment(),
    }


async def timed(work: Awaitable[int]) -> tuple[float, int]:
    start = time.perf_counter()
    count = await work
    return time.perf_counter() - start, count


async def main(rounds: int) -> int:
    device = Fleet().by_name(DEVICE_NAME)
    # This process, the client of both reads, holds the harness's imports (the service's
    # modules, the simulator's fleet: ~180,000 objects). Unfrozen, a full collection of
    # them (~90 ms) fell in whichever read set it off, in one round of three: a cost of
    # this harness, not of either way of reading.
    gc.collect()
    gc.freeze()
    kind, identifier = device.primary.kind, device.primary.identifier
    ok = True
    floor_s, cold_s, warm_s, cold_ratios, warm_ratios = [], [], [], [], []
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving_process("soap.simulator.server:create_app", {"SIMULATOR_WARM": "1"}) as sim,
    ):
        upstream = sim.url + MOUNT
        print(settings_line(environment(sim, Path(tmp) / "x.db")))
        await raw_read(upstream, kind, identifier, END)  # the simulator makes the history
        for round_ in range(rounds):
            database = Path(tmp) / f"round-{round_}.db"
            with serving_process("server.app:create_app", environment(sim, database)) as api:
                async with httpx.AsyncClient(
                    base_url=api.url, timeout=120, headers=headers()
                ) as http:
                    # Started, and its first request served (imports, connections), outside
                    # the timing: cold here means nothing cached.
                    assert (await http.get("/readyz")).status_code == 200
                    assert (
                        await http.post("/graphql", json={"query": "{ __typename }"})
                    ).is_success
                    raw, raw_events = await timed(raw_read(upstream, kind, identifier, END))
                    before = memory_mib(api.pid, "VmRSS")
                    cold, cold_events = await timed(api_read(http, identifier))
                    after_cold = memory_mib(api.pid, "VmRSS")
                    warm, warm_events = await timed(api_read(http, identifier))
                    if round_ == 0:
                        print(
                            f"events read: raw loop {raw_events:,}, API {cold_events:,} "
                            f"cold and {warm_events:,} warm"
                        )
                        ok &= cold_events == warm_events >= raw_events
                        settled = memory_mib(api.pid, "VmRSS")
                        for _ in range(10):
                            await api_read(http, identifier)
                        growth = memory_mib(api.pid, "VmRSS") - settled
                        per_event = (after_cold - before) * 2**20 / cold_events
            floor_s.append(raw)
            cold_s.append(cold)
            warm_s.append(warm)
            cold_ratios.append(cold / raw)
            warm_ratios.append(warm / raw)
    cold_ratio, warm_ratio = statistics.median(cold_ratios), statistics.median(warm_ratios)
    print(f"\n{rounds} rounds; medians of one run")
    print(f"  httpx + lxml paging loop, cold     {statistics.median(floor_s):6.3f} s   1.00x")
    print(
        f"  the API, first: 500 pages, cold     {statistics.median(cold_s):6.3f} s  "
        f"{cold_ratio:5.2f}x (bar <= {COLD_BAR}x)"
    )
    print(
        f"  the API, the same read warm         {statistics.median(warm_s):6.3f} s  "
        f"{warm_ratio:5.2f}x (bar <= {WARM_BAR}x)"
    )
    print(f"\n  resident growth per cached event after the cold read   {per_event:6.0f} bytes")
    print(
        f"  resident growth over 10 more full reads              {growth:6.2f} MiB "
        f"(bar <= {GROWTH_BAR_MIB} MiB)"
    )
    ok &= cold_ratio <= COLD_BAR and warm_ratio <= WARM_BAR and growth <= GROWTH_BAR_MIB
    print("\nall figures within their bars" if ok else "\nSOME FIGURES MISS THEIR BARS")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    sys.exit(asyncio.run(main(parser.parse_args().rounds)))

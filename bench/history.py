"""The history pager's cost in upstream calls, and the cost of reading a reply.

    make bench        (or: .venv/bin/python -m bench.history)

For every device class of the simulator's fleet: the calls the pager spent, against the
lossless floor 1 + ceil((N - 500) / (500 - m)) and against the lossy rule's ceil(N / 500).
Then the time to turn one 500-event reply into event records, as a ratio to a bare lxml
parse of the same bytes into dicts (and zeep's own parse, for scale), medians of one run.
Exits 1 if any figure misses its bar.
"""

import asyncio
import gc
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from math import ceil

import httpx
import zeep
from lxml import etree
from starlette.applications import Starlette
from starlette.routing import Mount

from models.instants import format_instant
from resolvers.history import HistoryPager
from soap import replies
from soap.client import UwsClient
from soap.contract import DEVICE, DEVICE_BINDING, DEVICE_WSDL, soap_action
from soap.simulator.background import serving
from soap.simulator.fleet import SEED_TOKEN, Fleet, SimDevice
from soap.simulator.server import Simulator

MOUNT = "/api/v2"
PARSE_BAR = 2.0
REQUEST = """<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:v2="http://nphase.com/unifiedwebservice/v2" xmlns:d="{device}"
 xmlns:c="http://schemas.datacontract.org/2004/07/NPhase.UnifiedWebService.APIs.v2.Contract.Common">
<s:Header><v2:token>{token}</v2:token></s:Header><s:Body><v2:GetDeviceProvisioningHistory>
<v2:Input><d:Device><c:Kind>{kind}</c:Kind><c:Identifier>{identifier}</c:Identifier></d:Device>
<d:OccurredAtFilter><d:Earliest>{earliest}</d:Earliest><d:Latest>{latest}</d:Latest>
</d:OccurredAtFilter></v2:Input></v2:GetDeviceProvisioningHistory></s:Body></s:Envelope>"""


def floors(events: tuple) -> tuple[int, int | None, int]:
    """m, the lossless floor (None where one instant holds 500 or more), ceil(N / 500)."""
    n = len(events)
    m = max(Counter(e.occurred_at for e in events).values(), default=0)
    lossless = None if m >= 500 else 1 if n <= 500 else 1 + ceil((n - 500) / (500 - m))
    return m, lossless, max(1, ceil(n / 500))


def classes(fleet: Fleet) -> list[tuple[str, SimDevice]]:
    """Each special device, and one ordinary device per size class."""
    picked = [(d.profile.name, d) for d in fleet.devices if d.profile.name != "ordinary"]
    buckets = {
        "ordinary 0": (0, 0),
        "ordinary 1-500": (1, 500),
        "ordinary 501-2000": (501, 2000),
        "ordinary 2001+": (2001, 10**9),
    }
    for label, (low, high) in buckets.items():
        device = next(
            (
                d
                for d in fleet.devices
                if d.profile.name == "ordinary" and low <= d.profile.size <= high
            ),
            None,
        )
        if device is not None:
            picked.append((label, device))
    return picked


async def paging(simulator: Simulator, base: str) -> bool:
    client = await UwsClient.open(base, timeout_s=30, token=SEED_TOKEN)
    ok = True
    print(
        f"{'device class':<22}{'events':>8}{'m':>5}{'calls':>7}{'floor':>7}{'ceil(N/500)':>13}"
        f"{'calls/floor':>13}  verdict"
    )
    for label, device in classes(simulator.fleet):
        truth = simulator.fleet.history(device)
        earliest = truth[0].occurred_at if truth else device.profile.start
        latest = truth[-1].occurred_at if truth else device.profile.end
        pager = HistoryPager(
            client.get_device_provisioning_history, device.primary, earliest, latest
        )
        delivered = sum([1 async for _ in pager])
        m, lossless, lossy = floors(truth)
        unreachable = lossless is None
        fine = unreachable or pager.calls <= lossless
        ok &= fine and (delivered == len(truth) or unreachable)
        verdict = "ok" if fine else "OVER FLOOR"
        if unreachable:
            verdict = f"gap reported: {len(truth) - delivered} events unreachable upstream"
        share = "n/a" if unreachable else f"{pager.calls / lossless:.3f}"
        print(
            f"{label:<22}{len(truth):>8}{m:>5}{pager.calls:>7}{lossless or 'n/a':>7}{lossy:>13}"
            f"{share:>13}  {verdict}"
        )
    await client.aclose()
    return ok


def _seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def paired(baseline: Callable[[], object], work: Callable[[], object], rounds: int) -> tuple:
    """Median times of both, and the median of their ratios taken round by round.

    Running the two back to back in each round, with the collector paused, keeps the
    noise of a shared machine out of the ratio.
    """
    gc.collect()
    gc.disable()
    try:
        pairs = [(_seconds(baseline), _seconds(work)) for _ in range(rounds)]
    finally:
        gc.enable()
    return (
        statistics.median(b for b, _ in pairs),
        statistics.median(w for _, w in pairs),
        statistics.median(w / b for b, w in pairs),
    )


def parsing(simulator: Simulator, base: str) -> bool:
    device = simulator.fleet.by_name("twelve-thousand")
    truth = simulator.fleet.history(device)
    body = REQUEST.format(
        device=DEVICE,
        token=SEED_TOKEN,
        kind=device.primary.kind,
        identifier=device.primary.identifier,
        earliest=format_instant(truth[0].occurred_at),
        latest=format_instant(truth[-1].occurred_at),
    )
    action = soap_action("IDeviceService", "GetDeviceProvisioningHistory")
    reply = httpx.post(
        f"{base}/DeviceService.svc",
        content=body,
        headers={"SOAPAction": f'"{action}"', "Content-Type": "text/xml"},
    ).content
    event_tag = f"{{{DEVICE}}}ProvisioningEvent"
    assert len(replies.history_window("bench", 200, reply).events) == 500

    def bare() -> object:
        root = etree.fromstring(reply)
        return [{child.tag: child.text for child in event} for event in root.iter(event_tag)]

    def ours() -> object:
        return replies.history_window("bench", 200, reply)

    zeep_client = zeep.Client(str(DEVICE_WSDL))
    operation = zeep_client.wsdl.bindings[DEVICE_BINDING].get("GetDeviceProvisioningHistory")

    def zeeps() -> object:
        return operation.process_reply(etree.fromstring(reply))

    bare_s, ours_s, ratio = paired(bare, ours, rounds=200)
    _, zeep_s, zeep_ratio = paired(bare, zeeps, rounds=20)
    print(f"\n500-event reply, {len(reply):,} bytes; medians of one run")
    print(f"  bare lxml into dicts      {bare_s * 1e3:7.2f} ms   1.00x (baseline)")
    print(
        f"  soap.replies into records {ours_s * 1e3:7.2f} ms  {ratio:5.2f}x (bar <= {PARSE_BAR}x)"
    )
    print(f"  zeep's own reply parsing  {zeep_s * 1e3:7.2f} ms  {zeep_ratio:5.2f}x (for scale)")
    return ratio <= PARSE_BAR


def main() -> int:
    simulator = Simulator(Fleet())
    app = Starlette(routes=[Mount(MOUNT, app=simulator.app)])
    with serving(app) as base:
        ok = asyncio.run(paging(simulator, base + MOUNT))
        ok &= parsing(simulator, base + MOUNT)
    print("\nall figures within their bars" if ok else "\nSOME FIGURES MISS THEIR BARS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

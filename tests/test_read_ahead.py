"""History windows read ahead for clients paging forward: the window a next page needs, and
the one after, are read while the client takes this one, within the request's budget,
once, and never left running at shutdown; a reply's head says where the next window
starts before its events are read."""

import pytest
from support import api_server, document, ident

from models.instants import parse_instant
from resolvers.cache import BoundedMemoryCache, UpstreamCache
from resolvers.history import (
    RANGE_START,
    EventRef,
    HistoryPage,
    next_window,
    read_forward,
    start_after,
)
from resolvers.resilience import CircuitBreaker, Resilience, RetryPolicy
from resolvers.upstream import CachePolicy, Cost, Upstream
from soap.replies import HistoryHead

LATEST = parse_instant("2030-01-01T00:00:00Z")


def upstream_over(uws, read_ahead: int = 2) -> Upstream:
    resilience = Resilience(RetryPolicy(3, 0.001, 0.001), CircuitBreaker(5, 30), None)
    cache = UpstreamCache(BoundedMemoryCache(max_bytes=64 << 20), lock_ttl_s=5)
    policy = CachePolicy(settle_s=3600, immutable_ttl_s=60, recent_ttl_s=60, device_list_ttl_s=60)
    return Upstream(uws, cache, policy, resilience, read_ahead=read_ahead)


@pytest.mark.parametrize("name", ["twelve-thousand", "over-500-instant"])
async def test_a_reply_head_says_where_the_next_window_starts(uws, upstream, name):
    device = upstream.fleet.by_name(name).primary
    heads: list[HistoryHead] = []

    window = await uws.get_device_provisioning_history(device, RANGE_START, LATEST, heads.append)

    # Told on the event loop while the reply's events were read in a worker thread.
    (head,) = heads
    events = window.events
    assert head == HistoryHead(False, events[0].occurred_at, events[-1].occurred_at)
    # Where the pager, having read the events, goes on from.
    following, _ = next_window(window, LATEST)
    assert following is not None
    assert start_after(events[0].occurred_at, events[-1].occurred_at, LATEST) == (
        following.window_start
    )


async def page_after(
    reader: Upstream, cost: Cost, device, first: int, page: HistoryPage | None = None
) -> HistoryPage:
    after = EventRef.of(page.items[-1]) if page is not None else None
    return await read_forward(reader.history(cost), device, RANGE_START, LATEST, first, after)


async def test_the_windows_the_next_pages_need_are_read_while_the_client_takes_this_one(
    uws, upstream
):
    device = upstream.fleet.by_name("twelve-thousand").primary
    reader = upstream_over(uws)
    cost = Cost(budget=10)
    # 400 of the first window's 500: the next page needs 100 more of it, then the second.
    page = await page_after(reader, cost, device, 400)
    assert upstream.calls() == 1

    task = reader.read_ahead(cost, device, page, 400, LATEST)

    assert task is not None
    await task
    # The second window, and the third, whose call left on the second reply's head.
    assert upstream.calls() == 3
    assert cost.upstream_calls == 1  # the next requests' windows, not this one's
    following = Cost(budget=10)
    next_page = await page_after(reader, following, device, 400, page)
    assert (following.upstream_calls, following.cache_hits) == (0, 2)
    # The page after that needs the third window: read too.
    third = Cost(budget=10)
    await page_after(reader, third, device, 400, next_page)
    assert (third.upstream_calls, third.cache_hits) == (0, 2)
    assert upstream.calls() == 3
    # The same page as one read without reading ahead.
    plain = upstream_over(uws, read_ahead=0)
    first = await page_after(plain, Cost(), device, 400)
    assert [i.event for i in (await page_after(plain, Cost(), device, 400, first)).items] == [
        i.event for i in next_page.items
    ]


async def test_no_window_is_read_ahead_when_the_next_page_lies_in_those_read(uws, upstream):
    device = upstream.fleet.by_name("twelve-thousand").primary
    reader = upstream_over(uws)
    cost = Cost(budget=10)
    page = await page_after(reader, cost, device, 100)

    assert reader.read_ahead(cost, device, page, 100, LATEST) is None
    # Nor after the last page, nor when reading ahead is off.
    whole = await page_after(reader, cost, upstream.fleet.by_name("exactly-500").primary, 500)
    assert not whole.has_next
    assert reader.read_ahead(cost, device, whole, 500, LATEST) is None
    page = await page_after(reader, cost, device, 500)
    assert upstream_over(uws, read_ahead=0).read_ahead(cost, device, page, 500, LATEST) is None
    assert upstream.calls() == 2


async def test_a_request_with_no_call_left_in_its_budget_reads_nothing_ahead(uws, upstream):
    device = upstream.fleet.by_name("twelve-thousand").primary
    reader = upstream_over(uws)
    cost = Cost(budget=1)
    page = await page_after(reader, cost, device, 500)

    assert reader.read_ahead(cost, device, page, 500, LATEST) is None
    assert upstream.calls() == 1


async def test_windows_read_ahead_are_bounded_and_cancelled_at_close(uws, upstream):
    devices = [upstream.fleet.by_name(n).primary for n in ("twelve-thousand", "tens-of-thousands")]
    reader = upstream_over(uws, read_ahead=1)
    cost = Cost(budget=10)
    pages = [await page_after(reader, cost, d, 400) for d in devices]

    task = reader.read_ahead(cost, devices[0], pages[0], 400, LATEST)
    assert task is not None
    assert reader.read_ahead(cost, devices[1], pages[1], 400, LATEST) is None
    await reader.aclose()

    assert task.cancelled()
    # The window is left to the next page, which reads it itself.
    following = Cost(budget=10)
    await page_after(reader, following, devices[0], 400, pages[0])
    assert (following.upstream_calls, following.cache_hits) == (1, 1)


async def read_everything(api) -> list[int]:
    """Every page of a year's history, ``first: 500``; the upstream calls of each."""
    device = api.simulator.fleet.by_name("twelve-thousand")
    variables = {**ident(device), "first": 500, "occurredBefore": "2030-01-01T00:00:00Z"}
    spent, events, after = [], 0, None
    while True:
        body = await api.query(document("DeviceHistory"), {**variables, "after": after})
        connection = body["data"]["device"]["provisioningHistory"]
        spent.append(body["extensions"]["cost"]["upstreamCalls"])
        events += len(connection["edges"])
        if not connection["pageInfo"]["hasNextPage"]:
            assert events == 12_000
            return spent
        after = connection["pageInfo"]["endCursor"]


async def test_paging_through_a_history_costs_no_call_more_and_later_pages_none(api, tmp_path):
    spent = await read_everything(api)

    (tmp_path / "off").mkdir()
    for unread in api_server(tmp_path / "off", history_read_ahead=0):
        alone = await read_everything(unread)
        assert api.calls() == unread.calls() == sum(alone)
    assert all(alone[2:])
    # The first page may be all a client wants: the second reads ahead, then every page
    # finds its window read, or being read, ahead.
    assert spent[:2] == alone[:2]
    assert spent[2:] == [0] * (len(spent) - 2)


async def test_paging_on_reads_each_window_once_two_windows_ahead(uws, upstream):
    device = upstream.fleet.by_name("twelve-thousand").primary
    reader = upstream_over(uws)
    page = await page_after(reader, Cost(budget=10), device, 500)
    first = reader.read_ahead(Cost(budget=10), device, page, 500, LATEST)
    assert first is not None
    await first
    assert upstream.calls() == 3  # the first page's window, then the second and third

    for pages in range(2, 6):
        cost = Cost(budget=10)
        page = await page_after(reader, cost, device, 500, page)
        assert cost.upstream_calls == 0  # each page's windows were read ahead
        task = reader.read_ahead(cost, device, page, 500, LATEST)
        assert task is not None
        await task
        # The window the next page needs and the one after, never one twice: a page of
        # 500 ends one event into its second window (windows share their boundary
        # instant), so the second page's next needs the fourth window, and each page
        # after one window more.
        assert upstream.calls() == pages + 3


async def test_a_page_elsewhere_in_the_range_replaces_its_reads_chain(uws, upstream):
    device = upstream.fleet.by_name("twelve-thousand").primary
    reader = upstream_over(uws, read_ahead=1)  # room for one chain
    first = await page_after(reader, Cost(budget=10), device, 400)
    busy = reader.read_ahead(Cost(budget=10), device, first, 400, LATEST)
    assert busy is not None  # started, not yet under way
    # The same read, further on (a cursor the client kept): its chain, not a second one.
    later = await page_after(reader, Cost(budget=10), device, 900)

    moved = reader.read_ahead(Cost(budget=10), device, later, 900, LATEST)

    assert moved is not None
    await busy
    await moved
    # The first window, the second (read by the 900-event page itself, then found by the
    # first chain), the third and fourth (the new chain's, the old one joining the
    # third): no window called for twice.
    assert upstream.calls() == 4

"""The history pager against the simulator's ground truth, over real SOAP/HTTP."""

import itertools
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import lossless_floor

from models.devices import DeviceIdentifier
from models.events import ProvisioningEvent
from models.instants import TICKS_PER_MILLISECOND, parse_instant
from resolvers.history import HistoryGap, HistoryPager

SPECIAL = [
    "seed-meid",
    "seed-esn",
    "empty",
    "exactly-500",
    "boundary-millisecond",
    "burst",
    "sub-millisecond",
    "twelve-thousand",
    "tens-of-thousands",
]
_scripted = itertools.count()


async def read_all(pager: HistoryPager) -> list[ProvisioningEvent]:
    return [item.event async for item in pager]


def everything(events) -> tuple[int, int]:
    return (events[0].occurred_at, events[-1].occurred_at) if events else (0, 1)


@pytest.mark.parametrize("name", SPECIAL)
async def test_pager_reads_every_event_once_in_order(uws, upstream, name):
    device = upstream.fleet.by_name(name)
    truth = list(upstream.fleet.history(device))
    pager = HistoryPager(uws.get_device_provisioning_history, device.primary, *everything(truth))

    events = await read_all(pager)

    assert events == truth
    assert pager.gaps == []
    assert pager.calls == upstream.calls() <= lossless_floor([e.occurred_at for e in truth])


async def test_exactly_500_events_cost_one_call(uws, upstream):
    device = upstream.fleet.by_name("exactly-500")
    truth = upstream.fleet.history(device)
    pager = HistoryPager(uws.get_device_provisioning_history, device.primary, *everything(truth))
    assert len(await read_all(pager)) == 500
    assert upstream.calls() == 1


async def test_the_seeds_plus_one_millisecond_rule_would_lose_events_here(uws, upstream):
    """The hard cases are real: the documented rule drops events on these devices."""
    for name in ("boundary-millisecond", "burst", "sub-millisecond"):
        device = upstream.fleet.by_name(name)
        truth = upstream.fleet.history(device)
        earliest, latest = everything(truth)
        lossy: list[ProvisioningEvent] = []
        while True:
            window = await uws.get_device_provisioning_history(device.primary, earliest, latest)
            lossy += window.events
            if window.is_complete:
                break
            earliest = window.events[-1].occurred_at + TICKS_PER_MILLISECOND
        assert len(lossy) < len(truth), name


async def test_more_than_500_at_one_instant_is_reported_as_a_gap(uws, upstream):
    device = upstream.fleet.by_name("over-500-instant")
    truth = list(upstream.fleet.history(device))
    crowded, count = Counter(e.occurred_at for e in truth).most_common(1)[0]
    assert count > 500
    pager = HistoryPager(uws.get_device_provisioning_history, device.primary, *everything(truth))

    events = await read_all(pager)

    assert pager.gaps == [HistoryGap(crowded, 500)]
    assert "unreachable" in pager.gaps[0].message
    reachable = [e for e in truth if e.occurred_at != crowded]
    at_crowded = [e for e in truth if e.occurred_at == crowded][:500]
    assert events == sorted(reachable + at_crowded, key=lambda e: e.occurred_at)
    assert len(events) == len(truth) - (count - 500)


async def test_a_sub_range_is_exactly_the_events_inside_it(uws, upstream):
    device = upstream.fleet.by_name("twelve-thousand")
    truth = upstream.fleet.history(device)
    earliest, latest = truth[1234].occurred_at, truth[4321].occurred_at
    pager = HistoryPager(uws.get_device_provisioning_history, device.primary, earliest, latest)
    events = await read_all(pager)
    assert events == [e for e in truth if earliest <= e.occurred_at <= latest]


async def test_resuming_from_a_position_costs_one_call_per_window(uws, upstream):
    device = upstream.fleet.by_name("boundary-millisecond")
    truth = list(upstream.fleet.history(device))
    bounds = everything(truth)
    first = [
        item
        async for item in HistoryPager(uws.get_device_provisioning_history, device.primary, *bounds)
    ]
    upstream.simulator.state.reset_calls()
    for k in (0, 250, 499, 500, 501, 700, len(truth) - 1):
        resume = first[k].after
        assert first[k + 1].at == resume if k + 1 < len(first) else resume is None
        if resume is None:
            continue
        calls_before = upstream.calls()
        pager = HistoryPager(
            uws.get_device_provisioning_history, device.primary, *bounds, start=resume
        )
        rest = [item.event async for item in pager]
        assert rest == truth[k + 1 :]
        assert upstream.calls() - calls_before == pager.calls


async def test_an_empty_range_costs_one_call(uws, upstream):
    device = upstream.fleet.by_name("empty")
    pager = HistoryPager(
        uws.get_device_provisioning_history,
        device.primary,
        parse_instant("2010-01-01"),
        parse_instant("2030-01-01"),
    )
    assert await read_all(pager) == []
    assert upstream.calls() == 1


def _history_from(runs: list[tuple[int, int]]) -> list[ProvisioningEvent]:
    """Runs of (how many events, gap in ticks before them): gap 0 repeats an instant."""
    ticks = parse_instant("2020-01-01")
    events = []
    serial = itertools.count()
    for count, gap in runs:
        ticks += gap
        # A serial number in each event makes every event distinct, so duplicates show.
        events += [
            ProvisioningEvent(
                ticks, "Success", f"user-{next(serial)}", "Activation", None, None, None, ()
            )
            for _ in range(count)
        ]
    return events


RUNS = st.lists(
    st.tuples(
        st.integers(1, 60) | st.just(1),
        st.sampled_from(
            [
                0,
                1,
                7,
                TICKS_PER_MILLISECOND - 1,
                TICKS_PER_MILLISECOND,
                TICKS_PER_MILLISECOND + 1,
                3_600 * 10**7,
            ]
        ),
    ),
    max_size=90,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(runs=RUNS)
async def test_any_history_is_read_losslessly_within_the_call_floor(uws, upstream, runs):
    truth = _history_from(runs)
    device = upstream.fleet.script(DeviceIdentifier("imei", f"99{next(_scripted):013d}"), truth)
    earliest, latest = everything(truth)
    pager = HistoryPager(uws.get_device_provisioning_history, device.primary, earliest, latest)

    items = [item async for item in pager]

    assert [item.event for item in items] == truth
    assert pager.gaps == []
    assert pager.calls <= lossless_floor([e.occurred_at for e in truth])
    # Every position names its event for good: resuming there yields the rest.
    if items:
        middle = items[len(items) // 2]
        resumed = HistoryPager(
            uws.get_device_provisioning_history,
            device.primary,
            earliest,
            latest,
            start=middle.at,
        )
        assert [i.event async for i in resumed] == [i.event for i in items[len(items) // 2 :]]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=st.integers(0, 700), crowd=st.integers(501, 900), after=st.integers(0, 700))
async def test_any_overfull_instant_ends_with_a_gap_not_a_loop(uws, upstream, before, crowd, after):
    truth = _history_from([(1, 10)] * before + [(crowd, 10)] + [(1, 10)] * after)
    device = upstream.fleet.script(DeviceIdentifier("imei", f"98{next(_scripted):013d}"), truth)
    pager = HistoryPager(uws.get_device_provisioning_history, device.primary, *everything(truth))

    events = await read_all(pager)

    assert len(events) == before + 500 + after
    assert [g.delivered for g in pager.gaps] == [500]
    assert len(set(events)) == len(events)
    assert events == [e for e in truth if e in set(events)]

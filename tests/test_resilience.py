"""Upstream resilience: retries, the circuit breaker, the call rate and stale answers.

The service tests run the whole API over HTTP against its simulator, with a test clock
for everything time decides (cache freshness, the circuit's cool-down) and backoffs of
a millisecond; the resolver tests drive ``Upstream`` over a real client the same way.
"""

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from aiolimiter import AsyncLimiter
from prometheus_client import REGISTRY
from support import Api, api_server

from models.devices import DeviceIdentifier
from models.events import HistoryWindow
from models.instants import parse_instant
from resolvers.cache import BoundedMemoryCache, Found, UpstreamCache, backend_from_url
from resolvers.resilience import (
    CircuitBreaker,
    CircuitOpen,
    Resilience,
    RetryPolicy,
    per_second_limiter,
)
from resolvers.upstream import CachePolicy, Cost, Upstream
from server.settings import Settings
from soap.errors import UpstreamTimeout, UpstreamUnavailable

HISTORY_OP = "GetDeviceProvisioningHistory"
HISTORY = """
{
  device(kind: MEID, identifier: "54689785258599") {
    provisioningHistory(
      first: 5, occurredAfter: "2017-01-01T00:00:00Z", occurredBefore: "2017-01-31T23:59:59Z"
    ) { edges { node { occurredAt eventType } } }
  }
}
"""
SEED_MEID = DeviceIdentifier("meid", "54689785258599")
COOLDOWN_S = 30.0


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextmanager
def service(tmp_path: Path, clock: Clock | None = None, **overrides: object) -> Iterator[Api]:
    settings = {
        "upstream_retry_base_delay_s": 0.001,
        "upstream_retry_max_delay_s": 0.002,
        "upstream_circuit_cooldown_s": COOLDOWN_S,
        **overrides,
    }
    yield from api_server(tmp_path, clock, **settings)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def readyz(api: Api) -> tuple[int, str]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{api.base_url}/readyz")
    return response.status_code, response.json()["circuit"]


def only_error(body: dict) -> dict:
    (error,) = body["errors"]
    return error


# Retries


async def test_transient_failures_are_retried_until_one_succeeds(tmp_path):
    with service(tmp_path, upstream_retry_attempts=3) as api:
        retries = metric("provgraph_upstream_retries_total", operation=HISTORY_OP)
        failed = metric(
            "provgraph_upstream_calls_total", operation=HISTORY_OP, outcome="UPSTREAM_UNAVAILABLE"
        )
        api.simulator.state.fail_next("http503", times=2, operation=HISTORY_OP)

        body = await api.query(HISTORY)

        assert body["data"]["device"]["provisioningHistory"]["edges"]
        # The device's probe, the first history call, took the three attempts.
        assert api.calls() == 3 + 1
        assert body["extensions"]["cost"] == {"upstreamCalls": 3 + 1, "cacheHits": 0}
        assert metric("provgraph_upstream_retries_total", operation=HISTORY_OP) == retries + 2
        assert (
            metric(
                "provgraph_upstream_calls_total",
                operation=HISTORY_OP,
                outcome="UPSTREAM_UNAVAILABLE",
            )
            == failed + 2
        )


async def test_transient_failures_beyond_the_attempts_are_the_error(tmp_path):
    with service(tmp_path, upstream_retry_attempts=2) as api:
        api.simulator.state.fail_next("http503", times=2, operation=HISTORY_OP)

        error = only_error(await api.query(HISTORY, expect_errors=True))

        assert error["extensions"] == {"code": "UPSTREAM_UNAVAILABLE", "httpStatus": 503}
        assert api.calls() == 2


async def test_a_timeout_is_retried(tmp_path):
    with service(tmp_path, uws_timeout_s=0.5, upstream_retry_attempts=2) as api:
        timeouts = metric(
            "provgraph_upstream_calls_total", operation=HISTORY_OP, outcome="UPSTREAM_TIMEOUT"
        )
        api.simulator.state.knobs.hang_s = 2.0
        api.simulator.state.fail_next("hang", operation=HISTORY_OP)

        body = await api.query(HISTORY)

        assert body["data"]["device"]["provisioningHistory"]["edges"]
        assert api.calls() == 2 + 1  # the device's probe in two attempts, then the window
        assert (
            metric(
                "provgraph_upstream_calls_total", operation=HISTORY_OP, outcome="UPSTREAM_TIMEOUT"
            )
            == timeouts + 1
        )


@pytest.mark.parametrize(
    ("kind", "fault_code", "extensions"),
    [
        (
            "fault",  # an HTTP 500 whose body is a SOAP fault
            "UnifiedWebService.REQUEST_FAILED.InternalError",
            {"code": "UPSTREAM_FAULT", "upstreamCode": "REQUEST_FAILED.InternalError"},
        ),
        (
            "fault",
            "DeviceService.INPUT_INVALID.Identifier",
            {"code": "UPSTREAM_FAULT", "upstreamCode": "INPUT_INVALID.Identifier"},
        ),
        ("http500", None, {"code": "UPSTREAM_UNAVAILABLE", "httpStatus": 500}),
        ("not_xml", None, {"code": "UPSTREAM_BAD_REPLY"}),
        ("truncated", None, {"code": "UPSTREAM_BAD_REPLY"}),
    ],
)
async def test_no_retry_where_asking_again_cannot_help(tmp_path, kind, fault_code, extensions):
    with service(tmp_path, upstream_retry_attempts=3) as api:
        if fault_code:
            api.simulator.state.knobs.fault_code = fault_code
        api.simulator.state.fail_next(kind, operation=HISTORY_OP)

        error = only_error(await api.query(HISTORY, expect_errors=True))

        assert error["extensions"] == extensions
        assert api.calls() == 1


@pytest.mark.parametrize(
    ("status", "transient"),
    [(None, True), (502, True), (503, True), (504, True), (500, False), (404, False)],
)
def test_only_connection_errors_and_gateway_statuses_are_transient(status, transient):
    assert UpstreamUnavailable("op", "HTTP error", status).transient is transient


# The circuit breaker


async def open_the_circuit(api: Api) -> None:
    """Fails one history read, which opens a circuit of threshold 1."""
    api.simulator.state.fail_next("http503", operation=HISTORY_OP)
    error = only_error(await api.query(HISTORY, expect_errors=True))
    assert error["extensions"]["httpStatus"] == 503


async def test_the_circuit_opens_after_the_threshold_and_then_refuses_without_calling(
    tmp_path,
):
    with service(tmp_path, upstream_retry_attempts=2, upstream_circuit_threshold=2) as api:
        api.simulator.state.fail_next("http503", times=4, operation=HISTORY_OP)
        await api.query(HISTORY, expect_errors=True)
        assert await readyz(api) == (200, "closed")  # one failed call: not yet
        await api.query(HISTORY, expect_errors=True)
        assert api.calls() == 4
        assert await readyz(api) == (503, "open")
        assert metric("provgraph_upstream_circuit_state") == 2

        body = await api.query(HISTORY, expect_errors=True)

        error = only_error(body)
        assert error["extensions"] == {"code": "UPSTREAM_UNAVAILABLE"}
        assert "upstream circuit is open" in error["message"]
        assert api.calls() == 4
        assert body["extensions"]["cost"]["upstreamCalls"] == 0


async def test_a_successful_probe_after_the_cool_down_closes_the_circuit(tmp_path, clock):
    with service(tmp_path, clock, upstream_retry_attempts=1, upstream_circuit_threshold=1) as api:
        await open_the_circuit(api)
        clock.advance(COOLDOWN_S - 1)
        assert await readyz(api) == (503, "open")
        clock.advance(1)
        # Ready again, so that traffic comes back to make the probe.
        assert await readyz(api) == (200, "half_open")
        assert metric("provgraph_upstream_circuit_state") == 1

        body = await api.query(HISTORY)

        assert body["data"]["device"]["provisioningHistory"]["edges"]
        assert api.calls() == 3  # the failed one, then the device's probe and the window
        assert await readyz(api) == (200, "closed")
        assert metric("provgraph_upstream_circuit_state") == 0


async def test_a_failed_probe_reopens_the_circuit_for_another_cool_down(tmp_path, clock):
    with service(tmp_path, clock, upstream_retry_attempts=1, upstream_circuit_threshold=1) as api:
        await open_the_circuit(api)
        clock.advance(COOLDOWN_S)
        await open_the_circuit(api)  # the probe fails
        assert api.calls() == 2
        clock.advance(COOLDOWN_S - 1)

        error = only_error(await api.query(HISTORY, expect_errors=True))

        assert "upstream circuit is open" in error["message"]
        assert api.calls() == 2
        assert await readyz(api) == (503, "open")


@pytest.mark.parametrize(
    ("fault_code", "opens"),
    [
        ("UnifiedWebService.REQUEST_FAILED.DeviceNotFound", False),
        ("DeviceService.INPUT_INVALID.Identifier", False),
        # An account may not list its devices: lookups that need the list must not
        # take the whole upstream down for everybody.
        ("s:Client", False),
        ("UnifiedWebService.REQUEST_FAILED.InternalError", True),
    ],
)
async def test_faults_about_the_request_do_not_open_the_circuit(tmp_path, fault_code, opens):
    with service(tmp_path, upstream_circuit_threshold=1) as api:
        api.simulator.state.knobs.fault_code = fault_code
        api.simulator.state.fail_next("fault", operation=HISTORY_OP)
        await api.query(HISTORY, expect_errors=True)

        assert await readyz(api) == ((503, "open") if opens else (200, "closed"))


async def test_an_unknown_device_does_not_open_the_circuit(tmp_path):
    with service(tmp_path, upstream_circuit_threshold=1) as api:
        for identifier in ("00000000001", "00000000002", "00000000003"):
            body = await api.query(f'{{ device(kind: ESN, identifier: "{identifier}") {{ id }} }}')
            assert body["data"]["device"] is None
        assert api.calls() == 3  # each asked upstream, and each DeviceNotFound
        assert await readyz(api) == (200, "closed")


def test_the_half_open_circuit_lets_one_probe_through_at_a_time(clock):
    breaker = CircuitBreaker(threshold=2, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert breaker.admit("op") is False
        breaker.failed(probe=False)
    with pytest.raises(CircuitOpen):
        breaker.admit("op")
    clock.advance(10)

    assert breaker.admit("op") is True
    with pytest.raises(CircuitOpen):
        breaker.admit("op")  # the probe is under way
    breaker.abandoned(probe=True)  # e.g. its request was cancelled
    assert breaker.admit("op") is True  # another call may probe now
    breaker.succeeded(probe=True)
    assert breaker.state == "closed"


def test_a_late_success_of_a_call_made_before_opening_does_not_close_it(clock):
    breaker = CircuitBreaker(threshold=1, cooldown_s=10, clock=clock)
    probe = breaker.admit("op")
    breaker.failed(probe=False)  # another call's failure opens the circuit
    breaker.succeeded(probe)
    assert breaker.state == "open"


async def test_a_retrying_call_stops_once_the_circuit_has_opened():
    breaker = CircuitBreaker(threshold=1, cooldown_s=10)
    attempts = 0

    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        raise UpstreamUnavailable(HISTORY_OP, "HTTP 503", 503)

    async def meanwhile_another_call_fails(_: float) -> None:
        breaker.failed(probe=False)

    resilience = Resilience(
        RetryPolicy(3, 0.001, 0.001),
        breaker,
        AsyncLimiter(100, 1),
        sleep=meanwhile_another_call_fails,
    )
    with pytest.raises(UpstreamUnavailable):
        await resilience.call(HISTORY_OP, attempt)
    assert attempts == 1


# Stale answers


def stale_service(tmp_path: Path, clock: Clock, **overrides: object):
    return service(
        tmp_path,
        clock,
        upstream_retry_attempts=2,
        upstream_circuit_threshold=2,
        cache_ttl_immutable_s=60,
        device_list_ttl_s=60,
        **{"cache_stale_for_s": 3600, **overrides},
    )


async def test_expired_answers_are_served_marked_stale_while_the_upstream_is_down(tmp_path, clock):
    with stale_service(tmp_path, clock) as api:
        fresh = await api.query(HISTORY)
        clock.advance(61)  # the device's probe and the window are past their freshness
        state = api.simulator.state
        state.fail_next("http503", times=4, operation=HISTORY_OP)
        stale_lookups = metric("provgraph_cache_lookups_total", result="stale")

        down = await api.query(HISTORY)

        assert down["data"] == fresh["data"]
        assert down["extensions"]["cost"] == {"upstreamCalls": 4, "cacheHits": 0, "staleReads": 2}
        (warning,) = down["extensions"]["warnings"]
        assert warning["code"] == "STALE_DATA"
        assert warning["staleReads"] == 2
        assert metric("provgraph_cache_lookups_total", result="stale") == stale_lookups + 2

        # Two failed calls opened the circuit: stale answers now come without a call.
        assert await readyz(api) == (503, "open")
        calls = api.calls() + api.calls("GetDeviceList")
        refused = await api.query(HISTORY)
        assert refused["data"] == fresh["data"]
        assert refused["extensions"]["cost"] == {
            "upstreamCalls": 0,
            "cacheHits": 0,
            "staleReads": 2,
        }
        assert api.calls() + api.calls("GetDeviceList") == calls

        # Back up: the probe closes the circuit and fresh answers replace the stale ones.
        clock.advance(COOLDOWN_S)
        back = await api.query(HISTORY)
        assert back["data"] == fresh["data"]
        assert back["extensions"]["cost"] == {"upstreamCalls": 2, "cacheHits": 0}
        assert "warnings" not in back["extensions"]


async def test_a_failure_that_is_no_outage_is_not_covered_with_stale_data(tmp_path, clock):
    with stale_service(tmp_path, clock) as api:
        await api.query(HISTORY)
        clock.advance(61)
        api.simulator.state.fail_next("http500", operation=HISTORY_OP)

        body = await api.query(HISTORY, expect_errors=True)

        assert only_error(body)["extensions"] == {"code": "UPSTREAM_UNAVAILABLE", "httpStatus": 500}
        assert "staleReads" not in body["extensions"]["cost"]


async def test_no_stale_answer_once_the_stale_time_is_over(tmp_path, clock):
    with stale_service(tmp_path, clock, cache_stale_for_s=100) as api:
        await api.query(HISTORY)
        clock.advance(60 + 100)
        api.simulator.state.fail_next("http503", times=2, operation=HISTORY_OP)

        body = await api.query(HISTORY, expect_errors=True)

        assert only_error(body)["extensions"] == {"code": "UPSTREAM_UNAVAILABLE", "httpStatus": 503}
        assert body["data"] == {"device": None}


async def test_concurrent_lookups_during_an_outage_share_one_load_and_its_stale_answer(clock):
    cache = UpstreamCache(
        BoundedMemoryCache(max_bytes=1 << 20), lock_ttl_s=1, stale_for_s=600, clock=clock
    )
    old = HistoryWindow((), True)

    async def first_load() -> HistoryWindow:
        return old

    assert await cache.get_or_load("k", first_load, 60) == (old, Found.LOADED)
    clock.advance(61)
    loads = 0
    started, release = asyncio.Event(), asyncio.Event()

    async def failing_load() -> HistoryWindow:
        nonlocal loads
        loads += 1
        started.set()
        await release.wait()
        raise UpstreamUnavailable(HISTORY_OP, "HTTP 503", 503)

    lookups = [asyncio.create_task(cache.get_or_load("k", failing_load, 60)) for _ in range(5)]
    await started.wait()
    release.set()

    assert await asyncio.gather(*lookups) == [(old, Found.STALE)] * 5
    assert loads == 1


async def test_the_freshness_deadline_travels_through_redis(redis_url, clock):
    cache = UpstreamCache(
        backend_from_url(redis_url, 0), lock_ttl_s=1, stale_for_s=600, clock=clock
    )
    key = f"test:{uuid.uuid4().hex}"
    old = HistoryWindow((), True)

    async def first_load() -> HistoryWindow:
        return old

    async def failing_load() -> HistoryWindow:
        raise UpstreamTimeout(HISTORY_OP, "no reply")

    try:
        await cache.get_or_load(key, first_load, 60)
        clock.advance(59)
        assert await cache.get_or_load(key, failing_load, 60) == (old, Found.CACHED)
        clock.advance(2)
        assert await cache.get_or_load(key, failing_load, 60) == (old, Found.STALE)
    finally:
        await cache.backend.delete(f"v1:{key}")
        await cache.close()


# The call rate


class WatchedLimiter(AsyncLimiter):
    """A real limiter that counts what it granted and tells when it held a caller back."""

    def __init__(self, max_rate: float, time_period: float) -> None:
        super().__init__(max_rate, time_period)
        self.granted = 0
        self.held_back = asyncio.Event()

    async def acquire(self, amount: float = 1) -> None:
        if not self.has_capacity(amount):
            self.held_back.set()
        await super().acquire(amount)
        self.granted += 1


def upstream_over(uws, limiter: AsyncLimiter) -> Upstream:
    async def no_wait(_: float) -> None:
        pass

    resilience = Resilience(
        RetryPolicy(3, 0.001, 0.001), CircuitBreaker(5, COOLDOWN_S), limiter, sleep=no_wait
    )
    cache = UpstreamCache(BoundedMemoryCache(max_bytes=1 << 20), lock_ttl_s=5)
    policy = CachePolicy(settle_s=3600, immutable_ttl_s=60, recent_ttl_s=60, device_list_ttl_s=60)
    return Upstream(uws, cache, policy, resilience)


def month_of_2017(month: int) -> tuple[int, int]:
    return parse_instant(f"2017-{month:02}-01"), parse_instant(f"2017-{month + 1:02}-01") - 1


async def test_every_attempt_takes_a_slot_of_the_call_rate(uws, upstream):
    limiter = WatchedLimiter(100, 1)
    fetch = upstream_over(uws, limiter).history(Cost())
    upstream.simulator.state.fail_next("http503", times=2, operation=HISTORY_OP)

    await fetch(SEED_MEID, *month_of_2017(1))

    assert upstream.calls() == 3
    assert limiter.granted == 3


async def test_calls_beyond_the_rate_wait_for_a_slot(uws, upstream):
    limiter = WatchedLimiter(2, 3600)  # two calls, then one every half hour
    fetch = upstream_over(uws, limiter).history(Cost())
    reads = {asyncio.create_task(fetch(SEED_MEID, *month_of_2017(m))) for m in (1, 2, 3)}

    async with asyncio.timeout(30):  # only bounds a failure; never reached when all works
        await limiter.held_back.wait()
    done: set[asyncio.Task] = set()
    while len(done) < 2:
        finished, _ = await asyncio.wait(reads - done, return_when=asyncio.FIRST_COMPLETED)
        done |= finished

    (waiting,) = reads - done
    assert not waiting.done()
    assert upstream.calls() == 2
    assert limiter.granted == 2
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


@pytest.mark.parametrize(
    ("per_second", "max_rate", "period"), [(100, 100, 1), (2.5, 2.5, 1), (0.5, 1, 2)]
)
def test_the_rate_setting_becomes_a_limiter(per_second, max_rate, period):
    limiter = per_second_limiter(per_second)
    assert (limiter.max_rate, limiter.time_period) == (max_rate, period)


def test_by_default_no_call_rate_caps_the_upstream_below_its_concurrency():
    """100 calls a second once made reports a third slower than 8 in flight allow."""
    assert Settings(_env_file=None).upstream_calls_per_second is None


# Backoff


@pytest.mark.parametrize(
    ("draw", "delays"), [(1.0, [0.01, 0.02, 0.025]), (0.25, [0.0025, 0.005, 0.00625])]
)
async def test_retries_back_off_exponentially_with_full_jitter_up_to_a_cap(
    uws, upstream, draw, delays
):
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    resilience = Resilience(
        RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.025),
        CircuitBreaker(5, COOLDOWN_S),
        AsyncLimiter(100, 1),
        sleep=sleep,
        uniform=lambda: draw,
    )
    upstream.simulator.state.fail_next("http503", times=3, operation=HISTORY_OP)

    await resilience.call(
        HISTORY_OP, lambda: uws.get_device_provisioning_history(SEED_MEID, *month_of_2017(1))
    )

    assert waited == pytest.approx(delays)
    assert upstream.calls() == 4

"""How every upstream call is made: paced, retried when that can help, cut off when futile.

One ``Resilience`` serves the whole process. Each call first passes the circuit breaker
(refused at once while the upstream is known to be down), then each attempt takes a
slot of the calls-per-second limit (the real service throttles) and, inside the client,
of the upstream budget (resolvers/budget.py: exchanges in flight, interactive requests
before report jobs, as ``calling_as`` says) before it is sent. Only transient failures
are retried, after a fully jittered exponential backoff, so that callers who failed
together do not come back together.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from aiolimiter import AsyncLimiter

from resolvers.budget import INTERACTIVE, Priority, calling_as
from resolvers.metrics import CIRCUIT_STATE, UPSTREAM_CALLS, UPSTREAM_RETRIES, UPSTREAM_SECONDS
from soap.errors import UpstreamError, UpstreamFault, UpstreamUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
CircuitState = Literal["closed", "half_open", "open"]
_GAUGE_VALUES: dict[CircuitState, int] = {"closed": 0, "half_open": 1, "open": 2}


class CircuitOpen(UpstreamUnavailable):
    """A call refused without being made: the upstream failed too often just now."""

    def __init__(self, operation: str, retry_in_s: float) -> None:
        super().__init__(
            operation,
            "the upstream circuit is open after repeated failures, so no call was made; "
            f"retry in {max(retry_in_s, 1):.0f} s",
        )


def shows_outage(error: UpstreamError) -> bool:
    """Whether a failed call speaks against the upstream's health.

    A fault about the request's own input (an unknown device, say) is a proper answer
    from a working service; one device's callers must not open the circuit for all.
    """
    return not (isinstance(error, UpstreamFault) and error.rejects_input)


class CircuitBreaker:
    """Opens after ``threshold`` failed calls in a row; after ``cooldown_s`` one probe
    call goes through (half-open): its success closes the circuit, its failure reopens it.

    It is read as half-open as soon as the cool-down has passed, before the probe is
    made, so that a readiness check does not keep away the traffic that would probe.
    """

    def __init__(
        self, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def admit(self, operation: str) -> bool:
        """Lets a call through, True when it is the half-open probe; else CircuitOpen."""
        state = self.state
        if state == "closed":
            return False
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        assert self._opened_at is not None
        raise CircuitOpen(operation, self._opened_at + self.cooldown_s - self._clock())

    def succeeded(self, probe: bool) -> None:
        if probe:
            log.warning("upstream circuit closed: the probe call succeeded")
            self._opened_at, self._probing = None, False
        if self._opened_at is None:
            self._failures = 0
        # A call admitted before the circuit opened proves little about the upstream
        # now: only the probe may close it.

    def failed(self, probe: bool) -> None:
        if probe:
            log.warning("upstream circuit reopened: the probe call failed")
            self._opened_at, self._probing = self._clock(), False
        elif self._opened_at is None:
            self._failures += 1
            if self._failures >= self.threshold:
                log.warning("upstream circuit opened after %d failed calls", self._failures)
                self._opened_at = self._clock()

    def abandoned(self, probe: bool) -> None:
        """A call ended without an outcome (cancelled): the next call may probe instead."""
        if probe:
            self._probing = False


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    """Attempts per call, the first included."""
    base_delay_s: float
    max_delay_s: float

    def delay(self, retry: int, uniform: Callable[[], float]) -> float:
        """Full jitter: anywhere from 0 to the capped exponential step of this retry."""
        return uniform() * min(self.max_delay_s, self.base_delay_s * 2.0 ** (retry - 1))


def per_second_limiter(calls_per_second: float) -> AsyncLimiter:
    """A limiter of ``calls_per_second``; below one a second it allows one call a period."""
    burst = max(1.0, calls_per_second)
    return AsyncLimiter(burst, burst / calls_per_second)


class Resilience:
    """The process's way to the upstream: breaker, then per attempt the rate limit
    (``limiter``: the process's own; a shared budget counts its rate itself)."""

    def __init__(
        self,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        limiter: AsyncLimiter | None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        self.retry = retry
        self.breaker = breaker
        self.limiter = limiter
        self._sleep = sleep
        self._uniform = uniform
        # Read at scrape time: the circuit turns half-open by the clock, with no call.
        CIRCUIT_STATE.set_function(lambda: _GAUGE_VALUES[self.breaker.state])

    async def call(
        self,
        operation: str,
        attempt: Callable[[], Awaitable[T]],
        priority: Priority = INTERACTIVE,
    ) -> T:
        """``attempt()``'s value, retried on transient failures; every error is typed."""
        probe = self.breaker.admit(operation)
        try:
            value = await self._attempts(operation, attempt, probe, priority)
        except UpstreamError as error:
            if shows_outage(error):
                self.breaker.failed(probe)
            else:
                self.breaker.succeeded(probe)
            raise
        except BaseException:
            self.breaker.abandoned(probe)
            raise
        self.breaker.succeeded(probe)
        return value

    async def _attempts(
        self, operation: str, attempt: Callable[[], Awaitable[T]], probe: bool, priority: Priority
    ) -> T:
        retry = 0
        while True:
            try:
                with calling_as(priority):
                    if self.limiter is not None:
                        await self.limiter.acquire()
                    return await _measured(operation, attempt)
            except UpstreamError as error:
                retry += 1
                if not error.transient or retry >= self.retry.attempts:
                    raise
                await self._sleep(self.retry.delay(retry, self._uniform))
                # Other calls may have opened the circuit meanwhile (and, its cool-down
                # over, be probing): only the probe may still call the upstream then.
                if self.breaker.state != "closed" and not probe:
                    raise
            UPSTREAM_RETRIES.labels(operation).inc()


async def _measured(operation: str, attempt: Callable[[], Awaitable[T]]) -> T:
    started = time.perf_counter()
    try:
        value = await attempt()
    except UpstreamError as error:
        _record(operation, started, error.category)
        raise
    _record(operation, started, "ok")
    return value


def _record(operation: str, started: float, outcome: str) -> None:
    UPSTREAM_SECONDS.labels(operation).observe(time.perf_counter() - started)
    UPSTREAM_CALLS.labels(operation, outcome).inc()

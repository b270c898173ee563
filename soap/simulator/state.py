"""What the simulator remembers between calls: sessions, call counts and knobs."""

import random
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from soap.contract import DEVICE_LIST_PAGE_CAP
from soap.simulator.fleet import SEED_TOKEN

FailureKind = Literal["http500", "http503", "fault", "hang", "not_xml", "truncated", "empty"]
FAILURE_KINDS: tuple[FailureKind, ...] = (
    "http500",
    "http503",
    "fault",
    "hang",
    "not_xml",
    "truncated",
    "empty",
)

USERNAME = "demo"
PASSWORD = "demo"


@dataclass
class Knobs:
    latency_s: float = 0.0
    """Added to every call, to stand in for a real network and service."""
    hang_s: float = 30.0
    """How long an injected hang holds the reply back."""
    session_idle_s: float = 20 * 60.0
    """Idle time after which a session token expires, as upstream."""
    device_list_cap: int = DEVICE_LIST_PAGE_CAP
    fault_code: str = "UnifiedWebService.REQUEST_FAILED.InternalError"
    failure_rate: float = 0.0
    """The share of calls, beyond those queued by ``fail_next``, that fail at random."""
    failure_mix: str = "http503,fault"
    """The kinds such random failures take, comma-separated, picked with equal odds."""
    attributes_namespace: str = "device"
    """Where an event's ExtendedAttributesObj, Key and Value elements are: "device" (the
    DeviceService contract's namespace), "common" (the Common contract's, where WCF puts
    the members of a data contract declared there) or "none" (unqualified)."""
    attribute_key_element: str = "Key"
    """The local name the key of an extended attribute is sent under: anything else makes
    attributes that cannot be read."""
    device_list_fault: str = ""
    """How GetDeviceList refuses an account without the right to list devices:
    "unsupported" (an ``s:Client`` fault), "access" (an access-denied fault), or "" (no
    refusal). GetDeviceProvisioningHistory keeps working."""


@dataclass
class Failure:
    kind: FailureKind
    operation: str | None
    """Only calls of this operation fail; None for any."""


@dataclass
class SimulatorState:
    knobs: Knobs = field(default_factory=Knobs)
    calls: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0
    """The most calls this simulator ever had in hand at once."""
    _failures: deque[Failure] = field(default_factory=deque)
    _sessions: dict[str, float] = field(default_factory=dict)
    _expired: set[str] = field(default_factory=set)
    """Tokens that ran out, remembered so that their callers hear "expired", not "invalid"."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(default_factory=lambda: random.Random(2017))
    """Seeded: a load run injects the same failures in the same order every time."""

    # Tests drive the simulator from another thread than the server's, hence the lock.

    def count(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] += 1

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()
            self.peak_in_flight = self.in_flight

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def fail_next(self, kind: FailureKind, times: int = 1, operation: str | None = None) -> None:
        """Makes the next ``times`` matching calls fail the given way."""
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}")
        with self._lock:
            self._failures.extend(Failure(kind, operation) for _ in range(times))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def take_failure(self, operation: str) -> FailureKind | None:
        with self._lock:
            for failure in self._failures:
                if failure.operation in (None, operation):
                    self._failures.remove(failure)
                    return failure.kind
            if self.knobs.failure_rate and self._random.random() < self.knobs.failure_rate:
                kinds = [k for k in self.knobs.failure_mix.split(",") if k in FAILURE_KINDS]
                return self._random.choice(kinds) if kinds else None
        return None

    def log_in(self, username: str, password: str) -> str | None:
        if not (
            secrets.compare_digest(username, USERNAME)
            and secrets.compare_digest(password, PASSWORD)
        ):
            return None
        token = secrets.token_hex(16)
        with self._lock:
            self._sessions[token] = time.monotonic()
        return token

    def log_out(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def check_session(self, token: str | None) -> Literal["ok", "expired", "invalid"]:
        """Validates a token and, if valid, restarts its idle clock."""
        if token == SEED_TOKEN:
            return "ok"
        now = time.monotonic()
        with self._lock:
            if token in self._expired:
                return "expired"
            if token is None or token not in self._sessions:
                return "invalid"
            if now - self._sessions[token] > self.knobs.session_idle_s:
                del self._sessions[token]
                self._expired.add(token)
                return "expired"
            self._sessions[token] = now
        return "ok"

    def idle_sessions(self, seconds: float) -> None:
        """Makes every open session look idle for ``seconds`` more, as if time had passed."""
        with self._lock:
            for token in self._sessions:
                self._sessions[token] -= seconds

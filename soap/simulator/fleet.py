"""A deterministic device fleet and its provisioning histories.

Every device and every event follows from the fleet's seed, so tests and benchmarks can
compare what the API returns with the ground truth here. Histories are made on first use
and a bounded number kept, since the largest hold tens of thousands of events.
"""

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from models.devices import DeviceIdentifier
from models.events import ExtendedAttribute, ProvisioningEvent
from models.instants import TICKS_PER_MILLISECOND, TICKS_PER_SECOND, from_datetime, parse_instant

EVENT_TYPES = (
    "Activation",
    "Activation Confirmed",
    "Suspend",
    "Suspension Confirmed",
    "Resume Confirmed",
    "Restore",
    "Deactivate",
    "Device Move",
    "Service Plan Change",
)
USERS = ("John Admin", "Maria Ops", "api-integration", "svc-provisioning", "Wei Chen")
PLANS = ("M2M 5MB", "IoT Unlimited 4G", "Fleet 1GB Shared", "ThingSpace 50MB")
ACCOUNT = "0342077109-00001"
SUB_ACCOUNT = "0342077109-00002"
"""The account name GetDeviceList gives every fourth ordinary device: one login sees the
devices of more than one account."""
SEED_TOKEN = "a56832d9-b870-4e5d-85b8-57003a592a01"


def _year(year: int) -> int:
    return from_datetime(datetime(year, 1, 1, tzinfo=UTC))


@dataclass(frozen=True, slots=True)
class Profile:
    """How a device's history is made."""

    name: str
    size: int
    start: int
    end: int
    burst: int = 0
    """Events crowded into one millisecond where the first 500-event page ends."""
    burst_ticks: int = 4
    """How many distinct 100 ns ticks the burst uses; 1 puts it all at one instant."""
    nil_style: bool = True
    """Whether absent optional fields are sent as ``i:nil`` (else left out)."""


@dataclass(frozen=True, slots=True)
class SimDevice:
    device_id: int
    identifiers: tuple[DeviceIdentifier, ...]
    profile: Profile
    seed: int
    account: str = ACCOUNT

    @property
    def primary(self) -> DeviceIdentifier:
        return self.identifiers[0]


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


class Fleet:
    """A few hundred devices of every kind plus the hard cases, all from one seed."""

    def __init__(self, seed: int = 2017, ordinary: int = 300, bulk: tuple[int, ...] = ()) -> None:
        self.seed = seed
        self.devices: list[SimDevice] = []
        self._index: dict[DeviceIdentifier, SimDevice] = {}
        self._scripted: dict[int, tuple[ProvisioningEvent, ...]] = {}
        rng = random.Random(seed)
        for profile, identifiers in self._special(rng):
            self._add(profile, identifiers, rng)
        kinds = ("esn", "meid", "imei", "iccid", "eid")
        for number in range(ordinary):
            size = min(int(rng.paretovariate(0.9) * 8) - 8, 20_000)
            start = _year(2015 + rng.randrange(6))
            end = start + rng.randrange(1, 5) * 365 * 86_400 * TICKS_PER_SECOND
            profile = Profile("ordinary", size, start, end, nil_style=number % 3 != 0)
            account = SUB_ACCOUNT if number % 4 == 3 else ACCOUNT
            self._add(profile, self._identifiers(kinds[number % len(kinds)], rng), rng, account)
        for size in bulk:  # very long histories, for benchmarks: "bulk-1000000"
            profile = Profile(f"bulk-{size}", size, _year(2015), _year(2026))
            self._add(profile, self._identifiers("imei", rng), rng)

    def _special(self, rng: random.Random) -> list[tuple[Profile, list[DeviceIdentifier]]]:
        y2016, y2017, y2018, y2020 = _year(2016), _year(2017), _year(2018), _year(2020)
        y2025, y2026 = _year(2025), _year(2026)
        meid = DeviceIdentifier("meid", "54689785258599")
        return [
            (
                Profile("seed-meid", 840, y2016, y2018, nil_style=False),
                [
                    meid,
                    DeviceIdentifier("mdn", "5348152777"),
                    DeviceIdentifier("min", "5348152777"),
                ],
            ),
            (Profile("seed-esn", 40, y2016, y2018), [DeviceIdentifier("esn", "09123456123")]),
            (Profile("empty", 0, y2017, y2018), self._identifiers("imei", rng)),
            (Profile("exactly-500", 500, y2017, y2018), self._identifiers("imei", rng)),
            (
                Profile("boundary-millisecond", 1_000, y2017, y2018, burst=6),
                self._identifiers("iccid", rng),
            ),
            (Profile("burst", 900, y2017, y2018, burst=180), self._identifiers("esn", rng)),
            (
                Profile("sub-millisecond", 1_500, y2017, y2017 + 3_600 * TICKS_PER_SECOND),
                self._identifiers("meid", rng),
            ),
            (
                Profile("over-500-instant", 760, y2017, y2018, burst=620, burst_ticks=1),
                self._identifiers("imei", rng),
            ),
            (Profile("twelve-thousand", 12_000, y2025, y2026), self._identifiers("iccid", rng)),
            (Profile("tens-of-thousands", 30_000, y2020, y2025), self._identifiers("eid", rng)),
        ]

    def _identifiers(self, kind: str, rng: random.Random) -> list[DeviceIdentifier]:
        mdn = "5" + _digits(rng, 9)
        primary = {
            "esn": lambda: _digits(rng, 11),
            "meid": lambda: "".join(rng.choice("0123456789ABCDEF") for _ in range(14)),
            "imei": lambda: "35" + _digits(rng, 13),
            "iccid": lambda: "8914800000" + _digits(rng, 10),
            "eid": lambda: "89049032" + _digits(rng, 24),
        }[kind]()
        identifiers = [DeviceIdentifier(kind, primary)]
        if kind in ("esn", "meid"):
            identifiers += [DeviceIdentifier("mdn", mdn), DeviceIdentifier("min", mdn)]
        else:
            identifiers += [DeviceIdentifier("mdn", mdn), DeviceIdentifier("msisdn", "1" + mdn)]
            if kind == "iccid":
                identifiers.insert(1, DeviceIdentifier("imei", "35" + _digits(rng, 13)))
        return identifiers

    def _add(
        self,
        profile: Profile,
        identifiers: list[DeviceIdentifier],
        rng: random.Random,
        account: str = ACCOUNT,
    ) -> None:
        number = len(self.devices) + 1
        device = SimDevice(number, tuple(identifiers), profile, rng.getrandbits(32), account)
        self.devices.append(device)
        for identifier in identifiers:
            self._index[DeviceIdentifier(identifier.kind, identifier.identifier.upper())] = device

    def find(self, kind: str, identifier: str) -> SimDevice | None:
        """Looks a device up by any of its identifiers; kinds compare case-insensitively."""
        return self._index.get(DeviceIdentifier(kind.lower(), identifier.upper()))

    def by_name(self, name: str) -> SimDevice:
        """The first device of a profile, e.g. ``fleet.by_name("exactly-500")``."""
        return next(d for d in self.devices if d.profile.name == name)

    def history(self, device: SimDevice) -> tuple[ProvisioningEvent, ...]:
        """The device's whole history, oldest first; events of one instant in a fixed order."""
        scripted = self._scripted.get(device.device_id)
        return scripted if scripted is not None else _history(device)

    def script(self, identifier: DeviceIdentifier, events: list[ProvisioningEvent]) -> SimDevice:
        """Adds a device with exactly the given history, for tests of paging edge cases."""
        ordered = tuple(sorted(events, key=lambda e: e.occurred_at))
        if ordered:
            start, end = ordered[0].occurred_at, ordered[-1].occurred_at
        else:
            start = end = 0
        self._add(Profile("scripted", len(ordered), start, end), [identifier], random.Random(0))
        device = self.devices[-1]
        self._scripted[device.device_id] = ordered
        return device


def _event(rng: random.Random, ticks: int, mdn: str | None) -> ProvisioningEvent:
    roll = rng.random()
    attributes: tuple[ExtendedAttribute, ...] = ()
    if roll < 0.15:
        attributes = (
            ExtendedAttribute("OrderId", f"ORD-{rng.randrange(10**6):06d}"),
            ExtendedAttribute("Channel", rng.choice(("API", "Portal", "Batch, nightly"))),
        )
    return ProvisioningEvent(
        occurred_at=ticks,
        status="Failure" if rng.random() < 0.08 else "Success",
        event_by=rng.choice(USERS) if roll < 0.95 else None,
        event_type=rng.choice(EVENT_TYPES),
        service_plan=rng.choice(PLANS) if rng.random() < 0.8 else None,
        mdn=mdn,
        msisdn=("1" + mdn) if mdn and rng.random() < 0.7 else None,
        extended_attributes=attributes,
    )


@lru_cache(maxsize=1024)  # a fleet report reads ~1,000 devices side by side
def _history(device: SimDevice) -> tuple[ProvisioningEvent, ...]:
    profile = device.profile
    rng = random.Random(device.seed)
    mdn = next((i.identifier for i in device.identifiers if i.kind == "mdn"), None)
    span = profile.end - profile.start
    if profile.name == "sub-millisecond":
        # Groups of events inside one millisecond, each at its own 100 ns tick.
        instants: list[int] = []
        while len(instants) < profile.size:
            base = (
                profile.start + rng.randrange(span // TICKS_PER_MILLISECOND) * TICKS_PER_MILLISECOND
            )
            group = rng.randrange(2, 9)
            instants += [base + rng.randrange(TICKS_PER_MILLISECOND) for _ in range(group)]
        instants = instants[: profile.size]
    else:
        instants = []
        while len(instants) < profile.size - profile.burst:
            ticks = profile.start + rng.randrange(span)
            if rng.random() < 0.5:
                ticks -= ticks % TICKS_PER_MILLISECOND
            instants.append(ticks)
            # Operations often log a confirmation in the same millisecond.
            if rng.random() < 0.06 and len(instants) < profile.size - profile.burst:
                millisecond = ticks - ticks % TICKS_PER_MILLISECOND
                instants.append(millisecond + rng.randrange(TICKS_PER_MILLISECOND))
    instants.sort()
    if profile.burst:
        # Put the burst where it straddles the first 500-event page boundary.
        at = instants[min(497, len(instants) - 1)] if instants else profile.start
        step = TICKS_PER_MILLISECOND // profile.burst_ticks
        base = at - at % TICKS_PER_MILLISECOND
        instants += [base + rng.randrange(profile.burst_ticks) * step for _ in range(profile.burst)]
        instants.sort()
    events = [_event(rng, ticks, mdn) for ticks in instants]
    if profile.name == "seed-meid":
        events = events[: profile.size - 2] + _seed_events()
        events.sort(key=lambda e: e.occurred_at)
    return tuple(events)


def _seed_events() -> list[ProvisioningEvent]:
    """The two events of the published GetDeviceProvisioningHistory response example."""
    return [
        ProvisioningEvent(
            parse_instant(at), "Success", "John Admin", kind, None, "5348152777", None, ()
        )
        for at, kind in (
            ("2017-01-02T12:00:48.21Z", "Suspension Confirmed"),
            ("2017-01-02T12:02:06.22Z", "Resume Confirmed"),
        )
    ]

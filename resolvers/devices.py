"""Devices: the account's device list (GetDeviceList) and lookups by identifier."""

from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import NamedTuple

from models.devices import DeviceIdentifier, DeviceListPage, DeviceRecord
from models.instants import parse_instant
from resolvers.upstream import Cost, Upstream
from soap.contract import DEVICE_NOT_FOUND
from soap.errors import UpstreamError, UpstreamFault

PROBE_INSTANT = parse_instant("2000-01-01T00:00:00Z")
"""A fixed, empty range asked for to learn whether the upstream knows a device."""


class Device(NamedTuple):
    """A device as the API shows it: the identifier it was asked by, and all it has."""

    identifier: DeviceIdentifier
    identifiers: tuple[DeviceIdentifier, ...]
    """All it has where the device list gave the device; else the one asked by alone."""
    record: DeviceRecord | None
    """Its GetDeviceList entry, where the device list gave the device."""


class DeviceListPosition(NamedTuple):
    """A device's place in the device list: the page (by the id it follows) and index."""

    page_after: int | None
    position: int
    """Its index on that page (a field named ``index`` would hide ``tuple.index``)."""


class ListedDevice(NamedTuple):
    device: Device
    at: DeviceListPosition


def _device(record: DeviceRecord, asked: DeviceIdentifier | None = None) -> Device:
    return Device(asked or record.identifiers[0], record.identifiers, record)


async def list_devices(
    upstream: Upstream, cost: Cost, first: int, after: DeviceListPosition | None
) -> tuple[list[ListedDevice], bool]:
    """Up to ``first`` devices after a position, and whether more follow."""
    page_after, index = after if after is not None else (None, -1)
    found: list[ListedDevice] = []
    while True:
        page = await upstream.device_list(page_after, cost)
        for position in range(index + 1, len(page.devices)):
            if len(found) == first:
                return found, True
            found.append(
                ListedDevice(
                    _device(page.devices[position]), DeviceListPosition(page_after, position)
                )
            )
        if page.is_complete or not page.devices:
            return found, False
        if len(found) == first:
            return found, True
        page_after, index = page.largest_device_id_seen, -1


async def account_devices(upstream: Upstream, cost: Cost) -> AsyncIterator[DeviceRecord]:
    """Every device of the account, in the device list's order, a page (one call, or the
    cache) at a time: whoever stops early reads no further page."""
    page_after: int | None = None
    while True:
        page = await upstream.device_list(page_after, cost)
        for record in page.devices:
            yield record
        if page.is_complete or not page.devices:
            return
        page_after = page.largest_device_id_seen


_INDEXES: OrderedDict[int, tuple[DeviceListPage, dict[DeviceIdentifier, DeviceRecord]]] = (
    OrderedDict()
)
_INDEXES_KEPT = 64


def _index(page: DeviceListPage) -> dict[DeviceIdentifier, DeviceRecord]:
    """Every identifier of a device-list page, by (kind, upper-cased identifier).

    Cached pages are shared immutable objects, so an index is built once per page object
    (the entry holds the page, which keeps its id from being reused).
    """
    entry = _INDEXES.get(id(page))
    if entry is not None and entry[0] is page:
        _INDEXES.move_to_end(id(page))
        return entry[1]
    index = {
        DeviceIdentifier(i.kind, i.identifier.upper()): record
        for record in page.devices
        for i in record.identifiers
    }
    _INDEXES[id(page)] = (page, index)
    if len(_INDEXES) > _INDEXES_KEPT:
        _INDEXES.popitem(last=False)
    return index


async def find_devices(
    upstream: Upstream, cost: Cost, wanted: Sequence[DeviceIdentifier]
) -> list[Device | None]:
    """Each identifier's device, or None where the upstream does not know it.

    A device list the cache holds gives every identifier a device has. Any other device
    is asked of the upstream directly, by an empty history probe (cached for good): one
    call a device, where an uncached list costs a call per 2,000 devices of the account,
    and an account without the right to list devices cannot read it at all. A device
    found so carries only the identifier it was asked by; ``all_identifiers`` gives the
    rest when they are wanted.
    """
    keys = [DeviceIdentifier(w.kind, w.identifier.upper()) for w in wanted]
    found: dict[DeviceIdentifier, DeviceRecord] = {}
    page_after: int | None = None
    while len(found) < len(set(keys)):
        page = await upstream.cached_device_list(page_after, cost)
        if page is None:
            break
        index = _index(page)
        found.update((key, index[key]) for key in keys if key in index)
        if page.is_complete or not page.devices:
            break
        page_after = page.largest_device_id_seen
    results: list[Device | None] = []
    fetch = upstream.history(cost)
    for asked, key in zip(wanted, keys, strict=True):
        record = found.get(key)
        if record is not None:
            results.append(Device(asked, record.identifiers, record))
            continue
        try:
            await fetch(asked, PROBE_INSTANT, PROBE_INSTANT)
        except UpstreamFault as fault:
            if fault.code != DEVICE_NOT_FOUND:
                raise
            results.append(None)
        else:
            results.append(Device(asked, (asked,), None))
    return results


async def all_identifiers(
    upstream: Upstream, cost: Cost, device: Device
) -> tuple[DeviceIdentifier, ...]:
    """Every identifier of the device: those of its device-list entry.

    The list is read (from the cache, else the upstream) up to the device's entry. A
    device the list lacks has the identifier it was asked by alone. So has every device
    of a request where the list cannot be read (an account without the right to list
    devices, say): the request's cost keeps the first reason, for one warning.
    """
    if device.record is not None or cost.device_list_unavailable is not None:
        return device.identifiers
    key = DeviceIdentifier(device.identifier.kind, device.identifier.identifier.upper())
    page_after: int | None = None
    try:
        while True:
            page = await upstream.device_list(page_after, cost)
            record = _index(page).get(key)
            if record is not None:
                return record.identifiers
            if page.is_complete or not page.devices:
                return device.identifiers
            page_after = page.largest_device_id_seen
    except UpstreamError as error:
        if cost.device_list_unavailable is None:
            cost.device_list_unavailable = error
        return device.identifiers

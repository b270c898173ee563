"""A device's history as a Relay connection, paged lazily from the upstream."""

from collections.abc import Callable
from dataclasses import dataclass

from graph.compiled import Remembered
from graph.context import Info
from graph.errors import user_error
from graph.history.types import ProvisioningEventConnection, ProvisioningEventFilter
from graph.relay import page_info, page_size
from models.devices import DeviceIdentifier
from models.events import ProvisioningEvent as EventRecord
from models.instants import TICKS_PER_SECOND
from resolvers.cursors import CursorCodec
from resolvers.history import (
    RANGE_START,
    EventRef,
    HistoryPage,
    KnownWindow,
    Matcher,
    PagedEvent,
    Position,
    count,
    match_all,
    matcher,
    range_problem,
    read_backward,
    read_forward,
)

CURSOR_KIND = "h"
CURSOR_FIELDS = 8  # earliest, latest, at (start, offset), instant, rank, after (start, offset)


class _Edge(Remembered):
    """An edge whose cursor is only encoded if a query selects it, then kept.

    Resolved by attribute, in place of ProvisioningEventEdge: a page of 500 edges would
    otherwise sign 500 cursors nobody asked for. The edges of a cached window are kept
    with it (``_edges``), and a plan keeps its completion on each: nothing here changes.
    """

    __slots__ = ("_cursor", "_encode", "_item", "node")

    def __init__(self, item: PagedEvent, encode: Callable[[PagedEvent], str]) -> None:
        # Remembered.__init__'s one assignment, without its call: one edge an event.
        self.completion = None
        self.node: EventRecord = item.event  # resolved as ProvisioningEvent, field by field
        self._item = item
        self._encode = encode
        self._cursor: str | None = None

    @property
    def cursor(self) -> str:
        if self._cursor is None:
            self._cursor = self._encode(self._item)
        return self._cursor


def event_matcher(
    filter: ProvisioningEventFilter | None,
) -> tuple[Matcher, list[list[str] | None] | None]:
    if filter is None:
        return match_all, None
    return matcher(filter.event_types, filter.statuses, filter.event_by)


@dataclass(frozen=True)
class _Cursor:
    earliest: int
    latest: int
    ref: EventRef


def _decode(codec: CursorCodec, scope: bytes, value: str, argument: str) -> _Cursor:
    fields = codec.decode(value, CURSOR_KIND, scope, CURSOR_FIELDS)
    earliest, latest, start, offset, instant, rank, next_start, next_offset = fields
    if (
        earliest is None
        or latest is None
        or start is None
        or offset is None
        or instant is None
        or rank is None
        or (next_start is None) != (next_offset is None)
    ):
        raise user_error(f"{argument} is not a valid cursor.", argument)
    after = (
        Position(next_start, next_offset)
        if next_start is not None and next_offset is not None
        else None
    )
    return _Cursor(earliest, latest, EventRef(Position(start, offset), instant, rank, after))


def default_latest(now: int, quantum_s: float) -> int:
    """Now, rounded up to a whole quantum, so that queries close in time share windows."""
    quantum = max(1, int(quantum_s * TICKS_PER_SECOND))
    return -(-now // quantum) * quantum


@dataclass(frozen=True)
class _Read:
    """One page's read: the range (as a cursor carries it), the filter and the cursors."""

    scope: bytes
    earliest: int
    latest: int
    matches: Matcher
    after: EventRef | None
    before: EventRef | None


def _plan(
    info: Info,
    device: DeviceIdentifier,
    occurred_after: int | None,
    occurred_before: int | None,
    filter: ProvisioningEventFilter | None,
    after: str | None,
    before: str | None,
) -> _Read:
    """The range to read and where in it, from the arguments; BAD_USER_INPUT when they
    do not fit together."""
    services = info.context.services
    if problem := range_problem(occurred_after, occurred_before):
        argument, message = problem
        raise user_error(message, argument)
    matches, canonical = event_matcher(filter)
    codec = services.cursors
    scope = codec.scope(
        CURSOR_KIND,
        device.kind,
        device.identifier.upper(),
        occurred_after,
        occurred_before,
        canonical,
    )
    cursors = {
        name: _decode(codec, scope, value, name)
        for name, value in (("after", after), ("before", before))
        if value is not None
    }
    if len({(c.earliest, c.latest) for c in cursors.values()}) > 1:
        raise user_error("after and before come from different reads of the history.")
    # A cursor carries the range it was read with: the next page reads the same range
    # even where the caller left the bounds to their defaults.
    anchor = next(iter(cursors.values()), None)
    earliest = (
        occurred_after
        if occurred_after is not None
        else (anchor.earliest if anchor else RANGE_START)
    )
    latest = (
        occurred_before
        if occurred_before is not None
        else (
            anchor.latest
            if anchor
            else default_latest(services.upstream.now(), services.limits.cache_ttl_recent_s)
        )
    )
    if earliest > latest:
        raise user_error("occurredAfter must not be later than occurredBefore.", "occurredAfter")
    return _Read(
        scope,
        earliest,
        latest,
        matches,
        cursors["after"].ref if "after" in cursors else None,
        cursors["before"].ref if "before" in cursors else None,
    )


async def provisioning_history(
    info: Info,
    device: DeviceIdentifier,
    occurred_after: int | None,
    occurred_before: int | None,
    filter: ProvisioningEventFilter | None,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> ProvisioningEventConnection:
    context = info.context
    size = page_size(first, last)
    read = _plan(info, device, occurred_after, occurred_before, filter, after, before)
    fetch = context.services.upstream.history(context.cost)
    page: HistoryPage
    if last is not None:
        page = await read_backward(
            fetch, device, read.earliest, read.latest, size, read.before, read.after, read.matches
        )
    else:
        page = await read_forward(
            fetch, device, read.earliest, read.latest, size, read.after, read.before, read.matches
        )
        if read.after is not None and read.before is None:
            # A client paging on: its next page's window is read while it takes this one.
            context.services.upstream.read_ahead(context.cost, device, page, size, read.latest)
    context.cost.gaps.extend((device, gap) for gap in page.gaps)
    return _connection(info, device, read, page)


EDGE_READS = 8
"""Reads (ranges, filters, secrets) whose edges a known window keeps at once."""


def _edges(
    page: HistoryPage, read: tuple[object, ...], encode: Callable[[PagedEvent], str]
) -> list[_Edge]:
    """The page's edges, each made once for every ``read`` of its window."""
    edges: list[_Edge] = []
    known: KnownWindow | None = None
    kept: list[_Edge | None] = []
    for item in page.items:
        start, offset = item.window_start, item.offset
        if known is None or known.start != start:
            known = page.windows.get(start)
            if known is None:
                edges.append(_Edge(item, encode))
                continue
            derived = known.derived
            found = derived.get(read)
            if isinstance(found, list):
                kept = found
            else:
                if len(derived) >= EDGE_READS:
                    derived.clear()
                kept = [None] * len(known.items)
                derived[read] = kept
        if offset < len(kept) and known.items[offset] is item:
            edge = kept[offset]
            if edge is None:
                edge = kept[offset] = _Edge(item, encode)
        else:  # an item of another read of this window (the cache's entry was replaced)
            edge = _Edge(item, encode)
        edges.append(edge)
    return edges


def _connection(
    info: Info, device: DeviceIdentifier, read: _Read, page: HistoryPage
) -> ProvisioningEventConnection:
    context = info.context
    codec = context.services.cursors
    sign = codec.encoder(CURSOR_KIND, read.scope)
    earliest, latest = read.earliest, read.latest

    def encode(item: PagedEvent) -> str:
        start, offset = item.window_start, item.offset
        if item.last:
            after = item.following
            next_start, next_offset = (after.window_start, after.offset) if after else (None, None)
        else:
            next_start, next_offset = start, offset + 1
        return sign(
            (
                earliest,
                latest,
                start,
                offset,
                item.event.occurred_at,
                item.rank,
                next_start,
                next_offset,
            ),
        )

    # A cursor is made of the item, the range and the scope, signed with the codec's key.
    edges = _edges(page, (codec, read.scope, earliest, latest), encode)

    async def count_events() -> int:
        fetch = context.services.upstream.history(context.cost)
        total, gaps = await count(fetch, device, read.earliest, read.latest, read.matches)
        context.cost.gaps.extend(
            (device, gap) for gap in gaps if (device, gap) not in context.cost.gaps
        )
        return total

    return ProvisioningEventConnection(
        edges=edges,  # type: ignore[arg-type]  # lazy edges, resolved by attribute (_Edge)
        page_info=page_info(edges, has_next=page.has_next, has_previous=page.has_previous),
        count_events=count_events,
    )

"""Live events executed once for every subscriber who would get the same result.

Subscribers of an event subscription whose document, operation, variables (but for the
replay cursor, ``after``), visible organizations and scopes are equal get the same result
for every event. They form a group: one execution per event, whose result is handed to
every member, and whose payload is encoded once (``server/frames.py`` splices it into
each member's message).

A member still runs its own operation through the schema, with its own context, from
start to end: its parsing, validation, limits, scope check, bad arguments, metrics and
last words are its own, as they were. Only the source of its live events changes: its
subscription resolver (``event_rows``) joins the group instead of the hub, replays what
it asked for with ``after`` on its own, then hands over to the group's results and waits
for the end of its live phase (its queue overflowed: it raises SubscriberTooSlow, as the
hub would have; the hub stopped: it ends). So its operation runs in a task of its own
(the pump), while the member reads its own results, then the group's.

The group's results go out through the member's transport, unless the transport gave it
an outlet (``OUTLET``): a WebSocket's sends the result's message itself, as the protocol
handler would have sent it, without the hops in between (server/sockets.py). Either way
from the member's stream, in order, one result after the other: a client that does not
read holds up its own stream only.

The seam, as in ``EventHub.subscribe``: a member joins its group in the same step as it
reads the hub's position; it replays the outbox up to there on its own, and takes the
group's results for the rows after it (and after its ``after``). A new group listens to
the hub in that same step, so no row falls between. Each member has its own bounded
queue of the group's results: one that falls SUBSCRIBER_QUEUE_SIZE behind is dropped
alone; a member leaving ends nobody else's stream; the last one leaving ends the group.

What the members of a group share besides the data is what one execution makes of an
event: its ``extensions`` (the cost: no upstream call, as no field of an event reads the
upstream) and its errors, an unexpected one logged once and masked without a member's
request id. The group's own operation is nobody's request: no metrics of its own, no
request id, no member's trace.
"""

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, cast

from graphql import (
    FieldNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)
from strawberry.schema.base import BaseSchema
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from graph.context import Context, Info
from models.principal import Principal
from models.recipes import OutboxEvent
from resolvers.events import EventHub, Listener, SubscriberTooSlow
from resolvers.metrics import SHARED_DELIVERIES, SHARED_EXECUTIONS, SHARED_GROUPS

log = logging.getLogger(__name__)

REPLAY_ARGUMENT = "after"
"""The argument of an event subscription naming the event to replay from."""
SHARED_SUBJECT = "shared subscription"
"""The subject of a group's own operation: it acts for no one in particular."""

_HANDOVER = object()
"""From a member's resolver: replayed, now the group's results."""
_END = object()
"""The member's own operation is over."""
_DROPPED = object()
_CLOSED = object()

Key = tuple[object, ...]
Accepts = Callable[[OutboxEvent], bool]
Outlet = Callable[[ExecutionResult], Awaitable[None]]
"""Sends one of the group's results to a member's client, as the next message of its
operation."""

OUTLET: contextvars.ContextVar[Outlet | None] = contextvars.ContextVar("outlet", default=None)
"""The outlet of the operation whose task is created next in this context: a transport
sets it before its protocol handler starts the operation's task, which inherits it."""


class SharedData(dict[str, Any]):
    """A shared result's data. ``frame`` is its payload with that payload's JSON, set by
    whoever encodes it first, for the others to reuse."""

    __slots__ = ("frame",)

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.frame: tuple[dict[str, Any], str] | None = None


@dataclasses.dataclass(frozen=True)
class _Request:
    query: str
    variables: dict[str, Any] | None
    context: Context
    operation_name: str | None


@dataclasses.dataclass(frozen=True)
class _Failure:
    error: Exception


class _Inbox:
    """A member's queue of the group's results, for its stream alone to read: at most
    ``size`` of them, then its last word. Lighter than an ``asyncio.Queue``: a result
    goes through one for every member."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: collections.deque[object] = collections.deque()
        self._reader: asyncio.Future[None] | None = None

    def put(self, item: object) -> bool:
        """Queues a result; False when ``size`` of them are waiting already."""
        if len(self._items) >= self._size:
            return False
        self._items.append(item)
        self._wake()
        return True

    def end(self, how: object, *, now: bool) -> None:
        """Queues the last word: after the results waiting, or (``now``) in their place."""
        if now:
            self._items.clear()
        self._items.append(how)
        self._wake()

    async def get(self) -> object:
        while not self._items:
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return self._items.popleft()

    def _wake(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)


class _Member:
    """One subscriber's operation, and its queues: its own results, the group's."""

    def __init__(
        self, request: _Request, shared: "SharedSubscriptions", outlet: Outlet | None
    ) -> None:
        self.request = request
        self.shared = shared
        self.outlet = outlet
        self.own: asyncio.Queue[object] = asyncio.Queue(1)
        self.live = _Inbox(0)
        self.ended: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        """How the live phase ended, for the resolver: _DROPPED or _CLOSED."""
        self.group: _Group | None = None
        self.seam = 0
        """The group's results for rows up to here are not this member's."""

    def join(
        self, info: Info, hub: EventHub, accepts: Accepts, after: int | None
    ) -> AsyncIterator[OutboxEvent]:
        group = self.shared.group_for(self.request, info, hub, accepts)
        # In one step with the group's listening (for a new group) and with nothing
        # delivered between: rows up to the seam are replayed, later ones are the group's.
        seam = hub.delivered
        self.seam = seam if after is None else max(seam, after)
        self.live = _Inbox(hub.queue_size)
        self.group = group
        group.members.add(self)
        return self._rows(hub, accepts, after, seam)

    async def _rows(
        self, hub: EventHub, accepts: Accepts, after: int | None, seam: int
    ) -> AsyncIterator[OutboxEvent]:
        if after is not None:
            async for row in hub.replay(accepts, after, seam):
                yield row
        await self.own.put(_HANDOVER)
        if await self.ended is _DROPPED:
            raise SubscriberTooSlow.behind(hub.queue_size)

    def offer(self, seq: int | None, result: ExecutionResult) -> int:
        """Queues one of the group's results; how many were queued (0 or 1)."""
        if seq is not None and seq <= self.seam:
            return 0
        if not self.live.put(result):
            self.live.end(_DROPPED, now=True)
            self.leave()
            return 0
        return 1

    def end(self, how: object) -> None:
        self.live.end(how, now=how is _DROPPED)

    def leave(self) -> None:
        if self.group is not None:
            self.group.remove(self)
            self.group = None


class _Group:
    """Members sharing one execution of their live events."""

    def __init__(
        self, key: Key, request: _Request, listener: Listener, shared: "SharedSubscriptions"
    ) -> None:
        self.key = key
        self.request = request
        self.listener = listener
        self.shared = shared
        self.members: set[_Member] = set()
        self.seq: int | None = None
        """The row whose result the group's operation is computing."""
        self.ending: object = _CLOSED
        self.stopped = False
        principal = request.context.principal
        # Only what the key holds: the result is the same for every member.
        self.context = dataclasses.replace(
            request.context,
            principal=Principal(
                subject=SHARED_SUBJECT,
                organizations=principal.organizations,
                scopes=principal.scopes,
                all_organizations=principal.all_organizations,
            ),
            connection_params=None,
            authorization=None,
        )
        # A context of its own: the group is no member's request, nor in its trace.
        self.task = asyncio.create_task(self._run(), context=contextvars.Context())
        SHARED_GROUPS.inc()

    async def rows(self) -> AsyncIterator[OutboxEvent]:
        try:
            async for row in self.listener:
                self.seq = row.seq
                yield row
        except SubscriberTooSlow:
            self.ending = _DROPPED  # each member hears it as its own

    async def _run(self) -> None:
        _share.set(self)
        request = self.request
        try:
            results = await self.shared.schema.subscribe(
                request.query,
                variable_values=request.variables,
                context_value=self.context,
                operation_name=request.operation_name,
            )
            async with contextlib.aclosing(results):
                async for result in results:
                    seq, self.seq = self.seq, None
                    shared = ExecutionResult(
                        data=None if result.data is None else SharedData(result.data),
                        errors=result.errors,
                        extensions=result.extensions,
                    )
                    SHARED_EXECUTIONS.inc()
                    SHARED_DELIVERIES.inc(sum(m.offer(seq, shared) for m in list(self.members)))
        except Exception:
            log.exception("a shared subscription failed")
        finally:
            self.stop()
            for member in list(self.members):
                member.end(self.ending)

    def remove(self, member: _Member) -> None:
        self.members.discard(member)
        if not self.members:
            self.stop()
            self.task.cancel()

    def stop(self) -> None:
        """No one joins any more."""
        if self.stopped:
            return
        self.stopped = True
        self.shared.forget(self)
        self.request.context.services.hub.unlisten(self.listener)
        SHARED_GROUPS.dec()


_share: contextvars.ContextVar[_Member | _Group | None] = contextvars.ContextVar(
    "shared subscription", default=None
)
"""The member or group whose operation runs in this task."""


def event_rows(info: Info, accepts: Accepts, after: int | None) -> AsyncIterator[OutboxEvent]:
    """A subscription resolver's rows: from its group where its operation is shared, else
    from the hub: those after ``after`` first (replayed), then live. For resolvers whose
    results depend on nothing of the caller's but what ``accepts`` lets through (its
    organizations) and its scopes: who the caller is does not separate groups."""
    share = _share.get()
    hub = info.context.services.hub
    if isinstance(share, _Group):
        return share.rows()
    if isinstance(share, _Member) and share.request.context is info.context:
        return share.join(info, hub, accepts, after)
    return hub.subscribe(accepts, after)


def shared_execution() -> bool:
    """Whether this is a group's own operation, which serves its members' (theirs are the
    ones to count)."""
    return isinstance(_share.get(), _Group)


class SharedSubscriptions:
    """``schema.stream`` with the event subscriptions' executions shared."""

    def __init__(self, schema: BaseSchema) -> None:
        self.schema = schema
        self._groups: dict[Key, _Group] = {}

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> AsyncGenerator[Any, None]:
        results = await self.schema.stream(
            query,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            operation_extensions=operation_extensions,
            allowed_operation_types=allowed_operation_types,
        )
        # A document without the word runs no subscription: it goes as it is.
        if not (isinstance(context_value, Context) and query and "subscription" in query):
            return results
        request = _Request(query, variable_values, context_value, operation_name)
        return _serve(_Member(request, self, OUTLET.get()), results)

    def group_for(self, request: _Request, info: Info, hub: EventHub, accepts: Accepts) -> _Group:
        key = _key(request, info, hub)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(key, request, hub.listen(accepts), self)
        return group

    def forget(self, group: _Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]


async def _serve(member: _Member, results: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    """The member's results: its own operation's, then (once handed over) the group's, then
    its own operation's last words."""
    context = contextvars.copy_context()
    context.run(_share.set, member)
    pump = asyncio.create_task(_pump(results, member.own), context=context)
    live: _Inbox | None = None
    try:
        while True:
            if live is not None:
                item = await live.get()
                if item is _DROPPED or item is _CLOSED:
                    if not member.ended.done():
                        member.ended.set_result(item)
                    live = None
                elif member.outlet is not None:
                    await member.outlet(cast(ExecutionResult, item))
                else:
                    yield item
                continue
            item = await member.own.get()
            if item is _END:
                return
            if item is _HANDOVER:
                live = member.live
            elif isinstance(item, _Failure):
                raise item.error
            else:
                yield item
    finally:
        member.leave()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


async def _pump(results: AsyncGenerator[Any, None], into: asyncio.Queue[object]) -> None:
    """A member's own operation, in a task of its own: its resolver waits there through
    the live phase while the member reads the group's results, and its hooks start and end
    in one context."""
    try:
        async with contextlib.aclosing(results):
            async for result in results:
                await into.put(result)
    except Exception as error:
        await into.put(_Failure(error))
    await into.put(_END)


def _key(request: _Request, info: Info, hub: EventHub) -> Key:
    """Everything that can change a member's results, but for where its replay starts.
    Not the request's extensions: they are the protocol's (GraphQL over SSE's operationId,
    a persisted query's hash), and no field of the schema reads them."""
    replay = _replay_variable(info.operation, info.field_name)
    variables = {k: v for k, v in (request.variables or {}).items() if k != replay}
    principal = request.context.principal
    return (
        id(hub),
        request.query,
        request.operation_name,
        json.dumps(variables, sort_keys=True),
        frozenset(principal.organizations),
        principal.all_organizations,
        frozenset(principal.scopes),
    )


def _replay_variable(operation: OperationDefinitionNode, field_name: str) -> str | None:
    """The variable the root field's ``after`` takes, if it takes one; None also where the
    field sits in a named fragment (then every variable is in the key)."""
    selections: list[SelectionSetNode] = [operation.selection_set]
    while selections:
        for selection in selections.pop().selections:
            if isinstance(selection, InlineFragmentNode):
                selections.append(selection.selection_set)
            elif isinstance(selection, FieldNode) and selection.name.value == field_name:
                for argument in selection.arguments or ():
                    if argument.name.value == REPLAY_ARGUMENT and isinstance(
                        argument.value, VariableNode
                    ):
                        return argument.value.name.value
    return None

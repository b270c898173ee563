"""Relay pieces shared by the domains: Node, global ids and their loaders, PageInfo,
page-size checks.

PageInfo is Strawberry's. Node, its global ids and the Edge/Connection types are ours:
``strawberry.relay.Node`` encodes ids differently (standard base64 with padding), so taking
it would change every id clients keep, and its Edge and Connection are bound to it.
"""

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import strawberry
from strawberry.relay import PageInfo

from graph.context import Info
from graph.errors import user_error

MAX_PAGE = 500
DEFAULT_PAGE = 50


@strawberry.interface(description="An object with a global id, resolvable by Query.node.")
class Node:
    id: strawberry.ID


def global_id(type_name: str, *parts: str) -> strawberry.ID:
    raw = ":".join((type_name, *parts)).encode()
    return strawberry.ID(base64.urlsafe_b64encode(raw).decode().rstrip("="))


def parse_global_id(value: str) -> tuple[str, list[str]]:
    """(type name, parts) of a global id; BAD_USER_INPUT for anything malformed."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise user_error(f"{value!r} is not a valid id.", "id") from None
    type_name, _, rest = raw.partition(":")
    if not type_name or not rest:
        raise user_error(f"{value!r} is not a valid id.", "id")
    return type_name, rest.split(":")


NodeLoader = Callable[[Info, list[str]], Awaitable[Node | None]]
"""Loads the node whose global id has these parts after its type name, or None."""

_loaders: dict[str, NodeLoader] = {}


def node_loader(type_name: str) -> Callable[[NodeLoader], NodeLoader]:
    """Registers how a domain loads its nodes of ``type_name``: for ``Query.node``, and
    for other domains that link to them without importing the domain that owns them."""

    def register(load: NodeLoader) -> NodeLoader:
        _loaders[type_name] = load
        return load

    return register


async def load_node(info: Info, type_name: str, parts: list[str]) -> Node | None:
    load = _loaders.get(type_name)
    return await load(info, parts) if load is not None else None


def page_size(first: int | None, last: int | None, default: int = DEFAULT_PAGE) -> int:
    """The page size asked for: ``first`` or ``last``, bounded; never both."""
    if first is not None and last is not None:
        raise user_error("Pass either first (with after) or last (with before), not both.")
    for name, value in (("first", first), ("last", last)):
        if value is not None and not 0 <= value <= MAX_PAGE:
            raise user_error(f"{name} must be between 0 and {MAX_PAGE}, not {value}.", name)
    size = first if first is not None else last
    return default if size is None else size


class _Edge(Protocol):
    @property
    def cursor(self) -> str: ...


def page_info(edges: Sequence[_Edge], *, has_next: bool, has_previous: bool) -> PageInfo:
    """The page's bounds: its first and last edges' cursors."""
    return PageInfo(
        has_next_page=has_next,
        has_previous_page=has_previous,
        start_cursor=edges[0].cursor if edges else None,
        end_cursor=edges[-1].cursor if edges else None,
    )

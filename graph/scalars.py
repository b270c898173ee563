"""Custom scalars."""

from typing import NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition

from graph.errors import user_error
from models.instants import InvalidInstant, format_api_instant, parse_instant

_EXAMPLE = "e.g. 2017-01-02T12:00:48.210Z"


def _parse(value: object) -> int:
    # A GraphQLError, so that graphql-core keeps our code when it reports the variable or
    # literal: the caller sent a value no instant has, BAD_USER_INPUT like every such input.
    if not isinstance(value, str):
        raise user_error(f"DateTime must be an ISO-8601 string ({_EXAMPLE}).")
    try:
        return parse_instant(value)
    except InvalidInstant:
        shown = value if len(value) <= 64 else f"{value[:64]}..."
        raise user_error(
            f"{shown!r} is not an ISO-8601 date-time ({_EXAMPLE}) with an offset of at "
            "most ±23:59, from 0001-01-01 to 9999-12-31 UTC."
        ) from None


DateTime = NewType("DateTime", int)
"""An instant in ticks (models.instants), shown as ISO-8601 text."""

SCALARS: dict[object, ScalarDefinition] = {
    DateTime: strawberry.scalar(
        name="DateTime",
        description=(
            "ISO-8601 instant, always UTC on output (e.g. 2017-01-02T12:00:48.210Z): "
            "milliseconds, or seven fractional digits where the upstream has them. Input "
            "accepts any offset up to ±23:59; without one, UTC; a bare date is its midnight UTC."
        ),
        serialize=format_api_instant,
        parse_value=_parse,
    )
}

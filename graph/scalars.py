"""Custom scalars."""

from typing import NewType

import strawberry

from models.instants import InvalidInstant, format_api_instant, parse_instant


def _parse(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO-8601 string, e.g. 2017-01-02T12:00:48.210Z")
    try:
        return parse_instant(value)
    except InvalidInstant:
        raise ValueError(
            f"{value!r} is not an ISO-8601 date-time (e.g. 2017-01-02T12:00:48.210Z)"
        ) from None


DateTime = NewType("DateTime", int)
"""An instant in ticks (models.instants), shown as ISO-8601 text."""

SCALARS = {
    DateTime: strawberry.scalar(
        name="DateTime",
        description=(
            "ISO-8601 instant, always UTC on output (e.g. 2017-01-02T12:00:48.210Z): "
            "milliseconds, or seven fractional digits where the upstream has them. Input "
            "accepts any offset; without one, UTC; a bare date is its midnight UTC."
        ),
        serialize=format_api_instant,
        parse_value=_parse,
    )
}

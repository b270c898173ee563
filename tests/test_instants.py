"""Instants keep the upstream's seven fractional digits both ways."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.instants import (
    InvalidInstant,
    format_api_instant,
    format_instant,
    from_datetime,
    parse_instant,
)

YEAR_1900 = parse_instant("1900-01-01")
YEAR_2200 = parse_instant("2200-01-01")


@given(st.integers(YEAR_1900, YEAR_2200))
def test_format_then_parse_is_exact(ticks):
    assert parse_instant(format_instant(ticks)) == ticks


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2017-01-02T12:00:48.21Z", "2017-01-02T12:00:48.21Z"),
        ("2017-01-02T12:00:48.2100000Z", "2017-01-02T12:00:48.21Z"),
        ("2017-01-02T12:00:48.1234567Z", "2017-01-02T12:00:48.1234567Z"),
        ("2017-01-02T12:00:48.123456789Z", "2017-01-02T12:00:48.1234567Z"),
        ("2017-01-02T13:00:48+01:00", "2017-01-02T12:00:48Z"),
        ("2017-01-02T11:30:48-00:30", "2017-01-02T12:00:48Z"),
        ("2017-01-02T12:00:48", "2017-01-02T12:00:48Z"),
        ("2017-01-31", "2017-01-31T00:00:00Z"),
    ],
)
def test_wcf_forms_are_read(text, expected):
    assert format_instant(parse_instant(text)) == expected


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2017-13-01", "2017-01-02T25:00:00Z", "2017-01-02T12:00", "2017-01-02 x"],
)
def test_other_text_is_rejected(text):
    with pytest.raises(InvalidInstant):
        parse_instant(text)


def test_datetimes_convert_to_ticks():
    moment = datetime(2017, 1, 2, 12, 0, 48, 123456, tzinfo=UTC)
    assert from_datetime(moment) == parse_instant("2017-01-02T12:00:48.123456Z")
    assert from_datetime(moment.replace(tzinfo=None)) == from_datetime(moment)


def test_the_api_form_has_milliseconds_or_all_seven_digits():
    assert format_api_instant(parse_instant("2017-01-02T12:00:48.21Z")) == (
        "2017-01-02T12:00:48.210Z"
    )
    assert format_api_instant(parse_instant("2017-01-02T12:00:48Z")) == ("2017-01-02T12:00:48.000Z")
    assert format_api_instant(parse_instant("2017-01-02T12:00:48.1234567Z")) == (
        "2017-01-02T12:00:48.1234567Z"
    )

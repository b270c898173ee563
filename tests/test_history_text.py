"""The text reader of history replies (soap.history_text) against the element walk.

Random events are written as WCF writes them, and in the other ways a well-formed reply
may say the same (whitespace, comments, CDATA, references, other prefixes, members left
out or written empty, other instant forms). Where the text reader answers, it answers
exactly what the walk does; on the shape WCF writes it always answers.
"""

from dataclasses import dataclass
from xml.sax.saxutils import escape

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from support import DATA

from models.events import ExtendedAttribute, ProvisioningEvent
from models.instants import format_instant
from soap import replies
from soap.contract import COMMON, DEVICE, SOAP_ENV, V2, XSI, soap_action
from soap.history_text import read_events

OPERATION = "GetDeviceProvisioningHistory"
ACTION = soap_action("IDeviceService", OPERATION)

# Characters XML 1.0 allows in text (no CR: a parser rewrites it), "<", ">" and "&"
# among them: written escaped, they come back as references.
TEXT = st.text(
    st.characters(
        codec="utf-8",
        exclude_categories=("Cs", "Cc"),
        include_characters="\t\n<>&\"'",
        exclude_characters="\ufffe\uffff",
    ),
    max_size=12,
)
OPTIONAL = st.none() | TEXT
INSTANT = st.integers(0, 4_000_000_000 * 10_000_000)
ATTRIBUTE = st.builds(ExtendedAttribute, TEXT, OPTIONAL)
EVENT = st.builds(
    ProvisioningEvent,
    INSTANT,
    TEXT,
    OPTIONAL,
    TEXT,
    OPTIONAL,
    OPTIONAL,
    OPTIONAL,
    st.lists(ATTRIBUTE, max_size=3).map(tuple),
)


@dataclass(frozen=True)
class Style:
    """How a reply writes the same events; the defaults are WCF's own."""

    events_prefix: str = "a"
    nil_prefix: str = "i"
    attribute_prefix: str = "a"
    nil_members: bool = True
    empty_self_closing: bool = False
    spaces: bool = False
    comment: bool = False
    cdata: bool = False
    offset_instants: bool = False
    references: bool = False

    @property
    def wcf(self) -> bool:
        return not (self.spaces or self.comment or self.cdata or self.offset_instants)


STYLE = st.builds(
    Style,
    events_prefix=st.sampled_from(["a", "d", "x.y", ""]),
    nil_prefix=st.sampled_from(["i", "xsi"]),
    attribute_prefix=st.sampled_from(["a", "b", ""]),
    nil_members=st.booleans(),
    empty_self_closing=st.booleans(),
    spaces=st.booleans(),
    comment=st.booleans(),
    cdata=st.booleans(),
    offset_instants=st.booleans(),
    references=st.booleans(),
)


def _text(value: str, style: Style) -> str:
    if style.cdata and value and "]]>" not in value:
        return f"<![CDATA[{value}]]>"
    written = escape(value)
    # A character reference wherever an "e" is: the same text, read back.
    return written.replace("e", "&#101;") if style.references else written


def _qualified(prefix: str, tag: str) -> str:
    return f"{prefix}:{tag}" if prefix else tag


def _member(tag: str, value: str | None, style: Style, prefix: str) -> str:
    name = _qualified(prefix, tag)
    if value is None:
        return f'<{name} {style.nil_prefix}:nil="true"/>' if style.nil_members else ""
    if not value and style.empty_self_closing:
        return f"<{name}/>"
    return f"<{name}>{_text(value, style)}</{name}>"


def _instant(ticks: int, style: Style) -> str:
    if not style.offset_instants:
        return format_instant(ticks)
    return format_instant(ticks + 36_000_000_000).removesuffix("Z") + "+01:00"


def _attributes(event: ProvisioningEvent, style: Style) -> str:
    p, q = style.events_prefix, style.attribute_prefix
    if not event.extended_attributes:
        return _member("ExtendedAttributes", None, style, p)
    item = _qualified(q, "ExtendedAttributesObj")
    inner = "".join(
        f"<{item}>{_member('Key', a.key, style, q)}{_member('Value', a.value, style, q)}</{item}>"
        for a in event.extended_attributes
    )
    return f"<{_qualified(p, 'ExtendedAttributes')}>{inner}</{_qualified(p, 'ExtendedAttributes')}>"


def reply(events: list[ProvisioningEvent], style: Style) -> bytes:
    """A GetDeviceProvisioningHistory reply holding ``events``, written in ``style``."""
    p = style.events_prefix
    gap = "\n  " if style.spaces else ""
    written = []
    for event in events:
        members = [
            _member("OccurredAt", _instant(event.occurred_at, style), style, p),
            _member("Status", event.status, style, p),
            _member("EventBy", event.event_by, style, p),
            _member("EventType", event.event_type, style, p),
            _member("ServicePlan", event.service_plan, style, p),
            _member("Mdn", event.mdn, style, p),
            _member("Msisdn", event.msisdn, style, p),
            _attributes(event, style),
        ]
        if style.comment:
            members.insert(1, "<!-- a comment -->")
        tag = _qualified(p, "ProvisioningEvent")
        written.append(f"<{tag}>{gap.join(members)}</{tag}>")
    history, complete = _qualified(p, "ProvisioningHistory"), _qualified(p, "IsComplete")
    events_namespace = f'xmlns:{p}="{DEVICE}"' if p else f'xmlns="{DEVICE}"'
    if p != "a":
        events_namespace += f' xmlns:a="{DEVICE}"'
    return (
        f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body>'
        f'<v:GetDeviceProvisioningHistoryResponse xmlns:v="{V2}"><v:Output '
        f'{events_namespace} xmlns:b="{COMMON}" xmlns:{style.nil_prefix}="{XSI}">'
        f"<{history}>{gap.join(written)}</{history}><{complete}>true</{complete}>"
        "</v:Output></v:GetDeviceProvisioningHistoryResponse></s:Body></s:Envelope>"
    ).encode()


def both(body: bytes) -> tuple[list[ProvisioningEvent] | None, list[ProvisioningEvent]]:
    """What the text reader and the element walk read from one reply."""
    parsed = replies.history_reply(OPERATION, 200, body)
    assert parsed.history is not None
    return read_events(body, parsed.history), replies.events_by_element(parsed.history, OPERATION)


@settings(max_examples=300)
@given(st.lists(EVENT, max_size=6), STYLE)
def test_where_the_text_reader_answers_it_answers_what_the_walk_does(events, style):
    fast, walk = both(reply(events, style))

    assert fast is None or fast == walk
    window = replies.history_window(OPERATION, 200, reply(events, style))
    assert list(window.events) == walk


@settings(max_examples=200)
@given(
    st.lists(EVENT, max_size=6),
    st.builds(
        Style,
        events_prefix=st.sampled_from(["a", "d", ""]),
        nil_prefix=st.sampled_from(["i", "xsi"]),
        attribute_prefix=st.sampled_from(["a", "b", ""]),
        nil_members=st.booleans(),
        empty_self_closing=st.booleans(),
    ),
)
def test_the_shape_wcf_writes_is_read_from_the_text(events, style):
    plain = [e for e in events if not any("&" in t or "<" in t or ">" in t for t in texts(e))]

    fast, walk = both(reply(plain, style))

    assert fast == walk


def texts(event: ProvisioningEvent) -> list[str]:
    values = [event.status, event.event_by, event.event_type, event.service_plan]
    values += [event.mdn, event.msisdn]
    for attribute in event.extended_attributes:
        values += [attribute.key, attribute.value]
    return [value for value in values if value]


async def test_a_reply_of_the_simulator_is_read_from_its_text(upstream):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{upstream.base_url}/DeviceService.svc",
            content=(DATA / "seed_history_request.xml").read_bytes(),
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{ACTION}"'},
        )

    fast, walk = both(response.content)

    assert walk
    assert fast == walk

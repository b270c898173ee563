"""The text reader of history replies (soap.history_text) against the element walk.

Random events are written as WCF writes them, and in the other ways a well-formed reply
may say the same (whitespace, comments, CDATA, references, other prefixes, members left
out or written empty, other instant forms). Where the text reader answers, it answers
exactly what the walk does; on the shape WCF writes it always answers.
"""

from dataclasses import dataclass
from xml.sax.saxutils import escape

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import DATA

from models.events import ExtendedAttribute, ProvisioningEvent
from models.instants import format_instant
from soap import replies
from soap.contract import COMMON, DEVICE, SOAP_ENV, V2, XSI, soap_action
from soap.errors import UpstreamBadReply, UpstreamError

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


EVENT_AT_ZERO = ProvisioningEvent(0, "Success", None, "Activation", None, None, None, ())
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
    text = replies.text_reply(OPERATION, 200, body)
    whole = replies.history_reply(OPERATION, 200, body)
    assert whole.history is not None
    fast = replies.text_events(text) if text is not None else None
    if text is not None and fast is not None:
        assert text.head == whole.head
    events = list(fast.events) if fast is not None else None
    return events, replies.events_by_element(whole.history, OPERATION)


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


# What a change may put into a reply: characters XML refuses or reads as something else,
# and pieces of markup, well-formed where they land or not.
PIECES = st.sampled_from(
    [
        "\x00", "\x0b", "\x1f", "\r", "\t", "&", "&amp;", "&#101;", "]]>", "]]", ">", "<",
        "</", "/>", "\ufffe", "\uffff", "\U0001fffe", "\u00e9", ":", "a:", "b:", "c:", "i:",
        "xml:", "<c:Key>", "</a:Key>", "<a:Key/>", "<b:Value/>", ' i:nil="true"', " ", "\n",
        "<!-- -->", "<![CDATA[x]]>", "<?pi x?>", "ProvisioningHistory",
        "<a:ProvisioningHistory>", "</a:ProvisioningHistory>", "<a:ProvisioningEvent>",
        "<a:ExtendedAttributes>", "x", "1", "Z", ".5",
    ]
)  # fmt: skip


def read(body: bytes) -> list[ProvisioningEvent] | type[Exception]:
    try:
        return list(replies.history_window(OPERATION, 200, body).events)
    except UpstreamError as error:
        return type(error)


def read_whole(body: bytes) -> list[ProvisioningEvent] | type[Exception]:
    try:
        return list(
            replies.history_events(OPERATION, replies.history_reply(OPERATION, 200, body)).events
        )
    except UpstreamError as error:
        return type(error)


@settings(max_examples=600)
@given(
    st.lists(EVENT, min_size=1, max_size=4),
    st.builds(Style, attribute_prefix=st.sampled_from(["a", "b", ""])),
    st.data(),
)
def test_a_reply_changed_anywhere_reads_as_lxml_reads_it_or_fails_as_it_does(events, style, data):
    plain = [e for e in events if not any("&" in t or "<" in t or ">" in t for t in texts(e))]
    body = reply(plain or [EVENT_AT_ZERO], style).decode()
    # Mostly in the history, where the text reader reads.
    start, end = body.index("<a:ProvisioningHistory>"), body.index("<a:IsComplete>")
    at = data.draw(st.integers(start, end) | st.integers(0, len(body)))
    change = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    piece = data.draw(PIECES) if change != "delete" else ""
    cut = data.draw(st.integers(1, 12)) if change != "insert" else 0
    changed = (body[:at] + piece + body[at + cut :]).encode("utf-8", "surrogatepass")

    assert read(changed) == read_whole(changed)


WITH_ATTRIBUTES = ProvisioningEvent(
    0, "Success", "me", "Activation", None, "1", None,
    (ExtendedAttribute("K", "V"), ExtendedAttribute("E", None)),
)  # fmt: skip
REFUSED = {
    "a character XML does not allow": ("Success", "Suc\x00cess"),
    "]]> in text": ("Success", "Succ]]>ess"),
    "U+FFFE": ("Success", "Succ\ufffeess"),
    "U+FFFF": ("Success", "Succ\uffffess"),
    "an undeclared prefix on a Key": ("<b:Key>K</b:Key>", "<c:Key>K</c:Key>"),
    "an undeclared prefix on an item": ("b:ExtendedAttributesObj", "c:ExtendedAttributesObj"),
    "an undeclared prefix on a nil Value": ('<b:Value i:nil="true"/>', '<c:Value i:nil="true"/>'),
    "a Key closed by another prefix": ("<b:Key>K</b:Key>", "<b:Key>K</a:Key>"),
    "a Value closed by another prefix": ("<b:Value>V</b:Value>", "<b:Value>V</a:Value>"),
    "a day no calendar has": ("1970-01-01T", "1970-02-30T"),
    "an item closed by another prefix": (
        "<b:Value>V</b:Value></b:ExtendedAttributesObj>",
        "<b:Value>V</b:Value></a:ExtendedAttributesObj>",
    ),
}
ACCEPTED = {
    "a nested history": (
        "<a:Mdn>1</a:Mdn>",
        "<a:Mdn>1</a:Mdn><a:ProvisioningHistory></a:ProvisioningHistory>",
    ),
    "a CR": ("Success", "Succ\r\ness"),
    "a reference": ("Success", "Succ&amp;ess"),
    "a comment before the history": (
        "<a:ProvisioningHistory>",
        "<!-- c --><a:ProvisioningHistory>",
    ),
    "a history's tag in a comment": (
        "<a:ProvisioningHistory>",
        "<!-- <a:ProvisioningHistory> --><a:ProvisioningHistory>",
    ),
    "a history's tag in a processing instruction": (
        "<a:ProvisioningHistory>",
        "<?pi <a:ProvisioningHistory> ?><a:ProvisioningHistory>",
    ),
    "a prefix declared in the history": (
        "<a:ProvisioningHistory>",
        f'<a:ProvisioningHistory xmlns:c="{COMMON}">',
    ),
    "an unusual declared prefix": ("b:", "xml:"),
}


def changed(old: str, new: str) -> bytes:
    body = reply([WITH_ATTRIBUTES, WITH_ATTRIBUTES], Style(attribute_prefix="b")).decode()
    assert old in body
    return body.replace(old, new).encode()


@pytest.mark.parametrize("change", REFUSED.values(), ids=REFUSED.keys())
def test_what_lxml_refuses_the_text_reader_refuses(change):
    body = changed(*change)

    assert read_whole(body) is UpstreamBadReply
    assert read(body) is UpstreamBadReply


@pytest.mark.parametrize("change", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_what_lxml_reads_outside_the_shape_reads_the_same(change):
    body = changed(*change)

    assert isinstance(read_whole(body), list)
    assert read(body) == read_whole(body)


def test_a_reply_declared_in_another_encoding_is_read_as_declared():
    body = b'<?xml version="1.0" encoding="ISO-8859-1"?>' + changed("Success", "Succ\u00e9ss")
    latin = body.decode().encode("latin-1")

    assert read(latin) == read_whole(latin)
    assert read(latin)[0].status == "Succ\u00e9ss"


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

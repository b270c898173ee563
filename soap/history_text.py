"""A history reply's events read from its text, where the reply has the shape WCF writes.

Walking lxml's elements costs a Python object and a string for every tag and text: about
two thirds of reading a 500-event reply. WCF's DataContractSerializer writes each event
the same way, with no whitespace, comments or CDATA, so one regular expression per event
reads the same fields in C. It is only ever used on a reply lxml has already parsed (so
the text is well-formed XML), and only where the text cannot mean anything else:
anything outside the shape (other prefixes, attributes, whitespace, comments, a DTD,
unknown elements, carriage returns) gives None, and ``soap.replies`` walks the elements
as before. tests/test_history_text.py holds the two readers to the same results.
"""

import re
from functools import lru_cache

from lxml import etree

from models.events import ExtendedAttribute, ProvisioningEvent
from models.instants import CANONICAL_INSTANT, InvalidInstant, canonical_ticks
from soap.contract import XSI

_FIELDS = ("Status", "EventBy", "EventType", "ServicePlan", "Mdn", "Msisdn")
# Extended attributes are matched by local name (soap.replies): any prefix, or none.
_ANY = r"(?:[A-Za-z_][\w.\-]*:)?"


def _attribute(nil: str) -> str:
    key = rf"(?:<{_ANY}Key>([^<]*)</{_ANY}Key>|<{_ANY}Key/>)"
    value = (
        rf"(?:<{_ANY}Value>([^<]*)</{_ANY}Value>|<{_ANY}Value(/)>"
        rf"|<{_ANY}Value {nil}=\"(?:true|1)\"/>)?"
    )
    return rf"<{_ANY}ExtendedAttributesObj>{key}{value}</{_ANY}ExtendedAttributesObj>"


@lru_cache(maxsize=8)
def _patterns(events: str, nil: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The event and attribute patterns for the prefixes a reply binds (``events``: the
    history's namespace, "" for the default one; ``nil``: the qualified xsi:nil; both
    escaped for a pattern)."""
    occurred_at = rf"<{events}OccurredAt>{CANONICAL_INSTANT}</{events}OccurredAt>"
    # A member WCF leaves out (EmitDefaultValue=false) reads as an empty one.
    fields = "".join(
        rf"(?:<{events}{name}>([^<]*)</{events}{name}>|<{events}{name}(?: {nil}=\"true\")?/>)?"
        for name in _FIELDS
    )
    attribute = _attribute(nil)
    unnamed = re.sub(r"\((?!\?)", "(?:", attribute)
    extended = (
        rf"(?:<{_ANY}ExtendedAttributes(?: {nil}=\"true\")?/>"
        rf"|<{_ANY}ExtendedAttributes>((?:{unnamed})*)</{_ANY}ExtendedAttributes>)?"
    )
    event = (
        rf"<{events}ProvisioningEvent>{occurred_at}{fields}{extended}</{events}ProvisioningEvent>"
    )
    return re.compile(event, re.ASCII), re.compile(attribute, re.ASCII)


def _attribute_values(
    key: str | None, value: str | None, empty: str | None
) -> tuple[str, str | None]:
    """As ``soap.replies`` reads them: an empty Key or Value is "", a nil Value None."""
    return key or "", value if value is not None else ("" if empty else None)


def read_events(body: bytes, history: etree._Element) -> list[ProvisioningEvent] | None:
    """The events of ``history`` (the parsed reply's ProvisioningHistory element), read
    from the reply's text; None where the text is not in the shape."""
    if (history.getroottree().docinfo.encoding or "").upper() != "UTF-8":
        return None
    # With no comment, CDATA section, DTD or processing instruction, every "<" starts a
    # tag, so the history's open tag found in the text is the element lxml found. With
    # no "&" no text holds a reference, and with no CR no line end was rewritten.
    # (A rare byte is looked for first: a search for "<!" stops at every "<".)
    if (b"!" in body and b"<!" in body) or (b"?" in body and body.find(b"<?", 1) >= 0):
        return None
    if b"&" in body or b"\r" in body:
        return None
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    nil = next((p for p, uri in history.nsmap.items() if uri == XSI and p), None)
    if nil is None:
        return None
    events = f"{history.prefix}:" if history.prefix else ""
    opening, closing = f"<{events}ProvisioningHistory>", f"</{events}ProvisioningHistory>"
    position = text.find(opening)
    if position < 0 or text.count(f"<{events}ProvisioningHistory") != 1:
        return None
    position += len(opening)
    event_pattern, attribute_pattern = _patterns(re.escape(events), re.escape(f"{nil}:nil"))
    make = tuple.__new__
    read: list[ProvisioningEvent] = []
    for match in event_pattern.finditer(text, position):
        if match.start() != position:
            return None
        position = match.end()
        # The instant's five parts, the six text members, the extended attributes.
        groups = match.groups()
        try:
            occurred_at = canonical_ticks(*groups[:5])
        except InvalidInstant:
            return None
        attributes: tuple[ExtendedAttribute, ...] = ()
        if groups[11]:
            attributes = tuple(
                make(ExtendedAttribute, _attribute_values(*item.groups()))
                for item in attribute_pattern.finditer(groups[11])
            )
        event = (
            occurred_at,
            groups[5] or "",
            groups[6] or None,
            groups[7] or "",
            groups[8] or None,
            groups[9] or None,
            groups[10] or None,
            attributes,
        )
        read.append(make(ProvisioningEvent, event))
    if not text.startswith(closing, position):
        return None
    return read

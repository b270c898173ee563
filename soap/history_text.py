"""A history reply's events read from its text, where the reply has the shape WCF writes.

lxml's parse of a 500-event reply and the walk of its elements cost a Python object and a
string for every tag and text; the events are nearly all of a reply. WCF's
DataContractSerializer writes each event the same way, with no whitespace, comments or
CDATA, so the reply is cut in two: lxml parses the envelope without the history's
content (a few hundred bytes: faults, IsComplete, the namespaces in scope), and one
regular expression per event reads the content in C.

The content is only read so where it cannot mean anything else, and where lxml would
accept it: anything outside the shape (other prefixes, attributes, whitespace, unknown
elements, other instant forms) and anything lxml refuses (characters XML does not allow,
"]]>", undeclared prefixes, mismatched tags) gives None, and ``soap.replies`` parses the
reply whole, which reads it element by element or says what is wrong with it.
tests/test_history_text.py holds the two readers to the same results and refusals.
"""

import re
from functools import lru_cache
from typing import Any, NamedTuple

from lxml import etree

from models.events import ExtendedAttribute, ProvisioningEvent
from models.instants import CANONICAL_INSTANT, InvalidInstant, canonical_ticks
from soap.contract import XSI

_FIELDS = ("Status", "EventBy", "EventType", "ServicePlan", "Mdn", "Msisdn")
_PREFIX = r"[A-Za-z_][\w.\-]*+"
"""A namespace prefix (with ``re.ASCII``)."""
# An attribute's elements are matched by local name (soap.replies): any prefix, or none,
# captured with its colon ("" for none) to check that it is declared.
_ANY = rf"((?:{_PREFIX}:)?)"
_HISTORY_TAG = re.compile(rf"<(?:({_PREFIX}):)?ProvisioningHistory>".encode(), re.ASCII)
_CANONICAL = re.compile(CANONICAL_INSTANT, re.ASCII)
# Characters XML 1.0 does not allow, and "&" and CR, which lxml would read as something
# else (a reference, a line end): where one is in the content, lxml reads the reply.
_REFUSED = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), ord("&"), ord("\r")])
_LARGEST = 10_000_000
"""libxml2's largest text without huge_tree: a longer reply is left to lxml to judge."""


class Split(NamedTuple):
    """A history reply cut in two: its envelope, and its history's content as text."""

    envelope: bytes
    """The reply with its ProvisioningHistory element left empty."""
    events: str
    prefix: str
    """The history's prefix as written, "" for none."""


def split(body: bytes) -> Split | None:
    """``body`` cut around its ProvisioningHistory element's content; None where that
    element cannot be found from the text alone, or its content holds what lxml would
    refuse or read otherwise."""
    if len(body) > _LARGEST:
        return None
    found = _HISTORY_TAG.search(body)
    if found is None:
        return None
    prefix = found[1] or b""
    end = body.find(b"</%s%sProvisioningHistory>" % (prefix, b":" if prefix else b""), found.end())
    if end < 0:
        return None
    envelope = body[: found.end()] + body[end:]
    # With no comment, CDATA section, DTD or processing instruction, every "<" starts a
    # tag; with the two tags the only ones of their name left in the envelope (the
    # operation's response element aside), the content cut out is that element's: a
    # nested one would have left its parent's closing tag behind.
    names = envelope.count(b"ProvisioningHistory") - envelope.count(b"ProvisioningHistoryResponse")
    if names != 2 or b"<!" in envelope or envelope.find(b"<?", 1) >= 0:
        return None
    content = body[found.end() : end]
    if len(content.translate(None, _REFUSED)) != len(content):
        return None
    if b"]" in content and b"]]>" in content:  # a rare byte looked for first: faster
        return None
    if not content.isascii() and (b"\xef\xbf\xbe" in content or b"\xef\xbf\xbf" in content):
        return None  # U+FFFE, U+FFFF
    try:
        events = content.decode()
    except UnicodeDecodeError:
        return None
    return Split(envelope, events, prefix.decode())


def first_and_last(events: str, prefix: str) -> tuple[int | None, int | None]:
    """The instants of the first and last events of ``events``, from their text: what a
    next call needs, before the events are read (None where one is not in the shape)."""
    p = f"{prefix}:" if prefix else ""
    opener, closing = f"<{p}ProvisioningEvent><{p}OccurredAt>", f"</{p}OccurredAt>"

    def instant(at: int) -> int | None:
        match = _CANONICAL.match(events, at + len(opener))
        if at < 0 or match is None or not events.startswith(closing, match.end()):
            return None
        try:
            return canonical_ticks(*match.groups())
        except InvalidInstant:  # such as February 30th
            return None

    if not events.startswith(opener):
        return None, None
    return instant(0), instant(events.rfind(opener))


@lru_cache(maxsize=8)
def _patterns(events: str, nil: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The event and attribute patterns for the prefixes a reply binds (``events``: the
    history's prefix and colon, "" for the default namespace; ``nil``: the qualified
    xsi:nil; both escaped for a pattern)."""
    occurred_at = rf"<{events}OccurredAt>{CANONICAL_INSTANT}</{events}OccurredAt>"
    # A member WCF leaves out (EmitDefaultValue=false) reads as an empty one.
    fields = "".join(
        rf"(?:<{events}{name}>([^<]*)</{events}{name}>|<{events}{name}(?: {nil}=\"true\")?/>)?"
        for name in _FIELDS
    )
    extended = rf"{events}ExtendedAttributes"
    attributes = (
        rf"(?:<{extended}(?: {nil}=\"true\")?/>"
        rf"|<{extended}>((?:[^<]++|<(?!/{extended}>))*+)</{extended}>)?"
    )
    event = (
        rf"<{events}ProvisioningEvent>{occurred_at}{fields}{attributes}</{events}ProvisioningEvent>"
    )
    # Groups: the item's prefix; Key's prefix, text, or the empty Key's prefix; Value's
    # prefix, text, or the empty Value's prefix, or the nil Value's prefix.
    key = rf"(?:<{_ANY}Key>([^<]*)</\2Key>|<{_ANY}Key/>)"
    value = (
        rf"(?:<{_ANY}Value>([^<]*)</\5Value>|<{_ANY}Value/>"
        rf"|<{_ANY}Value {nil}=\"(?:true|1)\"/>)?"
    )
    attribute = rf"<{_ANY}ExtendedAttributesObj>{key}{value}</\1ExtendedAttributesObj>"
    return re.compile(event, re.ASCII), re.compile(attribute, re.ASCII)


def _run(pattern: re.Pattern[str], text: str) -> list[tuple[str | Any, ...]] | None:
    """The groups of the matches of ``pattern`` that make up ``text`` end to end; None
    where they do not."""
    groups = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() != position:
            return None
        position = match.end()
        groups.append(match.groups())
    return groups if position == len(text) else None


def _attributes(
    text: str, pattern: re.Pattern[str], declared: frozenset[str | None]
) -> tuple[ExtendedAttribute, ...] | None:
    """An ExtendedAttributes element's content read, as ``soap.replies`` reads it (an
    empty Key or Value is "", a nil or absent Value None); None where it is not a run of
    ExtendedAttributesObj elements, or names a prefix nothing declares."""
    items = _run(pattern, text)
    if items is None:
        return None
    read: list[ExtendedAttribute] = []
    for item, key_prefix, key, empty_key, value_prefix, value, empty, nil in items:
        if not {item, key_prefix, empty_key, value_prefix, empty, nil} <= declared:
            return None
        if value_prefix is None:
            value = "" if empty is not None else None
        read.append(tuple.__new__(ExtendedAttribute, (key or "", value)))
    return tuple(read)


def read_events(events: str, history: etree._Element) -> list[ProvisioningEvent] | None:
    """The events of a split reply (``events``: its history's content; ``history``: the
    element as lxml parsed the envelope, which says what each prefix means); None where
    the text is not in the shape."""
    nsmap = history.nsmap
    nil = next((p for p, uri in nsmap.items() if uri == XSI and p), None)
    if nil is None:
        return None
    declared = frozenset([None, "", *(f"{p}:" for p in nsmap if p)])
    prefix = f"{history.prefix}:" if history.prefix else ""
    event_pattern, attribute_pattern = _patterns(re.escape(prefix), re.escape(f"{nil}:nil"))
    matched = _run(event_pattern, events)
    if matched is None:
        return None
    make = tuple.__new__
    read: list[ProvisioningEvent] = []
    # The instant's five parts, the six text members, the extended attributes' content.
    for groups in matched:
        try:
            occurred_at = canonical_ticks(*groups[:5])
        except InvalidInstant:
            return None
        attributes: tuple[ExtendedAttribute, ...] | None = ()
        if groups[11]:
            attributes = _attributes(groups[11], attribute_pattern, declared)
            if attributes is None:
                return None
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
    return read


# Compiled as the service starts, for the prefixes WCF writes, rather than in a
# client's first read.
_patterns(re.escape("a:"), re.escape("i:nil"))

"""Reading UWS replies straight from lxml into the project's records.

zeep's own reply parsing costs about 11x a bare lxml parse on a 500-event reply
(docs/ARCHITECTURE.md). The client lets zeep build and send requests, and reads replies here.
"""

from typing import Any, NamedTuple

from lxml import etree

from models.devices import DeviceIdentifier, DeviceListPage, DeviceRecord
from models.events import ExtendedAttribute, HistoryWindow, ProvisioningEvent
from models.instants import InvalidInstant, parse_instant
from soap import history_text
from soap.contract import COMMON, DEVICE, SESSION, SOAP_ENV, V2, XSI, strip_service_prefix
from soap.errors import UpstreamBadReply, UpstreamFault, UpstreamUnavailable

# Untrusted bytes: no entity expansion, no network, no unbounded trees.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)

_BODY = f"{{{SOAP_ENV}}}Body"
_FAULT = f"{{{SOAP_ENV}}}Fault"
_OUTPUT = f"{{{V2}}}Output"

_HISTORY = f"{{{DEVICE}}}ProvisioningHistory"
_EVENT = f"{{{DEVICE}}}ProvisioningEvent"
_IS_COMPLETE = f"{{{DEVICE}}}IsComplete"
_OCCURRED_AT = f"{{{DEVICE}}}OccurredAt"
_EXTENDED = f"{{{DEVICE}}}ExtendedAttributes"
# An extended attribute's elements are matched by local name: WCF puts the members of a
# data contract in the namespace it is declared in, Common for ExtendedAttributesObj, so
# the same reply may carry them in either namespace.
_ATTRIBUTE, _KEY, _VALUE = "ExtendedAttributesObj", "Key", "Value"
_NIL = f"{{{XSI}}}nil"
_MEMBERS: dict[object, str] = {
    f"{namespace}{name}": name
    for namespace in (f"{{{DEVICE}}}", f"{{{COMMON}}}", "")
    for name in (_KEY, _VALUE)
}
"""Attribute members' tags in the namespaces they come in, to skip reading local names."""
_EVENT_FIELDS: dict[object, int] = {
    f"{{{DEVICE}}}{name}": index
    for index, name in enumerate(
        ("OccurredAt", "Status", "EventBy", "EventType", "ServicePlan", "Mdn", "Msisdn")
    )
}
_DEVICE_INFO_PATH = f"{{{DEVICE}}}Devices/{{{DEVICE}}}DeviceInformation"
_IDENTIFIER_PATH = f"{{{DEVICE}}}DeviceIdentifiers/{{{COMMON}}}DeviceIdentifier"
_KIND = f"{{{COMMON}}}Kind"
_IDENTIFIER = f"{{{COMMON}}}Identifier"


def read_output(operation: str, status_code: int, body: bytes) -> etree._Element:
    """The Output element of a successful reply; anything else raises a typed error."""
    if not body.strip():
        if status_code >= 400:
            raise UpstreamUnavailable(operation, f"HTTP {status_code}", status_code)
        raise UpstreamBadReply(operation, f"empty reply (HTTP {status_code})")
    try:
        envelope = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        if status_code >= 400:
            raise UpstreamUnavailable(operation, f"HTTP {status_code}", status_code) from None
        raise UpstreamBadReply(operation, "reply is not well-formed XML") from None
    payload = envelope.find(_BODY)
    if payload is None or len(payload) == 0:
        if status_code >= 400:
            raise UpstreamUnavailable(operation, f"HTTP {status_code}", status_code)
        raise UpstreamBadReply(operation, "reply is not a SOAP envelope")
    fault = payload.find(_FAULT)
    if fault is not None:
        raise _fault(operation, fault)
    if status_code >= 400:
        raise UpstreamUnavailable(operation, f"HTTP {status_code}", status_code)
    output = payload[0].find(_OUTPUT)
    if output is None:
        raise UpstreamBadReply(operation, "reply has no Output element")
    return output


def _fault(operation: str, fault: etree._Element) -> UpstreamFault:
    code = (fault.findtext("faultcode") or "").strip()
    # A QName such as "s:Client" names no UWS code; the detail may carry one then.
    if ":" in code:
        code = (fault.findtext("detail//ErrorCode") or code).strip()
    message = (fault.findtext("faultstring") or "").strip()
    return UpstreamFault(operation, strip_service_prefix(code), message)


def _text(element: etree._Element, tag: str, operation: str) -> str:
    value = element.findtext(tag)
    if value is None:
        raise UpstreamBadReply(operation, f"reply lacks {etree.QName(tag).localname}")
    return value


def _boolean(text: str, operation: str) -> bool:
    value = text.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise UpstreamBadReply(operation, f"not an xs:boolean: {value!r}")


def _local(element: etree._Element) -> str:
    tag = element.tag
    # lxml gives every parsed element a str tag; the stubs also allow what code may assign.
    assert isinstance(tag, str)
    return tag[tag.find("}") + 1 :]


def _is_extended(element: etree._Element) -> bool:
    tag = element.tag
    # A comment or a processing instruction has a function for its tag.
    return isinstance(tag, str) and tag[tag.find("}") + 1 :] == "ExtendedAttributes"


def _attribute_text(element: etree._Element, operation: str) -> str | None:
    """An attribute member's text: None only where it is i:nil."""
    if element.get(_NIL) in ("true", "1"):
        return None
    if len(element):
        raise UpstreamBadReply(operation, f"extended attribute {_local(element)} is not text")
    return element.text or ""


def _attributes(container: etree._Element | None, operation: str) -> tuple[ExtendedAttribute, ...]:
    """Every attribute of an ExtendedAttributes element, or UpstreamBadReply: one that
    cannot be read is never made an empty attribute."""
    # Child loops rather than findtext(): lxml's find* run its Python path engine per call.
    if container is None or not len(container):  # absent, or i:nil as most are
        return ()
    attributes = []
    for item in container.iterchildren(etree.Element):
        if _local(item) != _ATTRIBUTE:
            raise UpstreamBadReply(operation, f"unexpected {_local(item)} in ExtendedAttributes")
        key = value = None
        has_key = False
        for child in item.iterchildren(etree.Element):
            name = _MEMBERS.get(child.tag) or _local(child)
            if name == _KEY:
                key, has_key = _attribute_text(child, operation), True
            elif name == _VALUE:
                value = _attribute_text(child, operation)
        if key is None:
            problem = "a nil Key" if has_key else "no Key"
            raise UpstreamBadReply(operation, f"extended attribute with {problem}")
        attributes.append(tuple.__new__(ExtendedAttribute, (key, value)))
    return tuple(attributes)


def events_by_element(history: etree._Element, operation: str) -> list[ProvisioningEvent]:
    """A ProvisioningHistory element's events, read element by element: any reply lxml
    can parse, and the one that says what is wrong with a bad one."""
    # tuple.__new__ builds the record without NamedTuple's Python-level __new__.
    fields, is_extended, make = _EVENT_FIELDS, _is_extended, tuple.__new__
    events = []
    for element in history.iterchildren(_EVENT):
        # OccurredAt, Status, EventBy, EventType, ServicePlan, Mdn, Msisdn, attributes
        values: list[Any] = [None, None, None, None, None, None, None, ()]
        for child in element:
            tag = child.tag
            index = fields.get(tag)
            if index is not None:
                values[index] = child.text
            elif tag == _EXTENDED:
                if len(child):  # most are i:nil
                    values[7] = _attributes(child, operation)
            elif is_extended(child):
                values[7] = _attributes(child, operation)
        try:
            values[0] = parse_instant(values[0])
        except (InvalidInstant, TypeError):
            raise UpstreamBadReply(operation, f"bad OccurredAt {values[0]!r}") from None
        if values[1] is None:
            values[1] = ""
        if values[3] is None:
            values[3] = ""
        events.append(make(ProvisioningEvent, values))
    return events


class HistoryHead(NamedTuple):
    """What a history reply says before its events are read: whether it is complete, and
    the instants of its first and last events (None where there are none, or where one
    cannot be read: reading the events says why)."""

    is_complete: bool
    first_at: int | None
    last_at: int | None


def _occurred_at(event: etree._Element | None) -> int | None:
    text = event.findtext(_OCCURRED_AT) if event is not None else None
    try:
        return parse_instant(text) if text is not None else None
    except InvalidInstant:
        return None


class HistoryReply(NamedTuple):
    """A history reply parsed whole, its head read, its events not yet."""

    head: HistoryHead
    history: etree._Element | None


class TextReply(NamedTuple):
    """A history reply whose envelope is parsed and whose events are still text
    (``soap.history_text``)."""

    head: HistoryHead
    """Its first and last instants read from the text: right wherever its events are
    in the shape (else the reply is parsed whole, and only a read ahead may be wasted)."""
    history: etree._Element
    """The ProvisioningHistory element of the envelope, empty: what its prefixes mean."""
    events: str


def history_reply(operation: str, status_code: int, body: bytes) -> HistoryReply:
    """A history reply parsed and its ``HistoryHead`` read: what a next call needs."""
    output = read_output(operation, status_code, body)
    complete = _boolean(_text(output, _IS_COMPLETE, operation), operation)
    history = output.find(_HISTORY)
    first = last = None
    if history is not None:
        first = history.find(_EVENT)
        last = next(history.iterchildren(_EVENT, reversed=True), None)
    head = HistoryHead(complete, _occurred_at(first), _occurred_at(last))
    return HistoryReply(head, history)


def text_reply(operation: str, status_code: int, body: bytes) -> TextReply | None:
    """A history reply with only its envelope parsed, where its events have the shape WCF
    writes (``soap.history_text``); None where it must be parsed whole. A fault or a bad
    envelope raises the same typed error as the whole parse."""
    split = history_text.split(body)
    if split is None:
        return None
    envelope = history_reply(operation, status_code, split.envelope)
    history = envelope.history
    if (
        history is None
        or (history.prefix or "") != split.prefix
        or (history.getroottree().docinfo.encoding or "").upper() != "UTF-8"
    ):
        return None
    first, last = history_text.first_and_last(split.events, split.prefix)
    return TextReply(HistoryHead(envelope.head.is_complete, first, last), history, split.events)


def text_events(reply: TextReply) -> HistoryWindow | None:
    """A text reply's events read into a window; None where they are not in the shape
    after all (then the reply is parsed whole)."""
    events = history_text.read_events(reply.events, reply.history)
    if events is None:
        return None
    return HistoryWindow(tuple(events), reply.head.is_complete)


def history_events(operation: str, reply: HistoryReply) -> HistoryWindow:
    """A history reply parsed whole read into a window, element by element."""
    if reply.history is None:
        return HistoryWindow((), reply.head.is_complete)
    events = events_by_element(reply.history, operation)
    return HistoryWindow(tuple(events), reply.head.is_complete)


def history_window(operation: str, status_code: int, body: bytes) -> HistoryWindow:
    """A history reply read into a window: from its text where it can be, else whole."""
    text = text_reply(operation, status_code, body)
    window = text_events(text) if text is not None else None
    if window is None:
        window = history_events(operation, history_reply(operation, status_code, body))
    return window


def device_list_page(operation: str, status_code: int, body: bytes) -> DeviceListPage:
    output = read_output(operation, status_code, body)
    devices = []
    for info in output.iterfind(_DEVICE_INFO_PATH):
        activation = info.findtext(f"{{{DEVICE}}}LastActivationDate")
        try:
            devices.append(
                DeviceRecord(
                    int(_text(info, f"{{{DEVICE}}}DeviceId", operation)),
                    tuple(
                        DeviceIdentifier.of(
                            item.findtext(_KIND) or "", item.findtext(_IDENTIFIER) or ""
                        )
                        for item in info.iterfind(_IDENTIFIER_PATH)
                    ),
                    info.findtext(f"{{{DEVICE}}}AccountName"),
                    parse_instant(activation) if activation else None,
                    _attributes(
                        next(
                            (c for c in info.iterchildren(etree.Element) if _is_extended(c)),
                            None,
                        ),
                        operation,
                    ),
                )
            )
        except (ValueError, InvalidInstant):
            raise UpstreamBadReply(operation, "malformed DeviceInformation") from None
    largest = output.findtext(f"{{{DEVICE}}}LargestDeviceIdSeen")
    return DeviceListPage(
        tuple(devices),
        int(largest) if largest else None,
        _boolean(_text(output, _IS_COMPLETE, operation), operation),
    )


def session_token(operation: str, status_code: int, body: bytes) -> str:
    output = read_output(operation, status_code, body)
    token = (output.findtext(f"{{{SESSION}}}SessionToken") or "").strip()
    if not token:
        raise UpstreamBadReply(operation, "LogIn returned no SessionToken")
    return token


def acknowledged(operation: str, status_code: int, body: bytes) -> None:
    """Checks a reply that carries nothing but success, such as LogOut's."""
    read_output(operation, status_code, body)

"""The simulator's HTTP face: SOAP 1.1 endpoints as WCF serves them, plus a control API.

POST <base>/DeviceService.svc    GetDeviceProvisioningHistory, GetDeviceList
POST <base>/SessionService.svc   LogIn, LogOut
GET  <base>/<Service>.svc?wsdl   the WSDL, with this server's address in it
GET  <base>/_control             call counts and knobs (JSON)
POST <base>/_control             set knobs, inject failures, reset counts

The control API lets any caller slow the simulator down and make it fail: it is served
only where asked for (``control=True``: the standalone simulator; the embedded one with
SIMULATOR_CONTROL). Tests in the same process use ``Simulator.state`` directly.
"""

import asyncio
import os
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from operator import attrgetter
from xml.sax.saxutils import escape

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from models.devices import IDENTIFIER_KINDS
from models.events import ExtendedAttribute, ProvisioningEvent
from models.instants import InvalidInstant, format_instant, parse_instant
from soap.contract import (
    COMMON,
    DEVICE,
    DEVICE_PATH,
    DEVICE_WSDL,
    HISTORY_PAGE_CAP,
    SESSION,
    SESSION_PATH,
    SESSION_WSDL,
    SOAP_ENV,
    V2,
    XSI,
    soap_action,
)
from soap.simulator import MOUNT
from soap.simulator.fleet import Fleet, SimDevice
from soap.simulator.state import FAILURE_KINDS, SimulatorState

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
_XML = "text/xml; charset=utf-8"
_FORBIDDEN = re.compile(r"['<>\\]")
_occurred_at = attrgetter("occurred_at")


class Fault(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _envelope(body: str) -> bytes:
    return (f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body>{body}</s:Body></s:Envelope>').encode()


def _fault(code: str, message: str) -> Response:
    body = (
        f"<s:Fault><faultcode>{escape(code)}</faultcode>"
        f'<faultstring xml:lang="en-US">{escape(message)}</faultstring></s:Fault>'
    )
    return Response(_envelope(body), status_code=500, media_type=_XML)


def _output(operation: str, inner: str, prefixes: str) -> bytes:
    return _envelope(
        f'<{operation}Response xmlns="{V2}"><Output {prefixes} '
        f'xmlns:i="{XSI}">{inner}</Output>'
        f"</{operation}Response>"
    )


def _optional(tag: str, value: str | None, nil_style: bool) -> str:
    if value is not None:
        return f"<a:{tag}>{escape(value)}</a:{tag}>"
    return f'<a:{tag} i:nil="true"/>' if nil_style else ""


_ATTRIBUTE_NAMESPACES = {"device": ("a:", ""), "common": ("b:", ""), "none": ("", ' xmlns=""')}
"""By ``Knobs.attributes_namespace``: the prefix of an ExtendedAttributesObj and its
members, and what the element declares for them."""

_DEVICE_LIST_REFUSALS = {
    "unsupported": ("s:Client", "The operation is not supported for this account."),
    "access": (
        "UnifiedWebService.REQUEST_FAILED.AccessDenied",
        "The user is not authorized to list the account's devices.",
    ),
}
"""GetDeviceList's fault by ``Knobs.device_list_fault``."""
_KNOB_CHOICES = {
    "attributes_namespace": set(_ATTRIBUTE_NAMESPACES),
    "device_list_fault": {"", *_DEVICE_LIST_REFUSALS},
}
"""Knobs that take one of a few values: anything else would fail every call later."""


def _attribute_xml(attribute: ExtendedAttribute, namespace: str, key_element: str) -> str:
    prefix, declaration = _ATTRIBUTE_NAMESPACES[namespace]
    if attribute.value is None:
        value = f'<{prefix}Value i:nil="true"/>'
    else:
        value = f"<{prefix}Value>{escape(attribute.value)}</{prefix}Value>"
    return (
        f"<{prefix}ExtendedAttributesObj{declaration}>"
        f"<{prefix}{key_element}>{escape(attribute.key)}</{prefix}{key_element}>"
        f"{value}</{prefix}ExtendedAttributesObj>"
    )


def _event_xml(
    event: ProvisioningEvent,
    nil_style: bool,
    attributes_namespace: str = "device",
    key_element: str = "Key",
) -> str:
    parts = [
        f"<a:ProvisioningEvent><a:OccurredAt>{format_instant(event.occurred_at)}</a:OccurredAt>",
        f"<a:Status>{escape(event.status)}</a:Status>",
        _optional("EventBy", event.event_by, False),
        f"<a:EventType>{escape(event.event_type)}</a:EventType>",
        _optional("ServicePlan", event.service_plan, True),
        _optional("Mdn", event.mdn, False),
        _optional("Msisdn", event.msisdn, nil_style),
    ]
    if event.extended_attributes:
        parts.append("<a:ExtendedAttributes>")
        for attribute in event.extended_attributes:
            parts.append(_attribute_xml(attribute, attributes_namespace, key_element))
        parts.append("</a:ExtendedAttributes>")
    elif nil_style:
        parts.append('<a:ExtendedAttributes i:nil="true"/>')
    parts.append("</a:ProvisioningEvent>")
    return "".join(parts)


class Simulator:
    """The four operations over a fleet, with the upstream's caps, sessions and faults."""

    def __init__(
        self,
        fleet: Fleet | None = None,
        state: SimulatorState | None = None,
        *,
        control: bool = False,
    ) -> None:
        self.fleet = fleet or Fleet()
        self.state = state or SimulatorState()
        self._wsdl = {
            DEVICE_PATH: DEVICE_WSDL.read_text(),
            SESSION_PATH: SESSION_WSDL.read_text(),
        }
        routes = [
            Route(f"/{DEVICE_PATH}", self._device_service, methods=["GET", "POST"]),
            Route(f"/{SESSION_PATH}", self._session_service, methods=["GET", "POST"]),
        ]
        if control:
            routes.append(Route("/_control", self._control, methods=["GET", "POST"]))
        self.app = Starlette(routes=routes)

    # -- HTTP -------------------------------------------------------------------------

    async def _device_service(self, request: Request) -> Response:
        handlers = {
            "GetDeviceProvisioningHistory": self._history,
            "GetDeviceList": self._device_list,
        }
        return await self._serve(request, DEVICE_PATH, "IDeviceService", handlers)

    async def _session_service(self, request: Request) -> Response:
        handlers = {"LogIn": self._log_in, "LogOut": self._log_out}
        return await self._serve(request, SESSION_PATH, "ISessionService", handlers)

    async def _serve(
        self,
        request: Request,
        path: str,
        interface: str,
        handlers: Mapping[str, Callable[[etree._Element, str | None], str]],
    ) -> Response:
        if request.method == "GET":
            if "wsdl" not in {key.lower() for key in request.query_params}:
                return Response("Send SOAP requests with POST; the WSDL is at ?wsdl.", 405)
            address = str(request.url.replace(query=""))
            wsdl = re.sub(r'location="[^"]*"', f'location="{address}"', self._wsdl[path])
            return Response(wsdl, media_type=_XML)
        body = await request.body()
        try:
            envelope = etree.fromstring(body, _PARSER)
        except etree.XMLSyntaxError:
            return _fault("s:Client", "The request is not well-formed XML.")
        call = envelope.find(f"{{{SOAP_ENV}}}Body/*")
        operation = etree.QName(call).localname if call is not None else ""
        action = request.headers.get("soapaction", "").strip('"')
        if call is None or operation not in handlers or action != soap_action(interface, operation):
            return _fault(
                "a:ActionNotSupported",
                f"The action '{action}' cannot be processed at the receiver.",
            )
        self.state.count(operation)
        self.state.enter()
        try:
            started = time.monotonic()
            token = envelope.findtext(f"{{{SOAP_ENV}}}Header/{{{V2}}}token")
            try:
                inner = handlers[operation](call, token)
                response = Response(
                    _output(operation, inner, self._prefixes(path)), media_type=_XML
                )
            except Fault as fault:
                response = _fault(fault.code, fault.message)
            # The latency is the upstream's response time: its own work (some ms for 500
            # events, one reply after another on this one loop) is part of it, not added on
            # top, or a fleet read pays the simulator's CPU as if it were the upstream's.
            if self.state.knobs.latency_s:
                await asyncio.sleep(self.state.knobs.latency_s - (time.monotonic() - started))
            return await self._injected(operation, response) or response
        finally:
            self.state.leave()

    @staticmethod
    def _prefixes(path: str) -> str:
        contract = DEVICE if path == DEVICE_PATH else SESSION
        return f'xmlns:a="{contract}" xmlns:b="{COMMON}"'

    async def _injected(self, operation: str, response: Response) -> Response | None:
        """The failure injected for this call, if any; a hang delays, then answers normally."""
        kind = self.state.take_failure(operation)
        if kind is None:
            return None
        if kind == "http500":
            return Response(
                "<html><body>Internal Server Error</body></html>", 500, media_type="text/html"
            )
        if kind == "http503":
            return Response(
                "<html><body>Service Unavailable</body></html>", 503, media_type="text/html"
            )
        if kind == "fault":
            return _fault(self.state.knobs.fault_code, "The request could not be processed.")
        if kind == "not_xml":
            return Response("<html><body>Maintenance</body></html>", media_type="text/html")
        if kind == "empty":
            return Response(b"", media_type=_XML)
        if kind == "truncated":
            return Response(response.body[: len(response.body) // 2], media_type=_XML)
        await asyncio.sleep(self.state.knobs.hang_s)
        return None

    async def _control(self, request: Request) -> Response:
        if request.method == "POST":
            change = await request.json()
            for name, allowed in _KNOB_CHOICES.items():
                if name in change and change[name] not in allowed:
                    return JSONResponse({"error": f"{name} must be one of {sorted(allowed)}"}, 400)
            knobs = self.state.knobs
            for name in vars(knobs):
                if name in change:
                    setattr(knobs, name, type(getattr(knobs, name))(change[name]))
            for failure in change.get("fail", []):
                if failure.get("kind") not in FAILURE_KINDS:
                    return JSONResponse({"error": f"kind must be one of {FAILURE_KINDS}"}, 400)
                self.state.fail_next(
                    failure["kind"], int(failure.get("times", 1)), failure.get("operation")
                )
            if change.get("reset_calls"):
                self.state.reset_calls()
            if "idle_sessions_s" in change:
                self.state.idle_sessions(float(change["idle_sessions_s"]))
        return JSONResponse(
            {
                "calls": dict(self.state.calls),
                "peakInFlight": self.state.peak_in_flight,
                "knobs": vars(self.state.knobs),
            }
        )

    # -- operations -------------------------------------------------------------------

    def _authorize(self, token: str | None) -> None:
        verdict = self.state.check_session(token)
        if verdict == "expired":
            raise Fault(
                "UnifiedWebService.REQUEST_FAILED.SessionToken.Expired", "The session has expired."
            )
        if verdict == "invalid":
            raise Fault(
                "UnifiedWebService.REQUEST_FAILED.SessionToken.Invalid",
                "The session token is missing or not valid.",
            )

    def _history(self, call: etree._Element, token: str | None) -> str:
        self._authorize(token)
        device, kind, identifier = self._device(call)
        earliest, latest = self._range(call)
        history = self.fleet.history(device)
        start = bisect_left(history, earliest, key=_occurred_at)
        end = bisect_left(history, latest + 1, key=_occurred_at)
        page = history[start : min(end, start + HISTORY_PAGE_CAP)]
        complete = start + len(page) >= end
        nil_style, knobs = device.profile.nil_style, self.state.knobs
        namespace, key_element = knobs.attributes_namespace, knobs.attribute_key_element
        events = "".join(_event_xml(e, nil_style, namespace, key_element) for e in page)
        return (
            f"<a:Device><b:Kind>{escape(kind)}</b:Kind><b:Identifier>{escape(identifier)}"
            f"</b:Identifier></a:Device><a:ProvisioningHistory>{events}</a:ProvisioningHistory>"
            f"<a:IsComplete>{'true' if complete else 'false'}</a:IsComplete>"
        )

    def _device(self, call: etree._Element) -> tuple[SimDevice, str, str]:
        kind = (call.findtext(f"{{{V2}}}Input/{{{DEVICE}}}Device/{{{COMMON}}}Kind") or "").strip()
        identifier = (
            call.findtext(f"{{{V2}}}Input/{{{DEVICE}}}Device/{{{COMMON}}}Identifier") or ""
        ).strip()
        if kind.lower() not in IDENTIFIER_KINDS:
            raise Fault(
                "DeviceService.INPUT_INVALID.Kind",
                f"'{kind}' is not a valid device identifier kind.",
            )
        if not identifier or _FORBIDDEN.search(identifier):
            raise Fault(
                "DeviceService.INPUT_INVALID.Identifier", "The device identifier is not valid."
            )
        device = self.fleet.find(kind, identifier)
        if device is None:
            raise Fault(
                "UnifiedWebService.REQUEST_FAILED.DeviceNotFound", "The device was not found."
            )
        return device, kind, identifier

    @staticmethod
    def _range(call: etree._Element) -> tuple[int, int]:
        window = call.find(f"{{{V2}}}Input/{{{DEVICE}}}OccurredAtFilter")
        earliest_text = latest_text = ""
        if window is not None:
            earliest_text = window.findtext(f"{{{DEVICE}}}Earliest") or ""
            latest_text = window.findtext(f"{{{DEVICE}}}Latest") or ""
        try:
            earliest = parse_instant(earliest_text)
            latest = parse_instant(latest_text)
        except InvalidInstant:
            raise Fault(
                "DeviceService.INPUT_INVALID.OccurredAtFilter",
                "OccurredAtFilter needs Earliest and Latest as xs:dateTime values.",
            ) from None
        if earliest > latest:
            raise Fault("DeviceService.INPUT_INVALID.OccurredAtFilter", "Earliest is after Latest.")
        return earliest, latest

    def _device_list(self, call: etree._Element, token: str | None) -> str:
        self._authorize(token)
        if self.state.knobs.device_list_fault:
            raise Fault(*_DEVICE_LIST_REFUSALS[self.state.knobs.device_list_fault])
        after_text = call.findtext(f"{{{V2}}}Input/{{{DEVICE}}}LargestDeviceIdSeen")
        try:
            after = int(after_text) if after_text else 0
        except ValueError:
            raise Fault(
                "DeviceService.INPUT_INVALID.LargestDeviceIdSeen", "Not a number."
            ) from None
        remaining = [d for d in self.fleet.devices if d.device_id > after]
        page = remaining[: self.state.knobs.device_list_cap]
        complete = len(page) == len(remaining)
        items = []
        for device in page:
            identifiers = "".join(
                f"<b:DeviceIdentifier><b:Kind>{i.kind}</b:Kind><b:Identifier>{i.identifier}"
                "</b:Identifier></b:DeviceIdentifier>"
                for i in device.identifiers
            )
            items.append(
                f"<a:DeviceInformation><a:DeviceId>{device.device_id}</a:DeviceId>"
                f"<a:DeviceIdentifiers>{identifiers}</a:DeviceIdentifiers>"
                f"<a:AccountName>{device.account}</a:AccountName><a:LastActivationDate>"
                f"{format_instant(device.profile.start)}</a:LastActivationDate>"
                "</a:DeviceInformation>"
            )
        largest = page[-1].device_id if page else after
        return (
            f"<a:Devices>{''.join(items)}</a:Devices>"
            f"<a:IsComplete>{'true' if complete else 'false'}</a:IsComplete>"
            f"<a:LargestDeviceIdSeen>{largest}</a:LargestDeviceIdSeen>"
        )

    def _log_in(self, call: etree._Element, token: str | None) -> str:
        username = call.findtext(f"{{{V2}}}Input/{{{SESSION}}}Username") or ""
        password = call.findtext(f"{{{V2}}}Input/{{{SESSION}}}Password") or ""
        session = self.state.log_in(username, password)
        if session is None:
            raise Fault(
                "SessionService.REQUEST_FAILED.InvalidCredentials",
                "The user name or password is not valid.",
            )
        return f"<a:SessionToken>{session}</a:SessionToken>"

    def _log_out(self, call: etree._Element, token: str | None) -> str:
        self.state.log_out(call.findtext(f"{{{V2}}}Input/{{{SESSION}}}SessionToken") or "")
        return ""


def create_app() -> Starlette:
    """A simulator alone, configured from the environment (for ``uvicorn --factory``):
    SIMULATOR_SEED, SIMULATOR_DEVICES (ordinary devices), SIMULATOR_BULK (comma-separated
    sizes of extra long histories), SIMULATOR_LATENCY_MS, SIMULATOR_WARM (any value: make
    the histories at start), SIMULATOR_FAILURE_RATE (share of calls that fail at random,
    as SIMULATOR_FAILURE_MIX says: comma-separated failure kinds)."""
    fleet = Fleet(
        seed=int(os.environ.get("SIMULATOR_SEED", "2017")),
        ordinary=int(os.environ.get("SIMULATOR_DEVICES", "300")),
        bulk=tuple(int(n) for n in os.environ.get("SIMULATOR_BULK", "").split(",") if n),
    )
    simulator = Simulator(fleet, control=True)
    knobs = simulator.state.knobs
    knobs.latency_s = float(os.environ.get("SIMULATOR_LATENCY_MS", "0")) / 1000
    knobs.failure_rate = float(os.environ.get("SIMULATOR_FAILURE_RATE", "0"))
    knobs.failure_mix = os.environ.get("SIMULATOR_FAILURE_MIX", knobs.failure_mix)
    if os.environ.get("SIMULATOR_WARM"):
        # A real service has its data at hand: make every ordinary history up front, so
        # that a benchmark times the calls, not the simulator's first-touch generation.
        for device in fleet.devices:
            if not device.profile.name.startswith("bulk"):
                fleet.history(device)
    return Starlette(routes=[Mount(MOUNT, app=simulator.app)])

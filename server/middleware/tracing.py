"""A server span for each HTTP request, continuing the caller's trace, while tracing is on.

The span is named after the route that serves the request (``POST /graphql``), never its
URL: a query string may carry a token (GraphQL over SSE's ``?token=``) or a device. It is
current while the request runs, so that the GraphQL operation and the upstream calls of a
CSV export are its descendants, and it ends with the response's last byte, which for a
stream (an export, a subscription over HTTP) comes when the stream ends.

``opentelemetry-instrumentation-asgi`` did not fit: it records the URL with its query
string (redacting only a few cloud signature parameters, not ``token``), names spans
after the raw path, adds a span per ``send`` and ``receive`` (per chunk of a stream), and
does its work whether or not traces go anywhere.

A WebSocket gets no span of its own, as it may stay open for days: the trace its upgrade
request carries (if any) is made current for the socket, so that each of its operations'
spans continues that trace. Browsers cannot set headers on an upgrade request.
"""

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graph.requests import current_request
from graph.tracing import traced
from server.responses import route_path

_tracer = trace.get_tracer(__name__)

_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
)
"""The methods the semantic conventions name as they are; any other is ``_OTHER``, so that
made-up methods cannot multiply span names."""


class _HeaderGetter(Getter[Headers]):
    """Every value of a header: a ``tracestate`` or ``baggage`` may come in several lines."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        return carrier.getlist(key) or None

    def keys(self, carrier: Headers) -> list[str]:
        return list(carrier.keys())


_HEADERS = _HeaderGetter()


def _template(route: BaseRoute) -> str | None:
    if isinstance(route, Route | WebSocketRoute):
        return route.path
    if isinstance(route, Mount):
        return f"{route.path}/{{path:path}}"
    return None


def _route(scope: Scope) -> str | None:
    """The path template of the route that will serve the request, found as the router
    finds it (a route of another method counts, as it answers 405); None for a 404."""
    app = scope.get("app")
    if not isinstance(app, Starlette):
        return None
    partial = None
    for route in app.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _template(route)
        if match is Match.PARTIAL and partial is None:
            partial = route
    return None if partial is None else _template(partial)


def _request_attributes(scope: Scope, method: str, route: str | None) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {"http.request.method": method}
    if method == "_OTHER":
        attributes["http.request.method_original"] = scope["method"]
    if route is not None:
        attributes["http.route"] = route
    if (info := current_request()) is not None:
        attributes["provgraph.request_id"] = info.id
    return attributes


class Tracing:
    """Just inside ``RequestContext`` (whose request id it records), so that the statuses
    the other middleware answer with are the span's too. While tracing is off it passes
    every request straight through, reading nothing of it."""

    def __init__(self, app: ASGIApp, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.exempt = exempt
        """Path prefixes left untraced (the embedded simulator plays the upstream)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not traced()
            or scope["type"] not in ("http", "websocket")
            or route_path(scope).startswith(self.exempt)
        ):
            await self.app(scope, receive, send)
            return
        # OTEL_PROPAGATORS says which headers (W3C trace context and baggage by default).
        caller = propagate.extract(Headers(scope=scope), getter=_HEADERS)
        if scope["type"] == "websocket":
            token = context.attach(caller)
            try:
                await self.app(scope, receive, send)
            finally:
                context.detach(token)
            return
        await self._traced(scope, receive, send, caller)

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, caller: context.Context
    ) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        route = _route(scope)
        name = "HTTP" if method == "_OTHER" else method
        span = _tracer.start_span(
            name if route is None else f"{name} {route}",
            context=caller,
            kind=SpanKind.SERVER,
            attributes=_request_attributes(scope, method, route),
        )
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                span.end()

        async def traced_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                status: int = message["status"]
                span.set_attribute("http.response.status_code", status)
                if status >= 500:  # a 4xx is the caller's business
                    span.set_attribute("error.type", str(status))
                    span.set_status(StatusCode.ERROR)
            elif kind == "http.response.body" and not message.get("more_body", False):
                end()  # before the last byte leaves, so the span is there once it arrives
            await send(message)

        token = context.attach(trace.set_span_in_context(span, caller))
        try:
            await self.app(scope, receive, traced_send)
        except Exception as error:
            span.record_exception(error)
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(StatusCode.ERROR, type(error).__qualname__)
            raise
        finally:
            context.detach(token)
            end()

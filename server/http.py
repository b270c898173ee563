"""GraphQL over HTTP and WebSocket at /graphql, per the GraphQL-over-HTTP spec.

Strawberry's view answers everything as ``application/json``. A client that accepts
``application/graphql-response+json`` gets that type instead, and then a request the
server could not execute at all (unparsable, invalid, bad variables) comes back as 400
without a ``data`` entry, as the spec asks.

Bodies, GET parameters and WebSocket messages are read strictly before anything runs:
UTF-8, JSON nested at most MAX_JSON_DEPTH deep, no NUL or lone surrogate in any string
(the document's literals included); over HTTP anything else is a 400 BAD_USER_INPUT.
A subscription over plain HTTP is one too: it needs a WebSocket or a stream.

Subscriptions (and any operation) also stream over HTTP: Apollo's multipart protocol
(``Accept: multipart/mixed;subscriptionSpec="1.0"``) and GraphQL over SSE (``Accept:
text/event-stream``; distinct connections mode here, single connection mode in
server/sse.py), all held to a socket's rules by server/streams.py.
"""

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError, GraphQLSyntaxError, Lexer, Source, TokenKind
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.directive import StrawberryDirective
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.http.streaming import (
    HTTPStreamTransport,
    MultipartSubscriptionTransport,
    SSETransport,
)
from strawberry.http.types import QueryParams
from strawberry.schema.base import BaseSchema
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
from strawberry.types import ExecutionContext, ExecutionResult, SubscriptionExecutionResult
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.enum import StrawberryEnumDefinition
from strawberry.types.graphql import OperationType
from strawberry.types.scalar import ScalarDefinition
from strawberry.types.union import StrawberryUnion
from strawberry.types.unset import UnsetType

from graph.context import Context
from graph.sharing import SharedSubscriptions
from models.principal import ANONYMOUS
from models.text import UNSTORABLE_RULE, storable
from resolvers.auth import Unauthenticated
from server.auth import principal_of, upgrade_principal
from server.development import asks_for_graphiql, graphiql_page
from server.frames import encode
from server.services import context_for, services_of, services_of_context
from server.sockets import MAX_OPERATIONS_PER_SOCKET, SocketGuard, handshake
from server.sse import SingleConnection
from server.streams import unauthenticated

GRAPHQL_RESPONSE = "application/graphql-response+json"
MAX_JSON_DEPTH = 32
"""How deep the JSON of a request or WebSocket message may nest. Our deepest input sits 5
levels below the body; json.loads recurses in C and graphql-core in Python, so text
nested thousands deep would otherwise end in a RecursionError, a masked 500."""

SUBSCRIPTION_PROTOCOLS = (
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
    GRAPHQL_SSE_PROTOCOL,
)
"""What /graphql speaks beside single requests: two WebSocket protocols, and streams over
HTTP (Apollo's multipart subscriptions, GraphQL over SSE)."""

_UNSTORABLE_MESSAGE = f"text {UNSTORABLE_RULE}"


def json_text(data: object) -> str:
    """A response, a stream's message or a socket's, as compact JSON: orjson builds a
    500-edge page's text about ten times faster than the standard library."""
    return orjson.dumps(data).decode()


class _RefusedJson(json.JSONDecodeError):
    """JSON that parses but that no operation may carry; ``msg`` says why, in our words."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)


def _document_has_nul(query: str) -> bool:
    """Whether a string literal of a GraphQL document holds NUL (e.g. written "\\u0000")."""
    lexer = Lexer(Source(query))
    try:
        while (token := lexer.advance()).kind is not TokenKind.EOF:
            if token.kind in (TokenKind.STRING, TokenKind.BLOCK_STRING) and "\x00" in (
                token.value or ""
            ):
                return True
    except GraphQLSyntaxError:
        pass  # the parser reports it, in its words
    return False


def _read_json(data: str | bytes) -> object:
    """JSON text as the API accepts it: UTF-8, at most MAX_JSON_DEPTH deep, and no string
    (key, value, or literal of the GraphQL document under "query") holding what no input
    can store or send on. _RefusedJson otherwise; json.JSONDecodeError for broken JSON."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _RefusedJson("The request body is not UTF-8 text.") from None
    too_deep = f"The request's JSON is nested more than {MAX_JSON_DEPTH} levels deep."
    try:
        value = json.loads(data)
    except RecursionError:
        raise _RefusedJson(too_deep) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # Python reads integers of at most 4,300 digits
        raise _RefusedJson("The request's JSON holds a number too long to read.") from None
    stack: list[tuple[object, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, dict | list):
            if len(path) >= MAX_JSON_DEPTH:
                raise _RefusedJson(too_deep)
            members = item.items() if isinstance(item, dict) else enumerate(item)
            for name, member in members:
                if isinstance(name, str) and not storable(name):
                    raise _RefusedJson(f"A key in {_where(path)}: {_UNSTORABLE_MESSAGE}")
                stack.append((member, (*path, name)))
    return value


def _check_text(text: str, path: tuple[str | int, ...]) -> None:
    """_RefusedJson for text that no input can take; ``path`` names where it was found, and
    text under "query" is a GraphQL document, whose literals are read as well."""
    if not storable(text) or (
        path[-1:] == ("query",) and "\\u" in text and _document_has_nul(text)
    ):
        raise _RefusedJson(f"{_where(path)}: {_UNSTORABLE_MESSAGE}")


def _where(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path) or "the JSON"


def _accepts_graphql_response(accept: str) -> bool:
    """Whether the Accept header prefers application/graphql-response+json to JSON."""
    ranked = []
    for position, part in enumerate(accept.split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranked.append((quality, -position, media.lower()))
    for quality, _, media in sorted(ranked, reverse=True):
        if quality <= 0:
            break
        if media == GRAPHQL_RESPONSE:
            return True
        if media in ("application/json", "application/*", "*/*"):
            return False
    return False


def _untrusted(context: object, query: str | None) -> AsyncGenerator[Any, None] | None:
    """The refusal of a document sent in full that PERSISTED_QUERIES=only does not run."""
    if not isinstance(context, Context):
        raise TypeError("a GraphQL context made outside the server")
    return services_of_context(context).persisted.refused(query)


class _Served(BaseSchema):
    """The schema as this app runs it, over each transport (the view takes any
    ``BaseSchema``; everything not said here is the schema's own):

    - no subscription over plain HTTP (a request that accepts no stream): Strawberry
      would let one through to graphql-core's execute, which resolves its root field as a
      query's and fails on the stream it gets, a masked error.
    - every operation over graphql-ws, which Strawberry runs through ``subscribe``: the
      protocol (and clients that still speak it) sends queries and mutations too, as over
      graphql-transport-ws, which Strawberry runs through ``stream``.
    - with PERSISTED_QUERIES=only, over those (where documents are sent in full) only
      trusted documents: HTTP requests are held to it in ``GraphQLApp.execute_operation``.
    """

    def __init__(self, schema: BaseSchema) -> None:
        self._inner = schema
        # Subscribers who would get the same events share their execution (graph/sharing.py).
        self._shared = SharedSubscriptions(schema)
        self.config = schema.config
        self.schema_converter = schema.schema_converter
        self.query = schema.query
        self.mutation = schema.mutation
        self.subscription = schema.subscription
        self.schema_directives = schema.schema_directives
        self.exception_handlers = schema.exception_handlers

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        allowed = set(OperationType if allowed_operation_types is None else allowed_operation_types)
        try:
            return await self._inner.execute(
                query,
                variable_values=variable_values,
                context_value=context_value,
                root_value=root_value,
                operation_name=operation_name,
                allowed_operation_types=allowed - {OperationType.SUBSCRIPTION},
                operation_extensions=operation_extensions,
            )
        except InvalidOperationTypeError as error:
            if error.operation_type is not OperationType.SUBSCRIPTION:
                raise
            raise HTTPException(
                400,
                "A subscription needs a stream: a WebSocket at /graphql (graphql-transport-ws "
                "or graphql-ws), or a request that accepts multipart/mixed;"
                'subscriptionSpec="1.0" or text/event-stream.',
            ) from None

    def execute_sync(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        return self._inner.execute_sync(
            query,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            allowed_operation_types=allowed_operation_types,
            operation_extensions=operation_extensions,
        )

    async def subscribe(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> AsyncGenerator[Any, None]:
        if (refused := _untrusted(context_value, query)) is not None:
            return refused
        return await self._shared.stream(
            query,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            operation_extensions=operation_extensions,
            allowed_operation_types=tuple(OperationType),
        )

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> AsyncGenerator[Any, None]:
        if (refused := _untrusted(context_value, query)) is not None:
            return refused
        return await self._shared.stream(
            query,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            operation_extensions=operation_extensions,
            allowed_operation_types=allowed_operation_types,
        )

    def get_type_by_name(
        self, name: str
    ) -> (
        StrawberryObjectDefinition
        | ScalarDefinition
        | StrawberryEnumDefinition
        | StrawberryUnion
        | None
    ):
        return self._inner.get_type_by_name(name)

    def get_directive_by_name(self, graphql_name: str) -> StrawberryDirective[Any] | None:
        return self._inner.get_directive_by_name(graphql_name)

    def as_str(self) -> str:
        return self._inner.as_str()

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        self._inner.process_errors(errors, execution_context)


class _SubResponse(Response):
    graphql_response = False


class GraphQLApp(GraphQL[Context, None]):
    def __init__(
        self,
        schema: BaseSchema,
        *,
        keep_alive_s: float,
        max_subscriptions_per_connection: int | None = MAX_OPERATIONS_PER_SOCKET,
        **options: Any,
    ) -> None:
        # The per-socket cap is the guard's alone, so that its error carries a code.
        super().__init__(
            _Served(schema),
            keep_alive=True,
            keep_alive_interval=keep_alive_s,
            subscription_protocols=SUBSCRIPTION_PROTOCOLS,
            max_subscriptions_per_connection=None,
            **options,
        )
        self.max_operations_per_socket = max_subscriptions_per_connection
        self.stream_transport_classes_by_protocol = _transports(keep_alive_s)
        self.single_connection = SingleConnection(
            self.schema, self.process_result, self.decode_json, self.encode_json, keep_alive_s
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and SingleConnection.claims(scope):
            await self.single_connection(scope, receive, send)
            return
        if scope["type"] != "websocket":
            await super().__call__(scope, receive, send)
            return
        guard = SocketGuard(receive, send, self.decode_json, self.max_operations_per_socket)
        await guard.serve(super().__call__, scope)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        if isinstance(request, WebSocket):
            context = context_for(request, await upgrade_principal(request))
            if context.principal is not ANONYMOUS:
                context.authorization = request.headers.get("authorization")
            return context
        return context_for(request, principal_of(request))

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        await handshake(context)
        return await super().on_ws_connect(context)

    def encode_json(self, data: object) -> str:
        # Text, not bytes: a WebSocket message goes out as a text frame only when it is.
        # A shared subscription result's payload is encoded once (server/frames.py).
        return encode(data, json_text)

    def decode_json(self, data: str | bytes) -> object:
        # Request bodies, GET variables and WebSocket messages alike. Over a WebSocket a
        # refusal is an invalid message: graphql-transport-ws closes with 4400.
        return _read_json(data)

    def parse_query_params(self, params: QueryParams) -> dict[str, Any]:
        # GET: variables and extensions go through parse_json; the document and the
        # operation name are plain parameters.
        data = super().parse_query_params(params)
        for name in ("query", "operationName"):
            if isinstance(value := data.get(name), str):
                try:
                    _check_text(value, (name,))
                except _RefusedJson as error:
                    raise HTTPException(400, error.msg) from None
        return data

    def parse_json(self, data: str | bytes) -> Any:
        try:
            return self.decode_json(data)
        except _RefusedJson as error:
            raise HTTPException(400, error.msg) from None
        except json.JSONDecodeError as error:
            raise HTTPException(
                400, f"The request is not valid JSON (line {error.lineno}, column {error.colno})."
            ) from None

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        # A document named by its hash runs in its place, or is refused (server/persisted.py).
        persisted = services_of_context(context).persisted
        resolved = await persisted.resolve(request_data, request_adapter, self.decode_json)
        if not isinstance(resolved, GraphQLRequestData | list):
            return resolved
        return await super().execute_operation(
            request, request_adapter, resolved, context, root_value, sub_response
        )

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        return asks_for_graphiql(
            request.method, request.query_params, request.headers.get("accept", "")
        )

    async def render_graphql_ide(self, request: Request) -> Response:
        # The page may carry the development token: no cache, shared or private, keeps it.
        return HTMLResponse(graphiql_page(request), headers={"cache-control": "no-store"})

    async def create_streaming_response(
        self,
        request: Request | WebSocket,
        stream: Callable[[], AsyncIterator[str]],
        sub_response: Response,
        headers: Mapping[str, str],
    ) -> Response:
        streams = services_of(request).streams
        principal = principal_of(request)
        if (refusal := streams.refusal(principal)) is not None:
            return refusal
        accept = request.headers.get("accept", "")
        last_words = _multipart_last_words if _MULTIPART.accepts(accept) else _sse_last_words
        held = streams.hold(stream(), request, principal, last_words)
        return await super().create_streaming_response(request, lambda: held, sub_response, headers)

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = _SubResponse()
        # None until a resolver sets one, as Strawberry's own sub-response has it (its
        # ASGI view does the same): create_response then picks the status.
        sub_response.status_code = None  # type: ignore[assignment]
        del sub_response.headers["content-length"]
        sub_response.graphql_response = _accepts_graphql_response(request.headers.get("accept", ""))
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        graphql_response = getattr(sub_response, "graphql_response", False)
        status = 200
        if graphql_response and isinstance(response_data, dict) and _request_error(response_data):
            status = 400
        body = (
            {k: v for k, v in response_data.items() if k != "data"}
            if status == 400 and isinstance(response_data, dict)
            else response_data
        )
        response = Response(
            self.encode_json(body),
            status_code=sub_response.status_code or status,
            media_type=GRAPHQL_RESPONSE if graphql_response else "application/json",
        )
        response.headers.raw.extend(sub_response.headers.raw)
        response.background = sub_response.background
        return response


def _transports(keep_alive_s: float) -> dict[str, type[HTTPStreamTransport]]:
    """Strawberry's HTTP stream transports, with the WebSockets' keep-alive interval."""

    class Multipart(MultipartSubscriptionTransport):
        heartbeat_interval = keep_alive_s

        def allowed_operation_types(
            self, allowed_operation_types: set[OperationType]
        ) -> Iterable[OperationType]:
            # Apollo's protocol is for subscriptions, but a query sent this way has one
            # answer to give, not a masked error: one part, then the end.
            return allowed_operation_types

    class Sse(SSETransport):
        def __init__(self) -> None:
            super().__init__(keep_alive_s)

    return {MULTIPART_SUBSCRIPTION_PROTOCOL: Multipart, GRAPHQL_SSE_PROTOCOL: Sse}


_MULTIPART = MultipartSubscriptionTransport()
_SSE = SSETransport()


def _multipart_last_words(error: Unauthenticated) -> str:
    # A transport error, in the protocol's words: no payload, and the stream is over.
    part = _MULTIPART.encode_multipart_data(
        {"payload": None, "errors": [unauthenticated(error)]}, json_text
    )
    return part + _MULTIPART.encode_complete()


def _sse_last_words(error: Unauthenticated) -> str:
    return (
        _SSE.encode_next({"errors": [unauthenticated(error)]}, json_text) + _SSE.encode_complete()
    )


def _request_error(data: GraphQLHTTPResponse) -> bool:
    """No execution happened: no data, and errors that point at no field."""
    errors = data.get("errors") or []
    return (
        data.get("data") is None
        and bool(errors)
        and all(isinstance(e, dict) and "path" not in e for e in errors)
    )

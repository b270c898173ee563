"""GraphQL over HTTP and WebSocket at /graphql, per the GraphQL-over-HTTP spec.

Strawberry's view answers everything as ``application/json``. A client that accepts
``application/graphql-response+json`` gets that type instead, and then a request the
server could not execute at all (unparsable, invalid, bad variables) comes back as 400
without a ``data`` entry, as the spec asks.
"""

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.base import BaseSchema
from strawberry.subscriptions.protocols.graphql_ws.handlers import (
    BaseGraphQLWSHandler,
)
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from graph.auth import authenticate_connection_init, principal_of, upgrade_principal
from graph.context import Context, context_for
from graph.development import graphiql_page

GRAPHQL_RESPONSE = "application/graphql-response+json"


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


class _AnyOperation:
    """The schema as the legacy graphql-ws handler sees it: able to run every operation.

    Strawberry runs only subscriptions over graphql-ws; the protocol (and clients that
    still speak it) send queries and mutations too, as over graphql-transport-ws.
    """

    def __init__(self, schema: BaseSchema) -> None:
        self._schema = schema

    def __getattr__(self, name: str) -> Any:
        return getattr(self._schema, name)

    async def subscribe(self, query: str | None, **options: Any) -> Any:
        return await self._schema.stream(
            query, allowed_operation_types=tuple(OperationType), **options
        )


class _LegacyHandler(BaseGraphQLWSHandler):
    def __init__(self, *, schema: BaseSchema, **options: Any) -> None:
        super().__init__(schema=_AnyOperation(schema), **options)  # type: ignore[arg-type]


class _SubResponse(Response):
    graphql_response = False


class GraphQLApp(GraphQL):
    graphql_ws_handler_class = _LegacyHandler

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        if isinstance(request, WebSocket):
            return context_for(request, await upgrade_principal(request))
        return context_for(request, principal_of(request))

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        await authenticate_connection_init(context)
        return UNSET

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(graphiql_page(request, self.graphql_ide_html))

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = _SubResponse()
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
            response_data = {k: v for k, v in response_data.items() if k != "data"}  # type: ignore[assignment]
            status = 400
        response = Response(
            self.encode_json(response_data),
            status_code=sub_response.status_code or status,
            media_type=GRAPHQL_RESPONSE if graphql_response else "application/json",
        )
        response.headers.raw.extend(sub_response.headers.raw)
        response.background = sub_response.background
        return response


def _request_error(data: GraphQLHTTPResponse) -> bool:
    """No execution happened: no data, and errors that point at no field."""
    errors = data.get("errors") or []
    return data.get("data") is None and bool(errors) and all("path" not in e for e in errors)

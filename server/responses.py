"""Errors the service writes over HTTP, all in the shape of a GraphQL error.

Every HTTP error the service writes, whatever the path, has that shape, so that clients
read every error the same way:
``{"errors": [{"message": ..., "extensions": {"code": ..., "requestId": ...}}]}``.
Ours are made by ``error_body``; the plain-text ones Starlette, Strawberry and the CORS
middleware write are rewritten into it by ``server.middleware.error_shape.ErrorShape``.
"""

import json
from collections.abc import Iterable, Mapping

from starlette.responses import Response
from starlette.types import Scope, Send

from graph.requests import current_request


def route_path(scope: Scope) -> str:
    """What the router matches: the path below the root path the app is mounted at."""
    return str(scope["path"]).removeprefix(scope.get("root_path", ""))


def error_body(message: str, code: str, **details: object) -> bytes:
    """A GraphQL-shaped error, with the current request's id; records the outcome.

    ``details`` go into ``extensions`` beside the code.
    """
    extensions: dict[str, object] = {"code": code, **details}
    info = current_request()
    if info is not None:
        extensions["requestId"] = info.id
        info.outcome = code
    return json.dumps({"errors": [{"message": message, "extensions": extensions}]}).encode()


def error_response(
    status: int,
    message: str,
    code: str,
    headers: Mapping[str, str] | None = None,
    **details: object,
) -> Response:
    """``error_body`` as a response, for routes and the middleware that have one to return."""
    return Response(
        error_body(message, code, **details),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def send_error(
    send: Send,
    status: int,
    message: str,
    code: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    body = error_body(message, code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

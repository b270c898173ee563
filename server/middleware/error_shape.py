"""The plain-text errors of the frameworks, rewritten into the one error shape."""

from http import HTTPStatus

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.errors import ErrorCode
from server.responses import error_body, route_path


def framework_code(status: int) -> str:
    """The code of an error a framework wrote with only a status to go by."""
    if status == 400:
        return ErrorCode.BAD_USER_INPUT  # as for every input we refuse ourselves
    try:
        return HTTPStatus(status).name
    except ValueError:
        return ErrorCode.HTTP_ERROR


class ErrorShape:
    """Rewrites the plain-text errors the frameworks write into the one error shape:
    Starlette's 404 and 405 for paths and methods no route serves, Strawberry's 400s for
    a request it cannot read, the CORS middleware's 400 for a refused preflight. Their
    text becomes the message and their status names the code; other headers stay."""

    def __init__(self, app: ASGIApp, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.exempt = exempt
        """Path prefixes answered as they are (the embedded simulator plays another service)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope).startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        text = bytearray()

        async def shaping_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
                if message["status"] >= 400 and content_type.startswith("text/plain"):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                text.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                status = held["status"]
                message_text = text.decode(errors="replace").strip()
                body = error_body(message_text or HTTPStatus(status).phrase, framework_code(status))
                headers = MutableHeaders(raw=list(held.get("headers", [])))
                headers["content-type"] = "application/json"
                headers["content-length"] = str(len(body))
                await send({**held, "headers": headers.raw})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, shaping_send)

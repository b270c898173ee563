"""A deadline for each request's response to start."""

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graph.requests import current_request
from models.errors import ErrorCode
from server.responses import send_error


class Deadline:
    """504 DEADLINE_EXCEEDED when a request's response has not started within ``seconds``.

    Cancelling the request cancels its upstream calls too. A response that has started
    (a CSV export streaming) is no longer timed.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        info = current_request()

        async def timed_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with asyncio.timeout(self.seconds) as deadline:
                if info is not None:
                    info.deadline = deadline
                await self.app(scope, receive, timed_send)
        except TimeoutError:
            if started or not deadline.expired():
                raise  # not ours: some inner timeout the app let escape
            await send_error(
                send,
                504,
                f"The request did not finish within its deadline of {self.seconds:g} s.",
                ErrorCode.DEADLINE_EXCEEDED,
            )

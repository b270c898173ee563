"""Keeping a long-lived connection (a WebSocket, an HTTP stream) to its credential.

A connection is authenticated once, when it opens, but may stay open for days: an API
token is checked again every ``WS_RECHECK_S`` (it may be revoked or expire), a JWT when its
``exp`` (plus the leeway) passes.
"""

import asyncio
import logging

from resolvers.auth import Authenticator, Unauthenticated

log = logging.getLogger(__name__)


async def recheck(authenticator: Authenticator, authorization: str | None, *, local: bool) -> None:
    """Raises ``Unauthenticated`` once the credential no longer holds."""
    try:
        await authenticator.recheck(authorization, local=local)
    except Unauthenticated:
        raise
    except Exception as error:
        # The token store unreachable says nothing about the token, which held at its
        # last check: the connection and its operations go on, and it is asked again at
        # the next check, rather than the error closing the connection with a traceback.
        log.warning("re-checking a connection's token failed: %s", type(error).__name__)


async def lapse(
    authenticator: Authenticator, authorization: str | None, *, local: bool, interval_s: float
) -> Unauthenticated:
    """Waits until the credential no longer holds, and says why."""
    while True:
        delay = interval_s
        seconds_left = authenticator.seconds_left(authorization)
        if seconds_left is not None:
            delay = min(delay, seconds_left)
        await asyncio.sleep(delay)
        try:
            await recheck(authenticator, authorization, local=local)
        except Unauthenticated as error:
            return error

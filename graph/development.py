"""The development token of ``make serve`` (``AUTH_DEV_TOKEN``): kept in a file beside
the SQLite database, printed at start, and prefilled into GraphiQL; loopback only."""

import json
import logging
from pathlib import Path

from sqlalchemy.engine import make_url
from starlette.requests import HTTPConnection

from graph.auth import is_local, is_loopback
from graph.settings import Settings
from resolvers.tokens import TokenStore

log = logging.getLogger(__name__)

TOKEN_FILE = ".provgraph-dev-token"


def token_file(settings: Settings) -> Path:
    """Beside the SQLite database, so that each database keeps its own token."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).parent / TOKEN_FILE
    return Path(TOKEN_FILE)


async def development_token(settings: Settings, tokens: TokenStore) -> str | None:
    """The development token (``AUTH_DEV_TOKEN``), announced on the console."""
    if not settings.auth_dev_token:
        return None
    if not is_loopback(settings.host):
        log.warning("no development token: HOST %s is not a loopback address", settings.host)
        return None
    path = token_file(settings)
    issued = await tokens.development(path)
    # Printed, not logged: log lines are collected and kept elsewhere; this one is for
    # the developer at the console only.
    print(
        f"\n  Development token (every scope, every organization; kept in {path}):"
        f"\n  Authorization: Bearer {issued.secret}\n",
        flush=True,
    )
    return issued.secret


def graphiql_page(connection: HTTPConnection, page: str) -> str:
    """Strawberry's GraphiQL page, its headers editor prefilled with the development
    token where there is one and the browser is on this host."""
    token: str | None = connection.app.state.services.development_token
    if token is None or not is_local(connection):
        return page
    anchor = "React.useState(parameters.headers)"
    if anchor not in page:
        raise RuntimeError("Strawberry's GraphiQL page has changed: cannot prefill headers")
    # A JavaScript string literal holding the editor's JSON; "</" could end the script.
    literal = json.dumps(json.dumps({"Authorization": f"Bearer {token}"}, indent=2))
    literal = literal.replace("</", "<\\/")
    # GraphiQL sends the editor's headers with every request and, over WebSocket, as the
    # connection_init payload: both then carry the token.
    return page.replace(anchor, f"React.useState(parameters.headers || {literal})", 1)

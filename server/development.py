"""Local development: which requests count as made on this host, the development token
of ``make serve`` (``AUTH_DEV_TOKEN``), printed at start and prefilled into GraphiQL, and
GraphiQL's page and files, all served by this service itself.

A request is local when it comes from a loopback peer, names a loopback ``Host``, carries
no header a proxy adds, and no page of another origin sent it. A loopback peer alone
proves nothing: a reverse proxy or a tunnel on this host, or a web page whose name was
rebound to 127.0.0.1 (DNS rebinding), also connect from loopback. Only local requests
get the development token in GraphiQL's page and may use it, and only they are let in
when ``AUTH_DISABLED`` switches authentication off.
"""

import hashlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from server.settings import Settings

log = logging.getLogger(__name__)

_GRAPHIQL = resources.files(__package__).joinpath("graphiql.html").read_text(encoding="utf-8")
_PLACEHOLDER = re.compile("__(ASSETS|VERSION|PREFILLED_HEADERS|EXAMPLES)__")

ASSETS = Path(__file__).parent / "static" / "graphiql"
"""GraphiQL's files, which ``make assets`` installs from npm (pinned in
server/graphiql/package-lock.json), and in ``examples/`` the frontend's documents
(tests/queries/), which GraphiQL's page opens as tabs."""
ASSETS_MOUNT = "/static/graphiql"

_FORWARDING = frozenset(
    (
        "forwarded",
        "via",
        "x-real-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "x-original-forwarded-for",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
    )
)
"""Headers that proxies add (with every ``X-Forwarded-*``): their presence means a
proxy relayed the request, whoever its client was."""
_SAME_ORIGIN_FETCH = frozenset(("same-origin", "none"))
"""``Sec-Fetch-Site`` values of a page of this origin, or of an address typed by hand."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_authority(authority: str) -> bool:
    """Whether a ``Host`` value (``localhost:8000``, ``[::1]:8000``, ...) names loopback."""
    if not authority or any(c in authority for c in "@/\\?# "):
        return False
    try:
        parts = urlsplit(f"//{authority}")
        hostname, _ = parts.hostname, parts.port  # .port raises on one that is not a port
    except ValueError:
        return False
    return hostname is not None and is_loopback(hostname)


def _forwarded(headers: Headers) -> bool:
    return any(name in _FORWARDING or name.startswith("x-forwarded-") for name in headers)


def _same_origin(headers: Headers, authority: str) -> bool:
    """Whether no page of another origin sent the request (browsers say which did)."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in _SAME_ORIGIN_FETCH:
        return False
    origin = headers.get("origin")
    if origin is None:
        return True  # not sent by a script of some page: curl, a typed address
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == authority.lower()


def client_address(connection: HTTPConnection) -> str:
    """The TCP peer's address: what counts callers without a credential, and refusals."""
    return connection.client.host if connection.client else "unknown"


def is_local(connection: HTTPConnection) -> bool:
    """Whether the request (or WebSocket upgrade) was made on this host, directly: from a
    loopback peer to a loopback ``Host``, through no proxy, from no other origin's page."""
    client, server = connection.scope.get("client"), connection.scope.get("server")
    if not (client and server and is_loopback(str(client[0])) and is_loopback(str(server[0]))):
        return False
    headers = connection.headers
    authority = headers.get("host", "")
    return (
        _loopback_authority(authority)
        and not _forwarded(headers)
        and _same_origin(headers, authority)
    )


def wants_development_token(settings: Settings) -> bool:
    """Whether this process makes a development token (``AUTH_DEV_TOKEN``, loopback HOST)."""
    if not settings.auth_dev_token:
        return False
    if not is_loopback(settings.host):
        log.warning("no development token: HOST %s is not a loopback address", settings.host)
        return False
    return True


def announce(token: str) -> None:
    # Printed, not logged: log lines are collected and kept elsewhere; this one is for
    # the developer at the console only.
    print(
        "\n  Development token (every scope, every organization; valid for this process"
        " only, for requests made on this host):"
        f"\n  Authorization: Bearer {token}"
        "\n  GraphiQL at /graphql and the dashboard at /dashboard use it when opened here.\n",
        flush=True,
    )


def asks_for_graphiql(method: str, parameters: Mapping[str, object], accept: str) -> bool:
    """Whether a request to /graphql is answered with GraphiQL rather than run: a browser's
    GET that names no operation, neither by its document nor by a persisted one's id.
    Strawberry's own test (``should_render_graphql_ide``) looks at ``query`` only, and
    curl's ``Accept: */*`` would get the page for a ``documentId``."""
    return (
        method == "GET"
        and not any(parameters.get(name) for name in ("query", "documentId", "extensions"))
        and ("text/html" in accept or "*/*" in accept)
    )


def graphiql_page(connection: HTTPConnection) -> str:
    """The GraphiQL page (``graphiql.html``, this project's own), its headers editor
    prefilled with the development token where there is one and the request is local.
    GraphiQL sends the editor's headers with every request and, over WebSocket, as the
    ``connection_init`` payload: both then carry the token. Its files come from
    ``ASSETS_MOUNT``, and the frontend's documents are its first tabs."""
    authorization = development_authorization(connection)
    headers = None
    if authorization is not None:
        headers = json.dumps({"Authorization": authorization}, indent=2)
    examples = [
        path.read_text(encoding="utf-8") for path in sorted(ASSETS.glob("examples/*.graphql"))
    ]
    values = {
        "ASSETS": ASSETS_MOUNT,
        "VERSION": assets_version(ASSETS),
        "PREFILLED_HEADERS": script_json(headers),
        "EXAMPLES": script_json(examples),
    }
    # One pass: no filled-in value is searched for placeholders in turn.
    return _PLACEHOLDER.sub(lambda match: values[match[1]], _GRAPHIQL)


def development_authorization(connection: HTTPConnection) -> str | None:
    """The ``Authorization`` value that a page served to this request (GraphiQL's, the
    dashboard's) starts with: the development token's, where there is one and the request
    is local; else None, and the page asks for a token."""
    token: str | None = connection.app.state.services.authenticator.development_token
    return f"Bearer {token}" if token is not None and is_local(connection) else None


def script_json(value: object) -> str:
    # JSON in a script element: with "<" escaped, nothing in it can end the element.
    return json.dumps(value).replace("<", "\\u003c")


def assets_version(directory: Path) -> str:
    """Changes whenever ``make assets`` puts files in ``directory``: a page's asset URLs
    carry it, so that browsers, which keep those files for a year, fetch new ones then."""
    digest = hashlib.sha256()
    for entry in sorted(os.scandir(directory), key=lambda entry: entry.name):
        stat = entry.stat()
        digest.update(f"{entry.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class ImmutableAssets(StaticFiles):
    """A page's files (GraphiQL's, the dashboard's), open to everyone like the page, and
    kept by browsers for a year (their URLs change with them)."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = "public, max-age=31536000, immutable"
        return response

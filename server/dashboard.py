"""The reporting dashboard at /dashboard: fleet reports drawn, report jobs watched, a
device's timeline and the live recipe feed, in the browser, on the public GraphQL API alone.

The page (``dashboard.html``) and its files are served by this service (``make assets``
copies the libraries from npm, pinned in server/dashboard/package-lock.json, beside the
dashboard's own script and styles in ``ASSETS``), so it works offline and no third party
sees who opens it. Its GraphQL documents are the frontend's own (tests/queries/Dashboard*),
taken from the committed trusted documents manifest: the page sends them as they are there,
so they run under PERSISTED_QUERIES=only too. Its token is GraphiQL's: the development
token for a local request, else one the user enters.
"""

import re
from functools import cache
from importlib import resources
from pathlib import Path

from graphql import OperationDefinitionNode, parse
from starlette.requests import Request
from starlette.responses import HTMLResponse

from server.development import assets_version, development_authorization, script_json
from server.persisted import COMMITTED_MANIFEST, read_manifest

PATH = "/dashboard"
ASSETS = Path(__file__).parent / "static" / "dashboard"
"""The dashboard's script and styles, and the libraries ``make assets`` installs beside
them from npm."""
ASSETS_MOUNT = "/static/dashboard"
DOCUMENT_PREFIX = "Dashboard"
"""The operations of the manifest that are the dashboard's."""

_PAGE = resources.files(__package__).joinpath("dashboard.html").read_text(encoding="utf-8")
_PLACEHOLDER = re.compile("__(ASSETS|VERSION|AUTHORIZATION|DOCUMENTS)__")
# The page's own content security policy: nothing but this origin (and the empty icon),
# so that a library that tried to reach elsewhere could not.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@cache
def documents() -> dict[str, str]:
    """The dashboard's documents by operation name, from the committed manifest."""
    named = {}
    for text in read_manifest(COMMITTED_MANIFEST).values():
        for definition in parse(text).definitions:
            if isinstance(definition, OperationDefinitionNode) and definition.name:
                named[definition.name.value] = text
    return {name: text for name, text in named.items() if name.startswith(DOCUMENT_PREFIX)}


async def dashboard(request: Request) -> HTMLResponse:
    values = {
        "ASSETS": ASSETS_MOUNT,
        "VERSION": assets_version(ASSETS),
        "AUTHORIZATION": script_json(development_authorization(request)),
        "DOCUMENTS": script_json(documents()),
    }
    # One pass: no filled-in value is searched for placeholders in turn.
    page = _PLACEHOLDER.sub(lambda match: values[match[1]], _PAGE)
    # The page may carry the development token: no cache keeps it.
    headers = {"cache-control": "no-store", "content-security-policy": _POLICY}
    return HTMLResponse(page, headers=headers)

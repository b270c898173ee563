"""Authentication at the edge: who is calling, before anything runs.

HTTP: every request needs ``Authorization: Bearer <token>`` except the health checks,
the embedded simulator, CORS preflights, and the pages of GraphiQL and the dashboard with
their files; without a usable credential the answer is 401 with a GraphQL error coded
``UNAUTHENTICATED``.

WebSocket: the upgrade is accepted either way, and ``connection_init`` decides. Its
payload's ``Authorization`` (or ``authToken``) wins over the upgrade request's header;
with neither usable the socket closes as its protocol says (graphql-transport-ws: 4403;
graphql-ws: ``connection_error``, then a close).
"""

import logging
from collections.abc import Mapping

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.exceptions import ConnectionRejectionError

from graph.context import Context
from models.errors import ErrorCode
from models.principal import ANONYMOUS, Principal
from resolvers.auth import Authenticator, Unauthenticated
from resolvers.identity import JwtVerifier
from server import dashboard
from server.development import (
    ASSETS_MOUNT,
    asks_for_graphiql,
    client_address,
    is_local,
    is_loopback,
)
from server.ratelimit import RateLimited, RateLimits, too_many_requests
from server.responses import error_response, route_path
from server.services import services_of, services_of_context
from server.settings import Settings
from soap.simulator import MOUNT as SIMULATOR_MOUNT

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset(("/healthz", "/readyz", "/metrics", dashboard.PATH))


def check_settings(settings: Settings) -> None:
    """Refuses to start with authentication switched off on anything but loopback."""
    if settings.auth_disabled and not is_loopback(settings.host):
        raise ValueError(
            f"AUTH_DISABLED is only allowed with a loopback HOST (127.0.0.1, ::1, "
            f"localhost), not {settings.host!r}: create a token instead "
            "(provgraph tokens create)."
        )


def jwt_verifier(settings: Settings) -> JwtVerifier | None:
    """The verifier of the identity provider's JWTs, if one is configured."""
    if not settings.auth_jwt_issuer:
        return None
    if not settings.auth_jwt_audience:
        raise ValueError("AUTH_JWT_ISSUER is set, so AUTH_JWT_AUDIENCE must be too.")
    if bool(settings.auth_jwt_jwks_url) == bool(settings.auth_jwt_public_key):
        raise ValueError(
            "AUTH_JWT_ISSUER is set, so exactly one of AUTH_JWT_JWKS_URL and "
            "AUTH_JWT_PUBLIC_KEY must be too."
        )
    return JwtVerifier(
        issuer=settings.auth_jwt_issuer,
        audience=settings.auth_jwt_audience,
        algorithms=[a.strip() for a in settings.auth_jwt_algorithms.split(",") if a.strip()],
        public_key=settings.auth_jwt_public_key,
        jwks_url=settings.auth_jwt_jwks_url,
        organizations_claim=settings.auth_jwt_organizations_claim,
        scopes_claim=settings.auth_jwt_scopes_claim,
        account_id_claim=settings.auth_jwt_account_id_claim,
        leeway_s=settings.auth_jwt_leeway_s,
        jwks_timeout_s=settings.auth_jwt_jwks_timeout_s,
        jwks_refetch_floor_s=settings.auth_jwt_jwks_refetch_floor_s,
        jwks_max_age_s=settings.auth_jwt_jwks_max_age_s,
    )


def principal_of(connection: HTTPConnection) -> Principal:
    """The caller ``Authentication`` resolved for this request (ANONYMOUS on open paths)."""
    principal: Principal = getattr(connection.state, "principal", ANONYMOUS)
    return principal


async def _authenticate(connection: HTTPConnection, authorization: str | None) -> Principal:
    authenticator: Authenticator = services_of(connection).authenticator
    limits: RateLimits = services_of(connection).rate_limits
    # The bind is checked at startup, but a proxy, a tunnel or a rebound name reaches a
    # loopback bind too: switched-off authentication and the development token serve
    # only requests made on this host directly.
    return await limits.authenticate(
        client_address(connection),
        lambda: authenticator.authenticate(authorization, local=is_local(connection)),
    )


def _graphiql_page(connection: HTTPConnection) -> bool:
    # The page alone is open; the view answers with it by the very same rule.
    return route_path(connection.scope) == "/graphql" and asks_for_graphiql(
        connection.scope["method"], connection.query_params, connection.headers.get("accept", "")
    )


def _open(connection: HTTPConnection) -> bool:
    path = route_path(connection.scope)
    return (
        connection.scope["method"] == "OPTIONS"
        or path in OPEN_PATHS
        or path.startswith(
            (SIMULATOR_MOUNT + "/", ASSETS_MOUNT + "/", dashboard.ASSETS_MOUNT + "/")
        )
        or _graphiql_page(connection)
    )


def unauthenticated(error: Unauthenticated) -> Response:
    challenge = 'Bearer error="invalid_token"' if error.presented else "Bearer"
    return error_response(
        401, error.reason, ErrorCode.UNAUTHENTICATED, headers={"WWW-Authenticate": challenge}
    )


def _log_refusal(connection: HTTPConnection, error: Unauthenticated) -> None:
    log.info(
        "unauthenticated %s from %s: %s",
        route_path(connection.scope),
        client_address(connection),
        error.reason,
    )


class Authentication:
    """Resolves the caller of every HTTP request into ``request.state.principal``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        if not _open(connection):
            try:
                principal = await _authenticate(connection, connection.headers.get("authorization"))
            except RateLimited as limited:
                await too_many_requests(limited)(scope, receive, send)
                return
            except Unauthenticated as error:
                _log_refusal(connection, error)
                await unauthenticated(error)(scope, receive, send)
                return
            connection.state.principal = principal
        await self.app(scope, receive, send)


async def upgrade_principal(connection: HTTPConnection) -> Principal:
    """The caller the WebSocket upgrade request's header names; ANONYMOUS until
    ``connection_init`` says otherwise."""
    authorization = connection.headers.get("authorization")
    authenticator: Authenticator = services_of(connection).authenticator
    if authorization is None and not authenticator.disabled:
        return ANONYMOUS
    try:
        return await _authenticate(connection, authorization)
    except RateLimited:
        return ANONYMOUS  # not even checked: connection_init must authenticate instead
    except Unauthenticated as error:
        _log_refusal(connection, error)
        return ANONYMOUS


def _init_authorization(params: Mapping[str, object] | None) -> str | None:
    """The Authorization a ``connection_init`` payload carries, in either common form."""
    for key, value in (params or {}).items():
        if not isinstance(value, str):
            continue
        if key.lower() == "authorization":
            return value
        if key.lower() == "authtoken":
            return value if value.lower().startswith("bearer ") else f"Bearer {value}"
    return None


async def authenticate_connection_init(context: Context) -> None:
    """Sets the socket's caller from ``connection_init``, or rejects the connection
    (``RateLimited`` when its address has had too many credentials refused)."""
    authenticator = services_of_context(context).authenticator
    # Switched off, the upgrade already decided (loopback connections only).
    authorization = (
        None if authenticator.disabled else _init_authorization(context.connection_params)
    )
    try:
        if authorization is not None:
            context.principal = await services_of_context(context).rate_limits.authenticate(
                context.client_address,
                lambda: authenticator.authenticate(authorization, local=context.local),
            )
            context.authorization = authorization
        elif context.principal is ANONYMOUS:
            raise Unauthenticated(
                "Authentication required: send Authorization in connection_init.",
                presented=False,
            )
    except Unauthenticated as error:
        log.info("unauthenticated WebSocket: %s", error.reason)
        raise ConnectionRejectionError(
            {"message": error.reason, "extensions": {"code": ErrorCode.UNAUTHENTICATED}}
        ) from error

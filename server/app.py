"""The Starlette application: health endpoints, the embedded simulator, the GraphQL API."""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from graph.schema import schema
from resolvers.health import is_ready, readiness
from server import dashboard
from server.auth import Authentication, check_settings, jwt_verifier
from server.development import ASSETS, ASSETS_MOUNT, ImmutableAssets, announce
from server.exports import FAILURES_HEADER, history_csv, report_csv
from server.http import GraphQLApp
from server.metrics import metrics
from server.middleware.body_limit import BodyLimit
from server.middleware.deadline import Deadline
from server.middleware.error_shape import ErrorShape
from server.middleware.request_context import REQUEST_ID_HEADER, RequestContext
from server.middleware.tracing import Tracing
from server.persisted import trusted_documents
from server.ratelimit import RateLimit, RateLimits
from server.services import open_services, services_of
from server.settings import Settings
from server.sse import TOKEN_HEADER
from soap.simulator import MOUNT as SIMULATOR_MOUNT
from soap.simulator.server import Simulator

log = logging.getLogger(__name__)

DEFAULT_CURSOR_SECRET = Settings.model_fields["cursor_secret"].default
"""Good for development only: it is in the source for anyone to read."""


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    services = services_of(request)
    settings = services.settings
    checks = await readiness(
        settings.upstream_url, services.engine, settings.cache_url, settings.broker_url
    )
    circuit = services.upstream.resilience.breaker.state
    ready = is_ready(checks, circuit)
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks, "circuit": circuit},
        status_code=200 if ready else 503,
    )


def create_app(
    settings: Settings | None = None,
    simulator: Simulator | None = None,
    *,
    clock: Callable[[], float] | None = None,
) -> Starlette:
    """The whole service. Without UWS_BASE_URL it mounts (and talks to) a simulator.

    ``clock`` stands in for time (cache freshness, the default range end, the upstream
    circuit's cool-down, a WebSocket's JWT expiry) in tests.
    """
    settings = settings or Settings()
    settings.upstream_credentials()  # fails now, not at the first request, when unset
    check_settings(settings)
    trusted_documents(settings)  # a manifest that cannot be used fails now, in one line
    jwts = jwt_verifier(settings)
    rate_limits = RateLimits(
        rate_limit=settings.rate_limit,
        auth_failure_limit=settings.auth_failure_limit,
        storage_url=settings.rate_limit_storage_url,
        max_socket_operations=settings.max_subscriptions_per_credential,
    )
    if not settings.auth_dev_token and settings.cursor_secret == DEFAULT_CURSOR_SECRET:
        log.warning(
            "CURSOR_SECRET is the built-in default, which anyone can read in the source "
            "and use to forge cursors: set a secret of your own (the same on every replica)"
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings, rate_limits, jwts, clock) as services:
            app.state.services = services
            if services.authenticator.development_token is not None:
                announce(services.authenticator.development_token)
            try:
                yield
            finally:
                if jwts is not None:
                    await jwts.aclose()

    return Starlette(
        routes=_routes(settings, simulator),
        lifespan=lifespan,
        middleware=_middleware(settings, rate_limits),
    )


def _routes(settings: Settings, simulator: Simulator | None) -> list[BaseRoute]:
    # Browsers' cross-origin handshakes are refused unless ALLOWED_ORIGINS lists the origin.
    graphql = GraphQLApp(
        schema,
        keep_alive_s=settings.keep_alive_s,
        allowed_origins=settings.allowed_origins,
    )
    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        # PUT and DELETE: GraphQL over SSE's single connection mode (server/sse.py).
        Route("/graphql", graphql, methods=["GET", "POST", "PUT", "DELETE"]),
        Mount(ASSETS_MOUNT, app=ImmutableAssets(directory=ASSETS)),
        Route(dashboard.PATH, dashboard.dashboard),
        Mount(dashboard.ASSETS_MOUNT, app=ImmutableAssets(directory=dashboard.ASSETS)),
        Route("/exports/provisioning-history.csv", history_csv),
        Route("/exports/provisioning-report.csv", report_csv),
        WebSocketRoute("/graphql", graphql),
    ]
    if settings.uses_simulator:
        simulator = simulator or Simulator(control=settings.simulator_control)
        routes.append(Mount(SIMULATOR_MOUNT, app=simulator.app))
    return routes


def _middleware(settings: Settings, rate_limits: RateLimits) -> list[Middleware]:
    return [
        Middleware(RequestContext, quiet=(SIMULATOR_MOUNT,)),
        Middleware(Tracing, exempt=(SIMULATOR_MOUNT,)),
        Middleware(ErrorShape, exempt=(SIMULATOR_MOUNT,)),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        Middleware(Deadline, seconds=settings.request_deadline_s),
        Middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            # PUT, DELETE and the token header: GraphQL over SSE's single connection mode.
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["authorization", "content-type", REQUEST_ID_HEADER, TOKEN_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "retry-after", FAILURES_HEADER],
            max_age=600,
        ),
        Middleware(Authentication),
        # After authentication, which names the caller the limit counts by.
        Middleware(
            RateLimit,
            limits=rate_limits,
            paths=("/graphql", "/exports/"),
        ),
    ]

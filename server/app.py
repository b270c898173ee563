"""The Starlette application: health endpoints, the embedded simulator, the GraphQL API."""

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from graph.schema import schema
from resolvers.auth import Authenticator
from resolvers.cache import UpstreamCache, backend_from_url
from resolvers.cursors import CursorCodec
from resolvers.database import create_engine, migrate, sessions
from resolvers.events import EventHub, broker_from_url
from resolvers.health import is_ready, readiness
from resolvers.jobs import ReportJobs
from resolvers.recipes import RecipeStore
from resolvers.resilience import CircuitBreaker, Resilience, RetryPolicy, per_second_limiter
from resolvers.tokens import TokenStore
from resolvers.upstream import CachePolicy, Upstream
from server.auth import Authentication, check_settings, jwt_verifier
from server.development import announce, wants_development_token
from server.exports import FAILURES_HEADER, history_csv, report_csv
from server.http import GraphQLApp
from server.metrics import metrics
from server.middleware.body_limit import BodyLimit
from server.middleware.deadline import Deadline
from server.middleware.error_shape import ErrorShape
from server.middleware.request_context import REQUEST_ID_HEADER, RequestContext
from server.ratelimit import RateLimit, RateLimits
from server.services import ServerServices, services_of
from server.settings import SIMULATOR_MOUNT, Settings
from soap.client import UwsClient
from soap.errors import UpstreamError
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
    credentials = settings.upstream_credentials()
    check_settings(settings)
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
        uws = await UwsClient.open(
            settings.upstream_url,
            timeout_s=settings.uws_timeout_s,
            max_in_flight=settings.upstream_concurrency,
            **credentials,
        )
        engine = create_engine(settings.database_url)
        if engine.dialect.name == "sqlite":
            await migrate(engine)  # the embedded default sets itself up
        recipes = RecipeStore(sessions(engine))
        tokens = TokenStore(sessions(engine))
        hub = EventHub(
            recipes,
            broker_from_url(settings.broker_url),
            queue_size=settings.subscriber_queue_size,
            poll_s=settings.events_poll_s,
            retention=timedelta(seconds=settings.outbox_retention_s),
        )
        await hub.start()
        retry = RetryPolicy(
            settings.upstream_retry_attempts,
            settings.upstream_retry_base_delay_s,
            settings.upstream_retry_max_delay_s,
        )
        resilience = Resilience(
            retry,
            CircuitBreaker(
                settings.upstream_circuit_threshold,
                settings.upstream_circuit_cooldown_s,
                clock or time.monotonic,
            ),
            per_second_limiter(settings.upstream_calls_per_second)
            if settings.upstream_calls_per_second is not None
            else None,
        )
        cache = UpstreamCache(
            backend_from_url(settings.cache_url, settings.cache_max_bytes),
            # Other replicas wait out a load this long: every attempt and backoff of it.
            lock_ttl_s=retry.attempts * (settings.uws_timeout_s + retry.max_delay_s) + 1,
            stale_for_s=settings.cache_stale_for_s,
            clock=clock or time.time,
        )
        policy = CachePolicy(
            settle_s=settings.cache_settle_s,
            immutable_ttl_s=settings.cache_ttl_immutable_s,
            recent_ttl_s=settings.cache_ttl_recent_s,
            device_list_ttl_s=settings.device_list_ttl_s,
        )
        upstream = Upstream(uws, cache, policy, resilience, clock or time.time)
        jobs = ReportJobs(
            sessions(engine),
            upstream,
            settings.upstream_concurrency,
            max_per_owner=settings.max_report_jobs_per_credential,
        )
        authenticator = Authenticator(
            tokens,
            jwts,
            disabled=settings.auth_disabled,
            development=wants_development_token(settings),
            jwt_leeway_s=settings.auth_jwt_leeway_s,
            clock=clock or time.time,
        )
        app.state.services = ServerServices(
            upstream=upstream,
            cursors=CursorCodec(settings.cursor_secret.get_secret_value()),
            recipes=recipes,
            hub=hub,
            jobs=jobs,
            limits=settings.limits(),
            settings=settings,
            uws=uws,
            engine=engine,
            authenticator=authenticator,
            rate_limits=rate_limits,
        )
        if authenticator.development_token is not None:
            announce(authenticator.development_token)
        try:
            yield
        finally:
            await jobs.stop()
            if jwts is not None:
                await jwts.aclose()
            await hub.stop()
            await cache.close()
            try:
                await uws.log_out()
            except UpstreamError as exc:
                log.info("upstream log-out at shutdown failed: %s", exc)
            await uws.aclose()
            await engine.dispose()

    # Browsers' cross-origin handshakes are refused unless ALLOWED_ORIGINS lists the origin.
    graphql = GraphQLApp(
        schema, keep_alive=True, keep_alive_interval=15, allowed_origins=settings.allowed_origins
    )
    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        Route("/exports/provisioning-history.csv", history_csv),
        Route("/exports/provisioning-report.csv", report_csv),
        WebSocketRoute("/graphql", graphql),
    ]
    if settings.uses_simulator:
        simulator = simulator or Simulator(control=settings.simulator_control)
        routes.append(Mount(SIMULATOR_MOUNT, app=simulator.app))
    middleware = [
        Middleware(RequestContext, quiet=(SIMULATOR_MOUNT,)),
        Middleware(ErrorShape, exempt=(SIMULATOR_MOUNT,)),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        Middleware(Deadline, seconds=settings.request_deadline_s),
        Middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", REQUEST_ID_HEADER],
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
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)

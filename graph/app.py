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

from graph.auth import Authentication, check_settings, jwt_verifier
from graph.context import Services
from graph.development import development_token
from graph.exports import history_csv, report_csv
from graph.http import GraphQLApp
from graph.middleware import REQUEST_ID_HEADER, BodyLimit, Deadline, RequestContext
from graph.observability import metrics
from graph.ratelimit import RateLimit
from graph.schema import schema
from graph.settings import SIMULATOR_MOUNT, Settings
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
from soap.client import UwsClient
from soap.errors import UpstreamError
from soap.simulator.server import Simulator

log = logging.getLogger(__name__)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    services = _services(request)
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
    circuit's cool-down) in tests.
    """
    settings = settings or Settings()
    credentials = settings.upstream_credentials()
    check_settings(settings)
    jwts = jwt_verifier(settings)

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
            per_second_limiter(settings.upstream_calls_per_second),
        )
        cache = UpstreamCache(
            backend_from_url(settings.cache_url, settings.cache_max_events),
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
        jobs = ReportJobs(sessions(engine), upstream, settings.upstream_concurrency)
        app.state.services = Services(
            settings=settings,
            uws=uws,
            upstream=upstream,
            engine=engine,
            cursors=CursorCodec(settings.cursor_secret.get_secret_value()),
            recipes=recipes,
            hub=hub,
            jobs=jobs,
            authenticator=Authenticator(tokens, jwts, disabled=settings.auth_disabled),
            development_token=await development_token(settings, tokens),
        )
        try:
            yield
        finally:
            await jobs.stop()
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
        routes.append(Mount(SIMULATOR_MOUNT, app=(simulator or Simulator()).app))
    middleware = [
        Middleware(RequestContext, quiet=(SIMULATOR_MOUNT,)),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        Middleware(Deadline, seconds=settings.request_deadline_s),
        Middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "retry-after"],
            max_age=600,
        ),
        Middleware(Authentication),
        # After authentication, which names the caller the limit counts by.
        Middleware(
            RateLimit,
            limit=settings.rate_limit,
            storage_url=settings.rate_limit_storage_url,
            paths=("/graphql", "/exports/"),
        ),
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)

"""The Starlette application: health endpoints, the embedded simulator, the GraphQL API."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from graph.context import Services
from graph.exports import history_csv, report_csv
from graph.http import GraphQLApp
from graph.schema import schema
from graph.settings import SIMULATOR_MOUNT, Settings
from resolvers.cache import UpstreamCache, backend_from_url
from resolvers.cursors import CursorCodec
from resolvers.database import create_engine, migrate, sessions
from resolvers.events import EventHub, broker_from_url
from resolvers.health import readiness
from resolvers.jobs import ReportJobs
from resolvers.recipes import RecipeStore
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
    ready = all(state.startswith("ok") for state in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


def create_app(settings: Settings | None = None, simulator: Simulator | None = None) -> Starlette:
    """The whole service. Without UWS_BASE_URL it mounts (and talks to) a simulator."""
    settings = settings or Settings()
    credentials = settings.upstream_credentials()

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
        hub = EventHub(
            recipes,
            broker_from_url(settings.broker_url),
            queue_size=settings.subscriber_queue_size,
            poll_s=settings.events_poll_s,
            retention=timedelta(seconds=settings.outbox_retention_s),
        )
        await hub.start()
        cache = UpstreamCache(
            backend_from_url(settings.cache_url, settings.cache_max_events),
            lock_ttl_s=settings.uws_timeout_s + 1,
        )
        policy = CachePolicy(
            settle_s=settings.cache_settle_s,
            immutable_ttl_s=settings.cache_ttl_immutable_s,
            recent_ttl_s=settings.cache_ttl_recent_s,
            device_list_ttl_s=settings.device_list_ttl_s,
        )
        upstream = Upstream(uws, cache, policy)
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

    graphql = GraphQLApp(schema, keep_alive=True, keep_alive_interval=15)
    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        Route("/exports/provisioning-history.csv", history_csv),
        Route("/exports/provisioning-report.csv", report_csv),
        WebSocketRoute("/graphql", graphql),
    ]
    if settings.uses_simulator:
        routes.append(Mount(SIMULATOR_MOUNT, app=(simulator or Simulator()).app))
    return Starlette(routes=routes, lifespan=lifespan)

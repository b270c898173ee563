"""The Starlette application: health endpoints, the embedded simulator, the GraphQL API."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from graph.settings import SIMULATOR_MOUNT, Settings
from resolvers.health import readiness
from soap.client import UwsClient
from soap.errors import UpstreamError
from soap.simulator.server import Simulator

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What request handlers share for the process's lifetime."""

    settings: Settings
    uws: UwsClient
    engine: AsyncEngine


def _services(request: Request) -> Services:
    return request.app.state.services


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
            settings.upstream_url, timeout_s=settings.uws_timeout_s, **credentials
        )
        engine = create_async_engine(settings.database_url)
        app.state.services = Services(settings, uws, engine)
        try:
            yield
        finally:
            try:
                await uws.log_out()
            except UpstreamError as exc:
                log.info("upstream log-out at shutdown failed: %s", exc)
            await uws.aclose()
            await engine.dispose()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    if settings.uses_simulator:
        routes.append(Mount(SIMULATOR_MOUNT, app=(simulator or Simulator()).app))
    return Starlette(routes=routes, lifespan=lifespan)

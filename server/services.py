"""What the server holds for the process's lifetime, around the GraphQL layer's services."""

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from graph.context import Context, Services
from graph.tracing import trace_operations
from models.principal import Principal
from resolvers.auth import Authenticator
from resolvers.budget import LocalBudget, budget_from_url
from resolvers.cache import UpstreamCache, backend_from_url
from resolvers.cursors import CursorCodec
from resolvers.database import create_engine, migrate, sessions
from resolvers.events import EventHub, broker_from_url
from resolvers.identity import JwtVerifier
from resolvers.job_chunks import ChunkWork
from resolvers.job_queue import QueueRunner
from resolvers.jobs import InProcessRunner, JobRunner, ReportJobs
from resolvers.recipes import RecipeStore
from resolvers.resilience import CircuitBreaker, Resilience, RetryPolicy, per_second_limiter
from resolvers.tokens import TokenStore
from resolvers.upstream import CachePolicy, Upstream
from server.development import client_address, is_local, wants_development_token
from server.persisted import PersistedQueries, persisted_queries
from server.ratelimit import RateLimits
from server.settings import Settings
from server.streams import HttpStreams
from soap.client import UwsClient
from soap.errors import UpstreamError

log = logging.getLogger(__name__)

GC_THRESHOLDS = (10_000, 20, 10)
"""CPython's collector generations while the service runs (its defaults: 700, 10, 10).
What lives for one delivery or one page (a fan-out's per-socket sends, a page's edges)
outlived the default young generation and was promoted to the oldest, whose collection
walks every connection's state: with 1,000 subscribers, a ~200 ms pause every ~100
events (`bench/fanout.py`). With 10,000 none came in 400 events. A larger young
generation holds more garbage between collections: over ten more full reads in
`bench/whole_history.py` the resident size grew 2.4 MiB at 50,000 (its bar is 2 MiB),
1 MiB at 10,000."""


@dataclass
class ServerServices(Services):
    settings: Settings
    uws: UwsClient
    engine: AsyncEngine
    authenticator: Authenticator
    rate_limits: RateLimits
    streams: HttpStreams
    persisted: PersistedQueries


def services_of(connection: HTTPConnection) -> ServerServices:
    services: ServerServices = connection.app.state.services
    return services


def services_of_context(context: Context) -> ServerServices:
    """The server's services behind a GraphQL context, which the server made."""
    services = context.services
    if not isinstance(services, ServerServices):
        raise TypeError("a GraphQL context made outside the server")
    return services


def context_for(connection: HTTPConnection, principal: Principal) -> Context:
    return Context(
        services=services_of(connection),
        principal=principal,
        local=is_local(connection),
        client_address=client_address(connection),
    )


def tracer_provider(settings: Settings) -> TracerProvider | None:
    """The OpenTelemetry SDK as OTEL_TRACES_EXPORTER sets it up; None for none."""
    if settings.otel_traces_exporter == "none":
        return None
    # The exporters read their OTEL_EXPORTER_OTLP_* variables themselves, and the
    # provider OTEL_TRACES_SAMPLER and OTEL_RESOURCE_ATTRIBUTES.
    if settings.otel_traces_exporter == "otlp":
        # Imported only when chosen: with protobuf and requests, it adds a tenth of a
        # second to every start.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    # In batches from a thread of the SDK's: never an export on the event loop.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


@asynccontextmanager
async def open_services(
    settings: Settings,
    rate_limits: RateLimits,
    jwts: JwtVerifier | None,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[ServerServices]:
    """The composition root: every service the process shares, built from ``settings``
    (``clock`` stands in for time in tests), and closed again when the block ends."""
    credentials = settings.upstream_credentials()
    budget = budget_from_url(
        settings.upstream_budget_url,
        settings.upstream_concurrency,
        settings.upstream_calls_per_second,
        # A lease outlives the longest exchange it covers, with time to spare.
        lease_s=settings.uws_timeout_s + 5,
    )
    uws = await UwsClient.open(
        settings.upstream_url,
        timeout_s=settings.uws_timeout_s,
        # The budget is the one cap on exchanges in flight, interactive callers first.
        in_flight=budget.gate,
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
        # A shared budget counts the account's call rate itself.
        per_second_limiter(settings.upstream_calls_per_second)
        if settings.upstream_calls_per_second is not None and isinstance(budget, LocalBudget)
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
    upstream = Upstream(
        uws, cache, policy, resilience, clock or time.time, settings.history_read_ahead
    )
    jobs = ReportJobs(
        sessions(engine),
        job_runner(settings, sessions(engine), upstream),
        max_per_owner=settings.max_report_jobs_per_credential,
    )
    await jobs.open()
    authenticator = Authenticator(
        tokens,
        jwts,
        disabled=settings.auth_disabled,
        development=wants_development_token(settings),
        jwt_leeway_s=settings.auth_jwt_leeway_s,
        clock=clock or time.time,
    )
    services = ServerServices(
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
        streams=HttpStreams(authenticator, rate_limits, settings.ws_recheck_s),
        persisted=persisted_queries(settings, cache.backend),
    )
    tracing = tracer_provider(settings)
    if tracing is not None:
        # The process's provider: OpenTelemetry keeps the first one set.
        trace.set_tracer_provider(tracing)
        trace_operations(True)
    # What startup made (modules, schema, WSDLs: ~200,000 objects) lives as long as the
    # process: frozen, CPython's full collections no longer walk it each time. A cold
    # read of a long history caches enough to set one off, which took ~100 ms then.
    gc.collect()
    gc.freeze()
    defaults = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield services
    finally:
        gc.set_threshold(*defaults)
        gc.unfreeze()
        await jobs.stop()
        await hub.stop()
        await upstream.aclose()
        await cache.close()
        try:
            await uws.log_out()
        except UpstreamError as exc:
            log.info("upstream log-out at shutdown failed: %s", exc)
        await uws.aclose()
        await budget.close()  # after the log-out, which passes it
        await engine.dispose()
        if tracing is not None:
            trace_operations(False)
            # Exports the spans still queued, which may wait on the collector.
            await asyncio.to_thread(tracing.shutdown)


def job_runner(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    upstream: Upstream,
    run_worker: bool | None = None,
) -> JobRunner:
    """The job queue's runner with ``REPORT_QUEUE_URL``, else the in-process one; with a
    worker of this process's unless ``run_worker`` (else ``REPORT_WORKER``) says not."""
    work = ChunkWork(
        sessions, upstream, settings.upstream_concurrency, settings.report_chunk_devices
    )
    if settings.report_queue_url is None:
        return InProcessRunner(
            sessions,
            work,
            settings.report_chunk_attempts,
            settings.report_worker_chunks,
            # A chunk's tail holds at least one call; more tails than calls allowed in
            # flight would only wait.
            open_chunks=settings.upstream_concurrency,
        )
    return QueueRunner(
        settings.report_queue_url,
        sessions,
        work,
        attempts=settings.report_chunk_attempts,
        lease_s=settings.report_chunk_lease_s,
        worker_concurrency=settings.report_worker_chunks,
        run_worker=settings.report_worker if run_worker is None else run_worker,
    )


def streams_of(app: Starlette) -> HttpStreams | None:
    """The app's HTTP streams while it is serving; None before it started or after."""
    services: ServerServices | None = getattr(app.state, "services", None)
    return None if services is None else services.streams

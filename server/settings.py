"""All configuration, read once from the environment and an optional ``.env`` file."""

from pathlib import Path
from typing import Annotated, Literal

from limits import parse
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from graph.context import Limits
from soap.simulator import MOUNT as SIMULATOR_MOUNT

SIMULATOR_USERNAME = "demo"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Each field's group is the README table it is listed in (server/settings_doc.py).
    uws_base_url: str | None = Field(
        default=None,
        description="The UWS v2 base URL, e.g. `https://<host>/api/v2`; the client calls "
        "`<base>/DeviceService.svc` and `<base>/SessionService.svc`. Unset: the embedded "
        "simulator, served by this process at `http://<HOST>:<PORT>/simulator/api/v2`.",
        json_schema_extra={"group": "service"},
    )
    uws_token: SecretStr | None = Field(
        default=None,
        description="A fixed UWS session token (sent as the `<v2:token>` SOAP header); takes "
        "precedence over a login.",
        json_schema_extra={"group": "service"},
    )
    uws_username: str | None = Field(
        default=None,
        description="UWS login user name, used when no token is set; `demo` with the "
        "embedded simulator.",
        json_schema_extra={"group": "service"},
    )
    uws_password: SecretStr | None = Field(
        default=None,
        description="UWS login password; `demo` with the embedded simulator.",
        json_schema_extra={"group": "service"},
    )
    uws_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Upper bound on one upstream call, whole exchange included, seconds.",
        json_schema_extra={"group": "service"},
    )
    database_url: str = Field(
        default="sqlite+aiosqlite:///./provgraph.db",
        description="SQLAlchemy async URL; `postgresql+asyncpg://user@host/db` for "
        "PostgreSQL. SQLite is migrated at start; PostgreSQL needs `provgraph migrate`.",
        json_schema_extra={"group": "service"},
    )
    cache_url: str = Field(
        default="memory://",
        description="Where upstream answers are cached: `memory://` (this process, bounded "
        "by `CACHE_MAX_BYTES`) or `redis://host:port/db`, shared by every replica.",
        json_schema_extra={"group": "service"},
    )
    broker_url: str = Field(
        default="memory://",
        description="How replicas tell each other of new events: `memory://` (a single "
        "replica) or `redis://host:port/db`.",
        json_schema_extra={"group": "service"},
    )
    cache_max_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bound of the in-process cache in bytes of memory held (an estimate, "
        "within a few percent for parsed replies: about 530 bytes an event, so 128 MiB "
        "holds some 250,000 events); least recently used entries go first.",
        json_schema_extra={"group": "service"},
    )
    cache_settle_s: float = Field(
        default=3600.0,
        ge=0,
        description="A window whose range ended this long ago is taken as final, seconds.",
        json_schema_extra={"group": "service"},
    )
    cache_ttl_immutable_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="How long a final window stays cached, seconds.",
        json_schema_extra={"group": "service"},
    )
    cache_ttl_recent_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a window that touches the present stays cached, seconds; "
        "also the rounding of the default `occurredBefore`.",
        json_schema_extra={"group": "service"},
    )
    device_list_ttl_s: float = Field(
        default=300.0,
        gt=0,
        description="How long a GetDeviceList page stays cached, seconds.",
        json_schema_extra={"group": "service"},
    )
    cursor_secret: SecretStr = Field(
        default=SecretStr("provisioning-graph-development-cursor-secret"),
        description="Signs cursors. In production set one secret of your own, the same on "
        "every replica: the built-in one is in the source for anyone to read (a warning "
        "is logged at start while it is in use, unless `AUTH_DEV_TOKEN` is on).",
        json_schema_extra={"group": "service"},
    )
    upstream_concurrency: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Upstream calls in flight at once, for the whole process, or for every "
        "replica together on a shared `UPSTREAM_BUDGET_URL` (reports read this many "
        "devices at a time).",
        json_schema_extra={"group": "service"},
    )
    history_read_ahead: int = Field(
        default=2,
        ge=0,
        le=64,
        description="Client reads read ahead at once, for the whole process: when a client "
        "pages forward with `after` and its next page of the same size needs a window not "
        "read yet, that window and the one after are read while the client takes this page, "
        "by one chain of calls per client read that each page lets go on. A client that "
        "stops there leaves up to two calls spent for nothing (within its request's "
        "`MAX_UPSTREAM_CALLS_PER_REQUEST`). 0: never.",
        json_schema_extra={"group": "service"},
    )
    outbox_retention_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="How long emitted events are kept for replay (a subscription's "
        "`after`), seconds.",
        json_schema_extra={"group": "service"},
    )
    subscriber_queue_size: int = Field(
        default=1000,
        ge=1,
        description="Events one subscriber may fall behind before it is dropped.",
        json_schema_extra={"group": "service"},
    )
    events_poll_s: float = Field(
        default=5.0,
        gt=0,
        description="How often each replica also reads the outbox unprompted, seconds, so "
        "that a broker outage delays events but never loses them.",
        json_schema_extra={"group": "service"},
    )
    upstream_retry_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts per upstream call, the first included. Only transient "
        "failures are retried: connection errors, HTTP 502/503/504, timeouts; SOAP "
        "faults, HTTP 500 and unusable replies are not.",
        json_schema_extra={"group": "upstream"},
    )
    upstream_retry_base_delay_s: float = Field(
        default=0.2,
        ge=0,
        description="Backoff before the first retry at most, seconds; doubles with each "
        "retry, and each wait is drawn at random below it (full jitter).",
        json_schema_extra={"group": "upstream"},
    )
    upstream_retry_max_delay_s: float = Field(
        default=2.0,
        ge=0,
        description="Cap on the backoff before any one retry, seconds.",
        json_schema_extra={"group": "upstream"},
    )
    upstream_circuit_threshold: int = Field(
        default=5,
        ge=1,
        description="Failed upstream calls in a row (after their retries) that open the "
        "circuit, one per replica; while it is open, upstream reads fail at once with "
        "`UPSTREAM_UNAVAILABLE`. Faults about a request's own input (`DeviceNotFound`, "
        "`INPUT_INVALID.*`) do not count.",
        json_schema_extra={"group": "upstream"},
    )
    upstream_circuit_cooldown_s: float = Field(
        default=30.0,
        gt=0,
        description="How long an open circuit refuses calls before one probe goes through "
        "and closes or reopens it, seconds.",
        json_schema_extra={"group": "upstream"},
    )
    upstream_calls_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Upstream calls started per second at most, for the whole process, or "
        "for every replica together on a shared `UPSTREAM_BUDGET_URL` (retries included; "
        "bursts up to one second's worth), for a UWS account with a contracted call rate. "
        "Unset: no cap beyond `UPSTREAM_CONCURRENCY`, so that the default never makes the "
        "service slower than its own concurrency allows.",
        json_schema_extra={"group": "service"},
    )
    upstream_budget_url: str = Field(
        default="memory://",
        description="Where `UPSTREAM_CONCURRENCY` and `UPSTREAM_CALLS_PER_SECOND` are "
        "counted: `memory://` (each process its own) or `redis://host:port/db`, one budget "
        "for the UWS account shared by every replica on it. Either way interactive "
        "requests take the next free slot before report jobs do.",
        json_schema_extra={"group": "service"},
    )
    cache_stale_for_s: float = Field(
        default=3600.0,
        ge=0,
        description="How long a cached answer is kept past its freshness, seconds, to be "
        "served while the upstream is down, marked stale (`extensions.cost.staleReads` "
        "and a `STALE_DATA` warning; CSV exports never get stale data); 0 turns stale "
        "serving off.",
        json_schema_extra={"group": "upstream"},
    )
    auth_disabled: bool = Field(
        default=False,
        description="Switches authentication off: every caller may do everything. Only on "
        "a loopback `HOST` (startup fails otherwise), and only for requests made on this "
        "host (loopback `Host`, no proxy headers, no other origin); others get 401.",
        json_schema_extra={"group": "authentication"},
    )
    auth_dev_token: bool = Field(
        default=False,
        description="On a loopback `HOST`: make a development token (every scope, every "
        "organization) at start, print it and prefill GraphiQL with it; it lives in this "
        "process's memory only and works only for requests made on this host (loopback "
        "`Host`, no proxy headers, no other origin). `provgraph serve --dev` (`make "
        "serve`) sets it.",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_issuer: str | None = Field(
        default=None,
        description="Accept bearer JWTs from this identity provider (their `iss`); they "
        "must carry `iss`, `aud`, `sub` and `exp`. Unset: only API tokens are accepted.",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_audience: str | None = Field(
        default=None,
        description="The `aud` JWTs must carry; required with `AUTH_JWT_ISSUER`.",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_jwks_url: str | None = Field(
        default=None,
        description="The identity provider's JWKS URL; its keys are fetched in the "
        "background, one fetch at a time, and cached.",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_public_key: str | None = Field(
        default=None,
        description="A PEM public key, instead of `AUTH_JWT_JWKS_URL`.",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_algorithms: str = Field(
        default="RS256,ES256",
        description="Comma-separated signature algorithms accepted; asymmetric ones only.",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_organizations_claim: str = Field(
        default="organizations",
        description="The claim listing the caller's organization uids (a list or a "
        "space-separated string; `*` for all).",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_scopes_claim: str = Field(
        default="scope",
        description="The claim holding the caller's scopes (a space-separated string, as "
        "OAuth's `scope`, or a list); scopes this service does not know are ignored.",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_account_id_claim: str | None = Field(
        default=None,
        description="A claim holding the caller's numeric account id (the "
        "`originator.accountId` of the events its mutations emit).",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_leeway_s: float = Field(
        default=30.0,
        ge=0,
        le=300,
        description="Clock skew allowed on a JWT's `exp` and `nbf`, seconds.",
        json_schema_extra={"group": "authentication"},
    )
    max_query_depth: int = Field(
        default=12,
        ge=1,
        description="Deepest nesting of fields a GraphQL operation may have "
        "(`QUERY_TOO_COMPLEX`, `extensions.limit: depth`).",
        json_schema_extra={"group": "limits"},
    )
    max_query_tokens: int = Field(
        default=2000,
        ge=1,
        description="Most lexical tokens (names, punctuation, values, comments) a GraphQL "
        "document may have (`QUERY_TOO_COMPLEX`, `extensions.limit: tokens`); pass long "
        "lists, such as a report's devices, as variables.",
        json_schema_extra={"group": "limits"},
    )
    max_query_aliases: int = Field(
        default=20,
        ge=0,
        description="Most aliased fields a GraphQL document may have (`QUERY_TOO_COMPLEX`, "
        "`extensions.limit: aliases`).",
        json_schema_extra={"group": "limits"},
    )
    max_query_cost: int = Field(
        default=50_000,
        ge=1,
        description="Most a GraphQL operation may cost before it runs (`QUERY_TOO_COMPLEX`, "
        "`extensions.limit: cost`): each connection counts its page size (`first` or "
        "`last`, else 50) times the page sizes of the connections it is nested in; a "
        "history's `totalCount` and each filtered history page, reads that may take the "
        "whole range, count 5,000 times them; a report counts its devices.",
        json_schema_extra={"group": "limits"},
    )
    report_max_devices: int = Field(
        default=5000,
        ge=1,
        description="Most devices a report (in a request or a job) may name, and most "
        "devices of the account a whole-account report computed in a request may read "
        "(more: `REPORT_TOO_LARGE`, start a job, which has no such cap).",
        json_schema_extra={"group": "limits"},
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body accepted (HTTP 413 `PAYLOAD_TOO_LARGE` above) "
        "and largest WebSocket message (a larger one closes the socket).",
        json_schema_extra={"group": "limits"},
    )
    request_deadline_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest an HTTP request may take until its response starts, seconds "
        "(then 504 `DEADLINE_EXCEEDED`); a CSV export that has started streaming may go on.",
        json_schema_extra={"group": "limits"},
    )
    rate_limit: str = Field(
        default="600/minute",
        description="Requests per credential (or per client address without one) to "
        "`/graphql` and `/exports`, as `N/second|minute|hour|day` (a moving window; over "
        "it, 429 `RATE_LIMITED` with `Retry-After`); empty turns the limit off.",
        json_schema_extra={"group": "limits"},
    )
    rate_limit_storage_url: str = Field(
        default="memory://",
        description="Where rate-limit counts live: `memory://` (this process) or "
        "`redis://host:port/db`, shared by every replica.",
        json_schema_extra={"group": "limits"},
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins (`https://app.example.com`, comma-separated; `*` for "
        "any) allowed to call the API cross-origin, over CORS and WebSocket.",
        json_schema_extra={"group": "limits"},
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="`json`: one JSON object a line, each with its request id; `text`: "
        "for reading.",
        json_schema_extra={"group": "service"},
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, `GET /metrics` needs `Authorization: Bearer <this>`; unset, "
        "it is open, like `/healthz`.",
        json_schema_extra={"group": "limits"},
    )

    auth_jwt_jwks_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Upper bound on one fetch of the JWKS, seconds.",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_jwks_refetch_floor_s: float = Field(
        default=60.0,
        ge=0,
        description="Least time between two JWKS fetches, seconds: within it, a token "
        "naming an unknown key id is refused without asking the identity provider again.",
        json_schema_extra={"group": "authentication"},
    )
    auth_jwt_jwks_max_age_s: float = Field(
        default=300.0,
        gt=0,
        description="Keys older than this, seconds, are refreshed in the background (key "
        "rotation); until the refresh lands, the known keys stay in use.",
        json_schema_extra={"group": "authentication"},
    )

    ws_recheck_s: float = Field(
        default=30.0,
        gt=0,
        description="How often an open WebSocket's or HTTP subscription stream's API token is "
        "checked again, seconds; a revoked or expired one closes the socket (graphql-transport-ws: "
        "4403; graphql-ws: `connection_error`, then a close) or ends the stream with an "
        "`UNAUTHENTICATED` error. A JWT's socket or stream ends when its `exp` (plus "
        "`AUTH_JWT_LEEWAY_S`) passes, and every new operation on a socket checks too.",
        json_schema_extra={"group": "limits"},
    )
    auth_failure_limit: str = Field(
        default="30/minute",
        description="Refused credentials per client address, over HTTP and WebSocket, as "
        "`N/second|minute|hour|day`. Beyond it that address gets 429 `RATE_LIMITED` "
        "without its credentials being checked at all, until the window moves on; empty "
        "turns the limit off. Kept in `RATE_LIMIT_STORAGE_URL`. Only verdicts on a "
        "credential count (invalid, unknown, revoked, expired), not an identity provider "
        "whose keys cannot be fetched. An address's credentials are checked 4 at a time, "
        "so a burst passes the limit by at most 3 on each replica.",
        json_schema_extra={"group": "limits"},
    )
    max_subscriptions_per_credential: int = Field(
        default=100,
        ge=1,
        description="Operations in flight over WebSockets and HTTP streams (in practice: "
        "subscriptions) one credential may have on this replica, across all its sockets and "
        "streams; one more gets an error coded `TOO_MANY_SUBSCRIPTIONS` (over HTTP, a 429). "
        "One socket holds at most 100.",
        json_schema_extra={"group": "limits"},
    )
    keep_alive_s: float = Field(
        default=15.0,
        gt=0,
        description="How often a quiet subscription connection gets a keep-alive, seconds: a "
        "WebSocket `ping` (graphql-transport-ws) or `ka` (graphql-ws), an SSE comment, an "
        "empty multipart part. Below the idle timeout of every proxy on the way.",
        json_schema_extra={"group": "service"},
    )
    max_report_jobs_per_credential: int = Field(
        default=4,
        ge=1,
        description="Report jobs one credential may have queued or running at once; one "
        "more is refused with the userError `TOO_MANY_JOBS`.",
        json_schema_extra={"group": "limits"},
    )
    report_queue_url: str | None = Field(
        default=None,
        description="`redis://host:port/db`: report jobs run on the SAQ job queue there, "
        "in chunks that any replica's worker takes; a replica that dies mid-way loses only "
        "its chunk in flight, which another takes over after `REPORT_CHUNK_LEASE_S`. "
        "Unset: each job runs in the process that started it.",
        json_schema_extra={"group": "service"},
    )
    report_worker: bool = Field(
        default=True,
        description="Run a report worker inside the service process (with "
        "`REPORT_QUEUE_URL`). Off: this replica only enqueues and answers; run workers "
        "with `provgraph worker`.",
        json_schema_extra={"group": "service"},
    )
    report_worker_chunks: int = Field(
        default=2,
        ge=1,
        description="Report job chunks one worker runs at once (with `REPORT_QUEUE_URL`); "
        "without, a job's chunks starting devices at once in the process that started it "
        "(a chunk reading its last devices lets the next start). They share the process's "
        "`UPSTREAM_CONCURRENCY`.",
        json_schema_extra={"group": "service"},
    )
    report_chunk_devices: int = Field(
        default=100,
        ge=1,
        description="Devices in one chunk of a report job: the most work a replica that "
        "dies mid-job loses.",
        json_schema_extra={"group": "service"},
    )
    report_chunk_lease_s: int = Field(
        default=30,
        ge=1,
        description="How long a report job chunk whose worker stopped touching it stays "
        "with that worker before another takes it over, seconds (with `REPORT_QUEUE_URL`).",
        json_schema_extra={"group": "service"},
    )
    report_chunk_attempts: int = Field(
        default=3,
        ge=1,
        description="Attempts at a report job chunk, counting take-overs, before its job fails.",
        json_schema_extra={"group": "service"},
    )

    simulator_control: bool = Field(
        default=False,
        description="Serve the embedded simulator's control API "
        "(`/simulator/api/v2/_control`: latency, injected failures, call counts) to any "
        "caller that reaches the port. Off: only the standalone simulator (`provgraph "
        "simulate`) serves it.",
        json_schema_extra={"group": "service"},
    )

    max_upstream_calls_per_request: int = Field(
        default=1000,
        ge=1,
        description="Most upstream calls one GraphQL operation may make, retries included "
        "(cached answers are free); the call that would pass it is not made and the field "
        "fails with `UPSTREAM_BUDGET_EXCEEDED` (`extensions.budget`). Report jobs and CSV "
        "exports are not bound by it.",
        json_schema_extra={"group": "limits"},
    )

    introspection: bool = Field(
        default=True,
        description="Whether GraphQL operations may ask for `__schema` and `__type` "
        "(GraphiQL and code generators need them); false refuses them with "
        "`GRAPHQL_VALIDATION_FAILED`. Set it false in production unless clients introspect "
        "there.",
        json_schema_extra={"group": "limits"},
    )
    persisted_queries: Literal["apq", "only", "off"] = Field(
        default="apq",
        description="Documents named by SHA-256 hash instead of sent (Apollo's "
        "`extensions.persistedQuery`, or a `documentId`): `apq` (a name finds a document of "
        "`PERSISTED_DOCUMENTS`, or one a client registered by sending it with its hash, kept "
        "where `CACHE_URL` says, so replicas share them; any document runs), `only` (trusted "
        "documents: only those of `PERSISTED_DOCUMENTS` run, named or sent in full; others "
        "are refused with `PERSISTED_QUERY_NOT_ALLOWED`) or `off` (a name alone is refused "
        "with `PERSISTED_QUERY_NOT_SUPPORTED`).",
        json_schema_extra={"group": "limits"},
    )
    persisted_documents: Path | None = Field(
        default=None,
        description="The manifest of trusted documents, which names find (and with "
        "`PERSISTED_QUERIES=only` the only documents that run): a JSON "
        "object of documents by their SHA-256 hashes, as GraphQL Code Generator's client "
        "preset writes it (`persistedDocuments: true`). Unset: the frontend's documents, "
        "`server/persisted-documents.json` (`provgraph documents` writes it from "
        "`tests/queries`). One that cannot be read stops the start.",
        json_schema_extra={"group": "limits"},
    )

    otel_traces_exporter: Literal["none", "otlp", "console"] = Field(
        default="none",
        description="Where OpenTelemetry traces go: `none` (no tracing, the default here, "
        "where OpenTelemetry's own default is `otlp`), `otlp` (OTLP over HTTP, to "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, "
        "`http://localhost:4318` by default; these, `OTEL_EXPORTER_OTLP_HEADERS`, "
        "`OTEL_TRACES_SAMPLER` and OpenTelemetry's other variables are read from the "
        "environment by its SDK, not from `.env`) or `console` (spans printed on stdout). "
        "A span per GraphQL operation, the fields that read the upstream, each cache "
        "lookup and each upstream call.",
        json_schema_extra={"group": "service"},
    )
    otel_service_name: str = Field(
        default="provisioning-graph",
        description="`service.name` of the traces' resource.",
        json_schema_extra={"group": "service"},
    )

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("rate_limit_storage_url", "upstream_budget_url")
    @classmethod
    def _rate_limit_store(cls, value: str) -> str:
        if value != "memory://" and not value.startswith(("redis://", "rediss://")):
            raise ValueError("must be memory:// or redis://host:port/db")
        return value

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _rate_limit_notation(cls, value: str) -> str:
        if value.strip():
            parse(value)  # a ValueError names what is wrong with it
        return value.strip()

    host: str = Field(
        default="127.0.0.1",
        description="Address to bind; `provgraph serve --host` overrides it.",
        json_schema_extra={"group": "service"},
    )
    port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        description="Port to bind, 0 for a free one; `provgraph serve --port` overrides it.",
        json_schema_extra={"group": "service"},
    )
    log_level: str = Field(
        default="info",
        description="Python log level name, e.g. `debug`, `info`, `warning`.",
        json_schema_extra={"group": "service"},
    )

    def limits(self) -> Limits:
        """What these settings bound in the GraphQL layer."""
        return Limits(
            max_query_depth=self.max_query_depth,
            max_query_tokens=self.max_query_tokens,
            max_query_aliases=self.max_query_aliases,
            max_query_cost=self.max_query_cost,
            max_upstream_calls_per_request=self.max_upstream_calls_per_request,
            report_max_devices=self.report_max_devices,
            upstream_concurrency=self.upstream_concurrency,
            cache_ttl_recent_s=self.cache_ttl_recent_s,
            introspection=self.introspection,
        )

    @property
    def uses_simulator(self) -> bool:
        return not self.uws_base_url

    @property
    def upstream_url(self) -> str:
        if self.uws_base_url:
            return self.uws_base_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}{SIMULATOR_MOUNT}"

    def upstream_credentials(self) -> dict[str, str | None]:
        """Keyword arguments for the UWS client; the simulator's demo login by default."""
        if self.uws_token:
            return {"token": self.uws_token.get_secret_value()}
        if self.uws_username and self.uws_password:
            return {
                "username": self.uws_username,
                "password": self.uws_password.get_secret_value(),
            }
        if self.uses_simulator:
            return {"username": SIMULATOR_USERNAME, "password": SIMULATOR_USERNAME}
        raise ValueError(
            "UWS_BASE_URL is set, so UWS_TOKEN or UWS_USERNAME and UWS_PASSWORD must be too"
        )

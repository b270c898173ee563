"""The ``provgraph`` command: ``serve`` the API, ``simulate`` the upstream alone,
``migrate`` the database, run a report ``worker``, print the ``schema``, the ``settings``
or the trusted ``documents``, manage API ``tokens``."""

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from importlib.metadata import version
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from graph.schema import schema
from resolvers.database import create_engine, migrate
from server.app import create_app
from server.logs import configure_logging
from server.persisted import manifest_json, manifest_of
from server.ratelimit import RateLimits
from server.services import open_services, streams_of
from server.settings import Settings
from server.settings_doc import BEGIN, END, settings_markdown, with_settings_tables
from server.startup import StartupProblem, check_database, listening_socket, read_settings
from server.token_commands import add_commands as add_token_commands
from soap.simulator import MOUNT as SIMULATOR_MOUNT
from soap.simulator.fleet import Fleet
from soap.simulator.server import Simulator

STARTUP_FAILURE = 3
"""uvicorn's exit status when the application failed to start."""


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _run(server: uvicorn.Server, sock: socket.socket) -> None:
    # On Ctrl-C uvicorn shuts down gracefully, then raises the signal again.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


class _Server(uvicorn.Server):
    """uvicorn's server, which ends the app's HTTP streams when told to exit: it waits for
    every response to end before it shuts down, and a subscription's never would."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if (streams := streams_of(self.app)) is not None:
            streams.drain()


def _serve(args: argparse.Namespace) -> None:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.dev:
        overrides["auth_dev_token"] = True
    configured = read_settings().model_copy(update=overrides)
    # Every check before the first line is written: a service that cannot start says so
    # in one line, and never announces a token or a start first.
    sock = listening_socket(configured.host, configured.port)
    # PORT=0 binds a free port, which the embedded simulator's address must name.
    configured = configured.model_copy(update={"port": sock.getsockname()[1]})
    asyncio.run(check_database(configured.database_url, schema=True))
    configure_logging(configured.log_level, configured.log_format)
    # httpx logs every upstream request at INFO: one line per SOAP call drowns the rest.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))
    try:
        app = create_app(configured)
    except ValueError as error:
        raise StartupProblem(str(error)) from None
    log = logging.getLogger("provgraph")
    upstream = "the embedded simulator" if configured.uses_simulator else configured.upstream_url
    log.info("upstream: %s", upstream)
    server = _Server(
        uvicorn.Config(
            app,
            log_level=configured.log_level,
            log_config=None,  # configure_logging's, for uvicorn's own lines too
            access_log=False,  # RequestContext writes one line per request, with its id
            ws_max_size=configured.max_body_bytes,  # a WebSocket message is bounded too
        ),
        app,
    )
    log.info("listening on %s", _address(sock))
    _run(server, sock)
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # uvicorn has logged why


def _simulate(args: argparse.Namespace) -> None:
    sock = listening_socket(args.host, args.port)
    simulator = Simulator(Fleet(seed=args.seed), control=True)
    simulator.state.knobs.latency_s = args.latency_ms / 1000
    app = Starlette(routes=[Mount(SIMULATOR_MOUNT, app=simulator.app)])
    print(f"UWS_BASE_URL={_address(sock)}{SIMULATOR_MOUNT}", flush=True)
    _run(uvicorn.Server(uvicorn.Config(app, log_level="warning")), sock)


def _migrate(args: argparse.Namespace) -> None:
    url = read_settings().database_url

    async def run() -> None:
        await check_database(url, schema=False)
        engine = create_engine(url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("database is at the newest schema")


def _worker(args: argparse.Namespace) -> None:
    settings = read_settings()
    if settings.report_queue_url is None:
        raise StartupProblem("a worker takes report jobs from REPORT_QUEUE_URL: set it")
    settings = settings.model_copy(update={"report_worker": True})
    rate_limits = RateLimits(
        rate_limit=settings.rate_limit,
        auth_failure_limit=settings.auth_failure_limit,
        storage_url=settings.rate_limit_storage_url,
        max_socket_operations=settings.max_subscriptions_per_credential,
    )

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        # The services a chunk needs (the upstream, its cache and budget, the database),
        # as a replica has them; no HTTP.
        async with open_services(settings, rate_limits, None):
            print("working on report jobs from REPORT_QUEUE_URL", flush=True)
            await stopping.wait()

    asyncio.run(run())


def _schema(args: argparse.Namespace) -> None:
    print(schema.as_str())


def _documents(args: argparse.Namespace) -> None:
    try:
        print(manifest_json(manifest_of(args.directory)), end="")
    except (OSError, ValueError) as error:
        raise SystemExit(f"provgraph documents: {error}") from None


def _settings(args: argparse.Namespace) -> None:
    if args.readme is None:
        print(settings_markdown(), end="")
        return
    try:
        text = args.readme.read_text(encoding="utf-8")
        updated = with_settings_tables(text)
    except (OSError, ValueError) as error:
        raise SystemExit(f"provgraph settings: {args.readme}: {error}") from None
    if updated != text:
        args.readme.write_text(updated, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="provgraph", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('provisioning-graph')}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the GraphQL API (HOST/PORT from settings)")
    fields = Settings.model_fields
    serve.add_argument(
        "--host",
        help=f"address to bind, overriding the HOST setting (default {fields['host'].default}); "
        "0.0.0.0 for every interface",
    )
    serve.add_argument(
        "--port",
        type=int,
        help=f"port to bind, overriding the PORT setting (default {fields['port'].default}); "
        "0 for a free one",
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="on a loopback bind, print a development token and prefill GraphiQL with it",
    )
    serve.set_defaults(run=_serve)
    simulate = commands.add_parser("simulate", help="serve only the UWS simulator")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8001)
    simulate.add_argument("--seed", type=int, default=2017, help="fleet seed")
    simulate.add_argument("--latency-ms", type=float, default=0.0, help="added to every call")
    simulate.set_defaults(run=_simulate)
    migrate = commands.add_parser("migrate", help="bring DATABASE_URL to the newest schema")
    migrate.set_defaults(run=_migrate)
    worker = commands.add_parser(
        "worker", help="run report job chunks from REPORT_QUEUE_URL, without serving the API"
    )
    worker.set_defaults(run=_worker)
    export = commands.add_parser("schema", help="print the GraphQL schema (SDL)")
    export.set_defaults(run=_schema)
    settings = commands.add_parser(
        "settings", help="print every setting's variable, default and meaning (markdown)"
    )
    settings.add_argument(
        "--readme",
        type=Path,
        metavar="FILE",
        help=f"instead, rewrite the tables between the {BEGIN} and {END} lines of FILE",
    )
    settings.set_defaults(run=_settings)
    documents = commands.add_parser(
        "documents",
        help="print the manifest of trusted documents (PERSISTED_QUERIES=only): each "
        "document's SHA-256 hash to its text, as GraphQL Code Generator writes it",
    )
    documents.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=Path("tests/queries"),
        help="where the documents are, one per .graphql file (default tests/queries)",
    )
    documents.set_defaults(run=_documents)
    add_token_commands(commands.add_parser("tokens", help="create, list and revoke API tokens"))
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except StartupProblem as problem:
        raise SystemExit(f"provgraph {args.command}: {problem}") from None

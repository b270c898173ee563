"""The ``provgraph`` command: ``serve`` the API, ``simulate`` the upstream alone,
``migrate`` the database, print the ``schema``, manage API ``tokens``."""

import argparse
import logging

import uvicorn

from graph.logs import configure_logging
from graph.settings import SIMULATOR_MOUNT, Settings
from graph.token_commands import add_commands as add_token_commands


def _serve(args: argparse.Namespace) -> None:
    from graph.app import create_app

    settings = Settings()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.dev:
        overrides["auth_dev_token"] = True
    settings = settings.model_copy(update=overrides)
    configure_logging(settings.log_level, settings.log_format)
    # httpx logs every upstream request at INFO: one line per SOAP call drowns the rest.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))
    upstream = "the embedded simulator" if settings.uses_simulator else settings.upstream_url
    logging.getLogger("provgraph").info("upstream: %s", upstream)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # configure_logging's, for uvicorn's own lines too
        access_log=False,  # graph.middleware writes one line per request, with its id
        ws_max_size=settings.max_body_bytes,  # a WebSocket message is bounded like a body
    )


def _simulate(args: argparse.Namespace) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from soap.simulator.fleet import Fleet
    from soap.simulator.server import Simulator

    simulator = Simulator(Fleet(seed=args.seed))
    simulator.state.knobs.latency_s = args.latency_ms / 1000
    app = Starlette(routes=[Mount(SIMULATOR_MOUNT, app=simulator.app)])
    print(f"UWS_BASE_URL=http://{args.host}:{args.port}{SIMULATOR_MOUNT}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def _migrate(args: argparse.Namespace) -> None:
    import asyncio

    from resolvers.database import create_engine, migrate

    async def run() -> None:
        engine = create_engine(Settings().database_url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("database is at the newest schema")


def _schema(args: argparse.Namespace) -> None:
    from graph.schema import schema

    print(schema.as_str())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="provgraph", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the GraphQL API (HOST/PORT from settings)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
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
    export = commands.add_parser("schema", help="print the GraphQL schema (SDL)")
    export.set_defaults(run=_schema)
    add_token_commands(commands)
    args = parser.parse_args(argv)
    args.run(args)

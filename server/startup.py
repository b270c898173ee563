"""What ``provgraph`` checks before it starts serving: that the settings read, the port is
free and the database answers at this version's schema. Each problem is one line in
our words with what to do about it, never a traceback."""

import asyncio
import errno
import socket

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import ValidationError
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InvalidRequestError

from resolvers.database import alembic_config, create_engine
from server.logs import scrub
from server.settings import Settings

BACKLOG = 2048
"""Connections the kernel queues until the server accepts them (uvicorn's default)."""
CONNECT_TIMEOUT_S = 10.0
"""How long the database may take to answer before it counts as unreachable."""
_URL_HINT = "use postgresql+asyncpg://user:password@host:5432/name or sqlite+aiosqlite:///file.db"


class StartupProblem(Exception):
    """Something that keeps the service from starting; the message says what to do."""


def read_settings() -> Settings:
    """The settings from the environment (and .env); a bad one is a StartupProblem naming
    each setting by its environment variable."""
    try:
        return Settings()
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in detail['loc']).upper()}: {detail['msg']}"
            for detail in error.errors()
        ]
        raise StartupProblem(f"bad setting {'; '.join(problems)}") from None


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket the server will accept on, bound now: before the service announces
    anything, and with no moment in which another process could take the port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OverflowError:
        sock.close()
        raise StartupProblem(f"port {port} is not a port: use 1024 to 65535") from None
    except OSError as error:
        sock.close()
        raise StartupProblem(_bind_problem(error, host, port)) from None
    return sock


def _bind_problem(error: OSError, host: str, port: int) -> str:
    where = f"{host}:{port}"
    if isinstance(error, socket.gaierror):
        return f"HOST {host!r} is not an address of this machine: set HOST=127.0.0.1"
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} is in use on {host}: set PORT=<another port> (or --port) or "
            "stop the other process"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine (HOST)"
    if error.errno == errno.EACCES:
        return f"not allowed to listen on {where}: set PORT to 1024 or above"
    return f"cannot listen on {where}: {error.strerror or error}"


async def check_database(url: str, *, schema: bool) -> None:
    """Raises StartupProblem unless the database at ``url`` answers, and with ``schema``
    is at this version's newest schema (SQLite excepted: the service migrates it)."""
    try:
        engine = create_engine(url)
    except (ArgumentError, InvalidRequestError, ImportError):
        scheme, separator, _ = url.partition("://")
        what = f"{scheme}:// is not a database driver" if separator else "is not a database URL"
        raise StartupProblem(f"DATABASE_URL {what} this service can use: {_URL_HINT}") from None
    shown = make_url(url).render_as_string(hide_password=True)
    sqlite = engine.dialect.name == "sqlite"
    current: str | None = None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S), engine.connect() as connection:
            if schema and not sqlite:
                current = await connection.run_sync(_revision)
    except TimeoutError:
        raise StartupProblem(
            f"the database at {shown} did not answer within {CONNECT_TIMEOUT_S:g} s: check "
            "DATABASE_URL and that the database is running"
        ) from None
    except Exception as error:  # whatever the driver raises, said in one line
        cause = error.orig if isinstance(error, DBAPIError) else error
        reason = scrub(getattr(cause, "strerror", None) or str(cause)) or type(cause).__name__
        check = "that its directory exists" if sqlite else "that the database is running"
        raise StartupProblem(
            f"cannot connect to the database at {shown} ({reason}): check DATABASE_URL and {check}"
        ) from None
    finally:
        await engine.dispose()
    if schema and not sqlite:
        _check_revision(shown, current)


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _check_revision(shown: str, current: str | None) -> None:
    script = ScriptDirectory.from_config(alembic_config(shown))  # reads no database
    newest = script.get_current_head()
    if current == newest:
        return
    if current is None:
        raise StartupProblem(
            f"the database at {shown} has none of this service's tables yet: run provgraph migrate"
        )
    if current in {revision.revision for revision in script.walk_revisions()}:
        raise StartupProblem(
            f"the database at {shown} is at schema {current}, this version needs {newest}: "
            "run provgraph migrate"
        )
    raise StartupProblem(
        f"the database at {shown} is at schema {current}, which this version does not know "
        "(a newer version migrated it): run that version"
    )
